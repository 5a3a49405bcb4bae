"""Task table: which environment a dataset belongs to and how its returns are normalised."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
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
_EXORL_PATTERN = re.compile(r"^zoo/exorl/(?P<domain>[a-z_]+)-(?P<task>[a-z_]+)/(?P<explorer>[a-z_]+)-v\d+$")

# ---------------------------------------------------------------------------------------------------------
# The dataset ids the zoo knows by name: its own, the ExoRL ones it imports, and the official Minari ones.
# The hyperparameter files are keyed by these (zoo/config.py); a section key outside them is a typo.
# ---------------------------------------------------------------------------------------------------------

# Domains: the level above the env in the hyperparameter files. Each method's file names the domains its
# paper (or its official code) covers; a run on a domain the file does not name is refused.
DOMAINS = ("mujoco", "antmaze", "adroit", "kitchen", "exorl")

ZOO_LOCOMOTION_QUALITIES = ("random", "medium", "medium-replay", "expert", "medium-expert")
ZOO_EXTRA_DATASETS = ("zoo/hopper/quickstart-v0",)  # `zoo quickstart`'s embedded dataset

# Minari's regenerated Gymnasium-MuJoCo (v5) datasets: `mujoco/<env>/<level>-v0` (anchors.md §6.1).
MUJOCO_ENVS = (
    "hopper", "halfcheetah", "walker2d", "ant", "humanoid", "humanoidstandup", "swimmer", "reacher", "pusher",
    "invertedpendulum", "inverteddoublependulum",
)
MINARI_MUJOCO_LEVELS = ("simple", "medium", "expert")
ANTMAZE_DATASETS = ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")
ADROIT_ENVS = ("pen", "door", "hammer", "relocate")
ADROIT_DATASETS = ("human", "cloned", "expert")
KITCHEN_DATASETS = ("complete", "partial", "mixed")

# ExoRL (denisyarats/exorl README): domains with their tasks, and the URLB explorers of the release (the zoo
# collects rnd, icm, smm and random itself and imports the others from the official download).
EXORL_TASKS: dict[str, tuple[str, ...]] = {
    "walker": ("stand", "walk", "run", "flip"),
    "quadruped": ("walk", "run", "stand", "jump"),
    "cheetah": ("run", "run_backward"),
    "cartpole": ("balance", "balance_sparse", "swingup", "swingup_sparse"),
    "jaco": ("reach_top_left", "reach_top_right", "reach_bottom_left", "reach_bottom_right"),
    "point_mass_maze": ("reach_top_left", "reach_top_right", "reach_bottom_left", "reach_bottom_right"),
}
EXORL_EXPLORERS = ("aps", "diayn", "disagreement", "icm", "icm_apt", "proto", "random", "rnd", "smm")

# D4RL's reference returns (d4rl/infos.py REF_MIN_SCORE / REF_MAX_SCORE, identical for every dataset of an
# env): AntMaze scores are success rates (0 and 1), Adroit's the random and expert returns, Kitchen's the
# number of the 4 sub-tasks completed. Minari's ports carry their own references in their metadata, which
# win; these serve when the metadata has none.
D4RL_OFFICIAL_REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "antmaze": (0.0, 1.0),
    "pen": (96.262799, 3076.8331017826877),
    "door": (-56.512833, 2880.5693087298737),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
    "kitchen": (0.0, 4.0),
}
# Gymnasium-Robotics envs of Minari's D4RL ports. The dataset's stored env_spec wins (it carries the maze
# map, reset rules and the kitchen's tasks, which an id alone does not), so these are only the fallback;
# AntMaze has none: its env is not one id but an id plus the map in the dataset's env_spec.
D4RL_OFFICIAL_ENV_IDS: dict[str, str] = {
    "pen": "AdroitHandPen-v1",
    "door": "AdroitHandDoor-v1",
    "hammer": "AdroitHandHammer-v1",
    "relocate": "AdroitHandRelocate-v1",
    "kitchen": "FrankaKitchen-v1",
}


def zoo_dataset_ids() -> tuple[str, ...]:
    """The 15 locomotion datasets `zoo datasets make` writes, and the quickstart one."""
    return tuple(
        f"zoo/{env}/{quality}-v0" for env in LOCOMOTION_ENV_IDS for quality in ZOO_LOCOMOTION_QUALITIES
    ) + ZOO_EXTRA_DATASETS


def exorl_dataset_ids() -> tuple[str, ...]:
    """`zoo/exorl/<domain>-<task>/<explorer>-v0` for every ExoRL domain, task and explorer."""
    return tuple(
        f"zoo/exorl/{domain}-{task}/{explorer}-v0"
        for domain, tasks in EXORL_TASKS.items()
        for task in tasks
        for explorer in EXORL_EXPLORERS
    )


def official_dataset_ids() -> tuple[str, ...]:
    """The official Minari ids the zoo has settings for: mujoco/*, D4RL AntMaze, Adroit and Kitchen."""
    return (
        tuple(f"mujoco/{env}/{level}-v0" for env in MUJOCO_ENVS for level in MINARI_MUJOCO_LEVELS)
        + tuple(f"D4RL/antmaze/{name}-v1" for name in ANTMAZE_DATASETS)
        + tuple(f"D4RL/{env}/{name}-v2" for env in ADROIT_ENVS for name in ADROIT_DATASETS)
        + tuple(f"D4RL/kitchen/{name}-v2" for name in KITCHEN_DATASETS)
    )


@lru_cache(maxsize=1)
def known_section_keys() -> frozenset[str]:
    """Every name a hyperparameter section may carry: `default`, the domains, the envs (and ExoRL domains),
    the ExoRL task families (`walker-run`) and the dataset ids above."""
    envs = set(MUJOCO_ENVS) | {"antmaze", "kitchen"} | set(ADROIT_ENVS) | set(EXORL_TASKS)
    task_families = {f"{domain}-{task}" for domain, tasks in EXORL_TASKS.items() for task in tasks}
    ids = set(zoo_dataset_ids()) | set(exorl_dataset_ids()) | set(official_dataset_ids())
    return frozenset({"default", *DOMAINS} | envs | task_families | ids)


def domain_of(dataset_id: str) -> str | None:
    """`mujoco` (the zoo's locomotion data and Minari's mujoco/*), `antmaze`, `adroit`, `kitchen`, `exorl`,
    or None for an id of no known domain."""
    if _EXORL_PATTERN.match(dataset_id):
        return "exorl"
    env = env_key(dataset_id)
    if env in MUJOCO_ENVS:
        return "mujoco"
    if env in ("antmaze", "kitchen"):
        return env
    if env in ADROIT_ENVS:
        return "adroit"
    return None


def section_keys(dataset_id: str) -> tuple[str, ...]:
    """The hyperparameter sections that apply to `dataset_id`, from general to specific (without `default`):
    domain, env, ExoRL task family, the id itself. `zoo/exorl/walker-run/rnd-v0` -> (exorl, walker,
    walker-run, zoo/exorl/walker-run/rnd-v0); `D4RL/pen/human-v2` -> (adroit, pen, D4RL/pen/human-v2);
    `D4RL/antmaze/umaze-v1` -> (antmaze, D4RL/antmaze/umaze-v1)."""
    keys: list[str] = []
    domain = domain_of(dataset_id)
    exorl = _EXORL_PATTERN.match(dataset_id)
    if exorl:
        keys += [exorl["domain"], f"{exorl['domain']}-{exorl['task']}"]
    else:
        keys.append(env_key(dataset_id) or "")
    ordered = [domain or "", *keys, dataset_id]
    return tuple(dict.fromkeys(key for key in ordered if key))


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
    official = dataset_id.startswith("D4RL/")
    if env_id is None and official and key in D4RL_OFFICIAL_ENV_IDS:
        env_id = D4RL_OFFICIAL_ENV_IDS[key]
    if env_id is None:
        raise ValueError(
            f"Cannot tell which environment dataset '{dataset_id}' belongs to: its metadata has no env_spec "
            f"and '{key}' is not one of {sorted(LOCOMOTION_ENV_IDS)}."
        )
    ref_min, ref_max = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    if (ref_min is None or ref_max is None) and key in D4RL_REFERENCE_RETURNS:
        ref_min, ref_max = D4RL_REFERENCE_RETURNS[key]
    if (ref_min is None or ref_max is None) and official and key in D4RL_OFFICIAL_REFERENCE_RETURNS:
        ref_min, ref_max = D4RL_OFFICIAL_REFERENCE_RETURNS[key]
    ref_min = None if ref_min is None else float(ref_min)
    return Task(env_id, ref_min, None if ref_max is None else float(ref_max))


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
