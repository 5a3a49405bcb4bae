"""D4RL-style locomotion datasets, built locally: `zoo/<env>/<quality>-v0`.

env: hopper, halfcheetah, walker2d (Gymnasium MuJoCo v5). quality, as in D4RL (Fu et al. 2020, §5):

- random:        uniform random actions.
- medium:        the SAC checkpoint whose return is about a third of the expert's, stochastic actions.
- expert:        the best SAC checkpoint, stochastic actions.
- medium-expert: medium then expert, half the transitions each (D4RL: 1M + 1M).
- medium-replay: what SAC's own training collected up to the medium checkpoint: the first 10k steps
                 uniform random (SB3's learning_starts), then each checkpoint k = 10k, 20k, ... (up to
                 the medium checkpoint, exclusive) acting stochastically for the 10k steps it was in
                 charge of. With `steps=N` the N transitions are shared out equally among the segments
                 (the random one included), keeping their order; each segment runs in a single env.

Every part of a dataset is collected by `collect_episodes` (n_envs environments, one batched actor call
per step, whole episodes only) with its own seed (reset seeds and action noise), so a dataset is a
function of (id, steps, seed). Collection runs in memory; the dataset is written once at the end through
`write_dataset`'s staging folder, so a failure leaves nothing in the root.

Differs from D4RL:
- medium-replay re-runs each saved checkpoint for its 10k steps instead of storing the training run's
  replay buffer; its default size is the medium checkpoint's training step (hopper 130k), not 200k-400k.
- The behaviour policies are SB3 SAC checkpoints (zoo/assets/behavior/, chosen by measured return in
  `zoo.datagen.behavior_training.check_checkpoints`), on MuJoCo v5 envs instead of gym's v2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import gymnasium as gym
import numpy as np

from zoo.data.minari_io import Episode, dataset_exists, minari_root, write_dataset
from zoo.data.tasks import D4RL_REFERENCE_RETURNS, LOCOMOTION_ENV_IDS
from zoo.datagen.behavior import SACActor, collect_episodes, sac_policy, vendored_behavior
from zoo.datagen.generate import GENERATOR_VERSION
from zoo.errors import ConfigError, DataError

QUALITIES = ("random", "medium", "medium-replay", "expert", "medium-expert")
ENVS = tuple(LOCOMOTION_ENV_IDS)  # hopper, halfcheetah, walker2d
DEFAULT_STEPS = 1_000_000  # D4RL: 1M transitions per dataset, 2M for medium-expert
SEGMENT_STEPS = 10_000  # SB3 learning_starts and the checkpoint interval of the behaviour runs
PART_SEED_STRIDE = 1_000_000  # medium-replay segment j resets from seed + j * stride + episode
MANIFEST = "manifest.json"

_ID = re.compile(r"^zoo/(?P<env>[^/]+)/(?P<quality>[^/]+)-v0$")


# ---------------------------------------------------------------------------------------------- ids


def d4rl_dataset_ids() -> list[str]:
    """The 15 ids `zoo datasets make` builds."""
    return [f"zoo/{env}/{quality}-v0" for env in ENVS for quality in QUALITIES]


def parse_dataset_id(dataset_id: str) -> tuple[str, str]:
    """`zoo/hopper/medium-replay-v0` -> ("hopper", "medium-replay"); a ValueError names the valid ones."""
    match = _ID.match(dataset_id)
    valid = f"envs: {', '.join(ENVS)}; qualities: {', '.join(QUALITIES)}"
    if match is None:
        raise ConfigError(
            f"'{dataset_id}' is not a D4RL-style zoo id: use zoo/<env>/<quality>-v0 with {valid}."
        )
    env, quality = match.group("env"), match.group("quality")
    if env not in ENVS:
        raise ConfigError(f"Unknown env '{env}' in '{dataset_id}'; valid {valid}.")
    if quality not in QUALITIES:
        raise ConfigError(f"Unknown quality '{quality}' in '{dataset_id}'; valid {valid}.")
    return env, quality


# -------------------------------------------------------------------------------- behaviour policies


@dataclass(frozen=True)
class BehaviorCheckpoint:
    """One vendored SAC actor: its file, training step and returns (progress.csv and the re-check)."""

    file: str
    step: int
    progress_return: float
    measured_return: float
    measured_std: float
    measured_episodes: int
    stochastic_return: float | None = None

    @property
    def path(self) -> Path:
        return vendored_behavior(self.file)

    def record(self) -> dict:
        return {
            "checkpoint": self.file,
            "training_step": self.step,
            "return_progress_csv": self.progress_return,
            "return_measured": self.measured_return,
            "return_measured_std": self.measured_std,
            "return_measured_episodes": self.measured_episodes,
            "return_stochastic": self.stochastic_return,
        }


@dataclass(frozen=True)
class BehaviorSet:
    """The behaviour checkpoints of one env: medium, expert, and those medium-replay replays."""

    env: str
    env_id: str
    medium: BehaviorCheckpoint
    expert: BehaviorCheckpoint
    checkpoints: tuple[BehaviorCheckpoint, ...]  # every vendored one, by training step
    check: dict  # how the measured returns were obtained

    def replay_checkpoints(self) -> list[BehaviorCheckpoint]:
        """Checkpoints 10k, 20k, ... up to the medium one (exclusive), each in charge of 10k steps."""
        by_step = {c.step: c for c in self.checkpoints}
        steps = range(SEGMENT_STEPS, self.medium.step, SEGMENT_STEPS)
        missing = [s for s in steps if s not in by_step]
        if self.medium.step % SEGMENT_STEPS or missing:
            raise DataError(
                f"The {self.env} medium-replay recipe needs checkpoints every {SEGMENT_STEPS} steps up to "
                f"{self.medium.step}; the manifest lacks {missing or 'a medium step on that grid'}."
            )
        return [by_step[s] for s in steps]


def read_manifest() -> dict:
    """zoo/assets/behavior/manifest.json, shipped with the package."""
    return json.loads((resources.files("zoo") / "assets" / "behavior" / MANIFEST).read_text())


def behavior_set(env: str) -> BehaviorSet:
    """The vendored behaviour checkpoints of `env` (hopper, halfcheetah or walker2d)."""
    manifest = read_manifest()
    if env not in manifest["envs"]:
        raise DataError(
            f"No behaviour checkpoints for '{env}' in the manifest; it has {sorted(manifest['envs'])}."
        )
    entry = manifest["envs"][env]
    checkpoints = tuple(
        BehaviorCheckpoint(
            file=c["file"],
            step=c["step"],
            progress_return=c["return_progress_csv"],
            measured_return=c["return_measured"],
            measured_std=c["return_measured_std"],
            measured_episodes=c["episodes"],
            stochastic_return=c.get("return_stochastic"),
        )
        for c in sorted(entry["checkpoints"], key=lambda c: c["step"])
        if c.get("file")
    )
    by_file = {c.file: c for c in checkpoints}
    return BehaviorSet(
        env=env,
        env_id=entry["env_id"],
        medium=by_file[entry["medium"]],
        expert=by_file[entry["expert"]],
        checkpoints=checkpoints,
        check=entry.get("check", {}),
    )


# ----------------------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Part:
    """A stretch of a dataset: who acts (None = uniform random), for how many transitions, which seed."""

    checkpoint: BehaviorCheckpoint | None
    steps: int
    seed: int
    n_envs: int | None = None  # environments side by side; None: the dataset's n_envs

    @property
    def label(self) -> str:
        return "uniform-random" if self.checkpoint is None else self.checkpoint.file


def recipe(env: str, quality: str, steps: int | None = None, seed: int = 0) -> list[Part]:
    """The parts of `zoo/<env>/<quality>-v0`, in the order they are collected and stored.

    steps: total transitions (at least; whole episodes only). Default: 1M, 2M for medium-expert, the
        medium checkpoint's training step for medium-replay.
    """
    if quality not in QUALITIES:
        raise ConfigError(f"Unknown quality '{quality}'; valid: {', '.join(QUALITIES)}.")
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1
    ):
        raise ConfigError(f"steps must be a positive integer, got {steps!r}.")
    behavior = behavior_set(env)
    if quality == "random":
        return [Part(None, steps or DEFAULT_STEPS, seed)]
    if quality in ("medium", "expert"):
        return [Part(getattr(behavior, quality), steps or DEFAULT_STEPS, seed)]
    if quality == "medium-expert":
        # Both halves use `seed`, so they equal medium-v0 and expert-v0 made with steps/2 and that seed.
        total = steps or 2 * DEFAULT_STEPS
        if total < 2:
            raise ConfigError(f"medium-expert needs at least 2 steps (one per half), got {total}.")
        return [Part(behavior.medium, total // 2, seed), Part(behavior.expert, total - total // 2, seed)]
    # medium-replay: the random warm-up, then each checkpoint before medium for its 10k steps.
    actors: list[BehaviorCheckpoint | None] = [None, *behavior.replay_checkpoints()]
    total = steps or SEGMENT_STEPS * len(actors)
    if total < len(actors):
        raise ConfigError(
            f"{env} medium-replay has {len(actors)} segments; steps must be at least that, got {total}."
        )
    shares = [total // len(actors) + (j < total % len(actors)) for j in range(len(actors))]
    return [
        # One env per segment, as the training ran: with n envs, stopping at a segment's end would drop
        # up to n-1 running episodes, the longer ones (Walker2d 10k-step segments: 3-4% lower mean return).
        Part(actor, share, seed + j * PART_SEED_STRIDE, n_envs=1)
        for j, (actor, share) in enumerate(zip(actors, shares))
    ]


def uniform_policy(action_space: gym.spaces.Box, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """Uniform random actions in the action space, one row per observation, from a seeded generator."""
    rng = np.random.default_rng(seed)
    low, high = action_space.low.astype(np.float64), action_space.high.astype(np.float64)
    return lambda obs: np.clip(rng.uniform(low, high, size=(len(obs), *low.shape)), low, high).astype(
        np.float32
    )


def part_policy(part: Part, env: gym.Env) -> Callable[[np.ndarray], np.ndarray]:
    if part.checkpoint is None:
        return uniform_policy(env.action_space, part.seed)
    actor = SACActor.from_state_dict(part.checkpoint.path, env)  # refuses a checkpoint of another env
    return sac_policy(actor, deterministic=False, seed=part.seed)  # stochastic actions, as D4RL


# ------------------------------------------------------------------------------------------ making


def make_d4rl_dataset(
    dataset_id: str,
    *,
    steps: int | None = None,
    seed: int = 0,
    n_envs: int = 8,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Collect `zoo/<env>/<quality>-v0` with its recipe and write it to the local Minari root."""
    env, quality = parse_dataset_id(dataset_id)
    if dataset_exists(dataset_id) and not overwrite:
        raise FileExistsError(
            f"Dataset '{dataset_id}' already exists at {minari_root() / dataset_id}; pass overwrite=True "
            "(CLI: --overwrite) to replace it."
        )
    if isinstance(n_envs, bool) or not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
        raise ConfigError(f"n_envs must be a positive integer, got {n_envs!r}.")
    behavior = behavior_set(env)
    parts = recipe(env, quality, steps, seed)
    episodes, spans = collect_parts(behavior.env_id, parts, n_envs=n_envs, progress=progress, desc=dataset_id)

    returns = np.array([ep.rewards.sum() for ep in episodes])
    ref_min, ref_max = D4RL_REFERENCE_RETURNS[env]
    used = sorted({p.checkpoint for p in parts if p.checkpoint is not None}, key=lambda c: c.step)
    recipe_record = {
        "name": f"d4rl/{quality}",
        "env": env,
        "quality": quality,
        "seed": seed,
        "steps_requested": steps,
        "n_envs": n_envs,
        "parts": [
            {
                "policy": part.label,
                "training_step": None if part.checkpoint is None else part.checkpoint.step,
                "deterministic": False if part.checkpoint is not None else None,
                "steps": part.steps,
                "seed": part.seed,
                "n_envs": part.n_envs or n_envs,
                "episodes": list(span),
                "transitions": int(sum(len(ep.actions) for ep in episodes[span[0] : span[1]])),
                "mean_return": float(returns[span[0] : span[1]].mean()),
            }
            for part, span in zip(parts, spans)
        ],
    }
    return write_dataset(
        dataset_id,
        episodes,
        env_id=behavior.env_id,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        algorithm_name="uniform random" if not used else "sb3/SAC behaviour policies",
        description=(
            f"D4RL-style {env}-{quality} on {behavior.env_id}: {sum(len(ep.actions) for ep in episodes)} "
            f"transitions in {len(episodes)} episodes, mean episode return {returns.mean():.1f}. Parts: "
            + "; ".join(f"{p['policy']} ({p['transitions']} transitions)" for p in recipe_record["parts"])
            + "."
        ),
        extra_metadata={
            "zoo_generator_version": GENERATOR_VERSION,
            "zoo_recipe": recipe_record,
            "zoo_behavior": [c.record() for c in used],
            "zoo_behavior_check": behavior.check,
        },
        overwrite=overwrite,
    )


def collect_parts(
    env_id: str, parts: list[Part], *, n_envs: int = 8, progress: bool = False, desc: str | None = None
) -> tuple[list[Episode], list[tuple[int, int]]]:
    """Collect every part in order, in memory: (all episodes, each part's [start, end) episode span)."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(p.steps for p in parts), desc=desc or env_id, unit="step", dynamic_ncols=True)
    episodes: list[Episode] = []
    spans: list[tuple[int, int]] = []
    done_before = 0
    try:
        with gym.make(env_id) as env:
            for part in parts:
                policy = part_policy(part, env)
                if bar is not None:
                    policy = _counted(policy, bar, limit=done_before + part.steps)
                part_episodes = collect_episodes(
                    env_id, policy, part.steps, seed=part.seed, n_envs=part.n_envs or n_envs
                )
                spans.append((len(episodes), len(episodes) + len(part_episodes)))
                episodes.extend(part_episodes)
                done_before += part.steps
                if bar is not None:
                    bar.update(done_before - bar.n)
    finally:
        if bar is not None:
            bar.close()
    return episodes, spans


def _counted(
    policy: Callable[[np.ndarray], np.ndarray], bar, limit: int
) -> Callable[[np.ndarray], np.ndarray]:
    """Advance the bar by the env steps each policy call drives (capped at the part's end)."""

    def call(obs: np.ndarray) -> np.ndarray:
        bar.update(max(0, min(len(obs), limit - bar.n)))
        return policy(obs)

    return call
