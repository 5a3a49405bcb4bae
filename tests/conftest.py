"""Shared fixtures: one torch thread, a fresh Minari root per test and tiny hand-made Hopper-v5 datasets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from zoo.data import Episode, write_dataset
from zoo.threads import torch_threads

OBS_DIM, ACT_DIM = 11, 3
TINY_ID = "zoo/hopper/tiny-v0"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests use small networks and batches: one intra-op thread is as fast on an idle 2-core machine and
    much faster on a busy one, where two threads spin-wait (measured: a short EDAC run took 8 s with one
    thread, 86 s with two, under load)."""
    with torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def minari_root_per_test(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty Minari root, so no test sees another's datasets (or ~/.minari)."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def hand_episode(
    episode: int,
    steps: int,
    *,
    terminated: bool = False,
    truncated: bool = False,
    rewards=None,
) -> Episode:
    """An episode whose every value says where it comes from.

    observation[t] = 100 * episode + t in all 11 dimensions (t = 0..steps, the final one included);
    action[t] = (0.1 * episode, 0.1 * t, -0.1 * t), inside Hopper's [-1, 1] for t < 10;
    reward[t] = 10 * episode + t + 1 unless `rewards` is given;
    terminations/truncations are False everywhere except possibly on the last step.
    """
    t = np.arange(steps + 1, dtype=np.float64)
    observations = np.repeat((100.0 * episode + t)[:, None], OBS_DIM, axis=1)
    t = t[:-1]
    actions = np.stack([np.full(steps, 0.1 * episode), 0.1 * t, -0.1 * t], axis=1)
    if rewards is None:
        rewards = 10.0 * episode + t + 1.0
    terminations = np.zeros(steps, dtype=bool)
    truncations = np.zeros(steps, dtype=bool)
    terminations[-1] = terminated
    truncations[-1] = truncated
    rewards = np.asarray(rewards, dtype=np.float64)
    return Episode(observations, actions, rewards, terminations, truncations, seed=episode)


@dataclass
class TinyDataset:
    """What was written: the id, the episodes, and the flat layout the loader should reproduce."""

    dataset_id: str
    episodes: list[Episode]

    @property
    def lengths(self) -> list[int]:
        return [len(ep.actions) for ep in self.episodes]

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]])

    @property
    def n_transitions(self) -> int:
        return sum(self.lengths)


def tiny_episodes() -> list[Episode]:
    """Episode 0: 4 steps, terminates; episode 1: 3 steps, truncated; episode 2: 5 steps, neither."""
    return [
        hand_episode(0, 4, terminated=True),  # rewards 1, 2, 3, 4
        hand_episode(1, 3, truncated=True),  # rewards 11, 12, 13
        hand_episode(2, 5),  # rewards 21, 22, 23, 24, 25
    ]


def tiny_root(tmp_path_factory) -> Path:
    """A new Minari root holding the tiny dataset at TINY_ID, for a module's runs (each test still gets its
    own root from `minari_root_per_test`; give this one to subprocesses as MINARI_DATASETS_PATH)."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        write_dataset(TINY_ID, tiny_episodes(), env_id="Hopper-v5")
    return root


@pytest.fixture
def make_episode():
    """The `hand_episode` builder, for tests that need their own episodes."""
    return hand_episode


@pytest.fixture
def write_tiny():
    """Write episodes (default: tiny_episodes()) as a Hopper-v5 Minari dataset in the current root."""

    def write(dataset_id: str = TINY_ID, episodes: list[Episode] | None = None, **kwargs) -> TinyDataset:
        episodes = tiny_episodes() if episodes is None else episodes
        write_dataset(dataset_id, episodes, env_id="Hopper-v5", **kwargs)
        return TinyDataset(dataset_id, episodes)

    return write


@pytest.fixture
def tiny(write_tiny) -> TinyDataset:
    """The standard 3-episode, 12-transition dataset at zoo/hopper/tiny-v0."""
    return write_tiny()
