"""Task table: which environment a dataset belongs to and how its returns are normalised."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

# D4RL's reference returns (random, expert) for the locomotion tasks, from d4rl/infos.py.
D4RL_REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}

# Gymnasium MuJoCo v5 ids for the env part of `zoo/<env>/...` and Minari's `mujoco/<env>/...` ids.
LOCOMOTION_ENV_IDS: dict[str, str] = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
}

_ID_PATTERN = re.compile(r"^(?P<namespace>[^/]+)/(?P<env>[^/]+)/(?P<name>[^/]+?)(-v(?P<version>\d+))?$")


@dataclass(frozen=True)
class Task:
    """The environment of a dataset and the reference returns that define its normalised score."""

    env_id: str
    ref_min_score: float | None = None
    ref_max_score: float | None = None

    @property
    def has_reference(self) -> bool:
        return self.ref_min_score is not None and self.ref_max_score is not None

    def normalized_score(self, returns: float | np.ndarray) -> float | np.ndarray:
        """D4RL-style score: 0 is the random reference, 100 the expert reference."""
        if not self.has_reference:
            raise ValueError(
                f"No reference returns for {self.env_id}: pass ref_min_score/ref_max_score to Task "
                "or store them in the dataset's metadata."
            )
        return 100.0 * (np.asarray(returns) - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)


def env_key(dataset_id: str) -> str | None:
    """`zoo/hopper/medium-v0` -> `hopper`; None when the id has no env part."""
    match = _ID_PATTERN.match(dataset_id)
    return match.group("env") if match else None


def task_for(dataset_id: str, metadata: Mapping[str, Any] | None = None) -> Task:
    """Resolve a dataset id (and its Minari metadata, when at hand) into a Task.

    Reference returns come from the dataset's metadata when present (Minari's own datasets carry
    theirs), otherwise from the D4RL constants for hopper/halfcheetah/walker2d.
    """
    metadata = metadata or {}
    key = env_key(dataset_id)
    env_id = None
    spec = metadata.get("env_spec")
    if spec:
        env_id = _env_id_from_spec(spec)
    if env_id is None and key in LOCOMOTION_ENV_IDS:
        env_id = LOCOMOTION_ENV_IDS[key]
    if env_id is None:
        raise ValueError(
            f"Cannot tell which environment dataset '{dataset_id}' belongs to: its metadata has no env_spec "
            f"and '{key}' is not one of {sorted(LOCOMOTION_ENV_IDS)}."
        )
    ref_min, ref_max = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    if (ref_min is None or ref_max is None) and key in D4RL_REFERENCE_RETURNS:
        ref_min, ref_max = D4RL_REFERENCE_RETURNS[key]
    return Task(env_id, None if ref_min is None else float(ref_min), None if ref_max is None else float(ref_max))


def _env_id_from_spec(spec: Any) -> str | None:
    import json

    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError:
            return None
    if isinstance(spec, Mapping):
        return spec.get("id")
    return getattr(spec, "id", None)
