"""Datasets made by running behaviour policies, written to the local Minari root."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from zoo.data.minari_io import write_dataset
from zoo.data.tasks import D4RL_REFERENCE_RETURNS, env_key
from zoo.datagen.behavior import SACActor, collect_episodes, sac_policy, vendored_behavior

GENERATOR_VERSION = "1"

# The embedded default of `zoo quickstart`: a SAC Hopper-v5 actor after 130k training steps
# (deterministic return 1148 in ../shared/behavior/hopper/progress.csv, a D4RL-"medium"-like policy).
QUICKSTART_DATASET = "zoo/hopper/quickstart-v0"
QUICKSTART_BEHAVIOR = "hopper_sac_actor_0130000.pt"


def make_behavior_dataset(
    dataset_id: str,
    env_id: str,
    checkpoint: str | Path,
    n_steps: int,
    *,
    seed: int = 0,
    deterministic: bool = False,
    n_envs: int = 8,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Roll out a SAC behaviour actor (stochastic actions by default, as D4RL) and write the episodes."""
    with gym.make(env_id) as env:
        actor = SACActor.from_state_dict(checkpoint, env)
    episodes = collect_episodes(
        env_id, sac_policy(actor, deterministic=deterministic, seed=seed), n_steps, seed=seed, n_envs=n_envs,
        progress=progress,
    )
    ref_min, ref_max = D4RL_REFERENCE_RETURNS.get(env_key(dataset_id) or "", (None, None))
    returns = np.array([ep.rewards.sum() for ep in episodes])
    return write_dataset(
        dataset_id,
        episodes,
        env_id=env_id,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        algorithm_name="sb3/SAC behaviour policy",
        description=(
            f"{sum(len(ep.actions) for ep in episodes)} transitions of {env_id} from the SAC actor "
            f"{Path(checkpoint).name} ({'deterministic' if deterministic else 'stochastic'} actions), "
            f"mean episode return {returns.mean():.1f}."
        ),
        extra_metadata={
            "zoo_generator_version": GENERATOR_VERSION,
            "zoo_behavior": {
                "checkpoint": Path(checkpoint).name,
                "deterministic": deterministic,
                "seed": seed,
            },
        },
        overwrite=overwrite,
    )


def make_quickstart_dataset(
    n_steps: int = 50_000, *, seed: int = 0, overwrite: bool = False, progress: bool = True
) -> Path:
    return make_behavior_dataset(
        QUICKSTART_DATASET,
        "Hopper-v5",
        vendored_behavior(QUICKSTART_BEHAVIOR),
        n_steps,
        seed=seed,
        overwrite=overwrite,
        progress=progress,
    )
