"""OfflineDataset: a Minari dataset as torch tensors on the training device."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from zoo.data.minari_io import FlatEpisodes, dataset_exists, local_dataset_ids, minari_root, read_dataset
from zoo.data.returns import discounted_returns_to_go
from zoo.data.tasks import Task, task_for
from zoo.errors import ConfigError, UserError

Subset = Literal["transitions", "trajectories"]

# Added to the standard deviation of each observation dimension, as in TD3+BC (sfujim/TD3_BC utils.py).
OBS_STD_EPS = 1e-3


class DatasetNotFoundError(UserError, FileNotFoundError):
    """The dataset id is not in the local Minari root."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" is CUDA when there is one, else the CPU; a device that does not exist or that this torch
    build cannot use is a ConfigError here, before any work (torch would fail at the first tensor)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"device={device!r} is not a torch device: use auto, cpu, cuda or cuda:N "
            "(or mps on Apple silicon)."
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"device={device!r} is not available ({build}): use --device cpu (or auto).")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={device!r} is not available: {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0..cuda:{torch.cuda.device_count() - 1}."
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device!r} is not available on this machine: use --device cpu (or auto).")
    return resolved


class SourceEpisodes(NamedTuple):
    """The complete source dataset on the host: per-step `rewards` and `terminations`, `episode_ends` (the
    exclusive end of each episode) and `index`, the source position of each kept transition (a subset keeps
    some of them). What whole-episode computations (returns, soft returns) need."""

    rewards: np.ndarray
    terminations: np.ndarray
    episode_ends: np.ndarray
    index: np.ndarray


@dataclass
class OfflineDataset:
    """Transitions (s, a, r, s', terminated, truncated) of a Minari dataset, as tensors on one device.

    Terminations and truncations stay separate: a TD target bootstraps through a truncation, a
    Monte-Carlo tail may treat it specially. `episode_index` names the source episode of each transition
    (a uniform subset keeps transitions of many episodes, in order).
    """

    dataset_id: str
    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    terminations: torch.Tensor
    truncations: torch.Tensor
    episode_index: torch.Tensor
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box
    task: Task
    metadata: dict[str, Any] = field(default_factory=dict)
    # Host-side view of the whole source dataset, for returns-to-go over complete episodes.
    _source_rewards: np.ndarray = field(default=None, repr=False)
    _source_terminations: np.ndarray = field(default=None, repr=False)
    _source_episode_ends: np.ndarray = field(default=None, repr=False)
    _source_index: np.ndarray = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.observations.shape[0]

    @property
    def device(self) -> torch.device:
        return self.observations.device

    @property
    def observation_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    @property
    def source_episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode of the source dataset (before any fraction)."""
        starts = np.concatenate([[0], self._source_episode_ends[:-1]])
        return np.add.reduceat(self._source_rewards.astype(np.float64), starts)

    @property
    def source_episodes(self) -> SourceEpisodes:
        """The per-episode view of the complete source dataset (see SourceEpisodes)."""
        return SourceEpisodes(
            self._source_rewards, self._source_terminations, self._source_episode_ends, self._source_index
        )

    def observation_statistics(self, eps: float = OBS_STD_EPS) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std (+eps) of the observations of this (sub)set, for state normalisation."""
        mean = self.observations.mean(0)
        std = self.observations.std(0, correction=0) + eps
        return mean, std

    def returns_to_go(
        self,
        gamma: float,
        *,
        timeout_tail: bool = False,
        failure_reward: float | None = None,
        reward_scale: float = 1.0,
        reward_bias: float = 0.0,
    ) -> torch.Tensor:
        """Monte-Carlo returns of each transition, computed over its complete source episode.

        See `zoo.data.returns.discounted_returns_to_go` for the timeout tail (imitate-then-improve), the
        sparse failure rule (Cal-QL) and the reward transform (an agent's reward_scale/reward_bias).
        """
        returns = discounted_returns_to_go(
            self._source_rewards,
            self._source_episode_ends,
            self._source_terminations,
            gamma,
            timeout_tail=timeout_tail,
            failure_reward=failure_reward,
            reward_scale=reward_scale,
            reward_bias=reward_bias,
        )
        return torch.as_tensor(returns[self._source_index], dtype=torch.float32, device=self.device)

    def to(self, device: str | torch.device) -> "OfflineDataset":
        device = resolve_device(device)
        moved = {
            name: getattr(self, name).to(device)
            for name in (
                "observations",
                "actions",
                "rewards",
                "next_observations",
                "terminations",
                "truncations",
                "episode_index",
            )
        }
        return OfflineDataset(
            **{**self.__dict__, **moved},
        )


def load_dataset(
    dataset_id: str,
    *,
    fraction: float = 1.0,
    subset: Subset = "transitions",
    seed: int = 0,
    device: str | torch.device = "auto",
) -> OfflineDataset:
    """Load a local Minari dataset (official ids or the zoo's own `zoo/...` ids) onto `device`.

    fraction: keep this share of the data, in (0, 1].
    subset: "transitions" draws transitions uniformly without replacement (the shared-Q-network paper's
        D4RL fractions; its code draws with replacement, which only duplicates rows); "trajectories"
        keeps the first episodes in collection order (its ExoRL fractions: initial segments).
    seed: makes the "transitions" subset deterministic.
    """
    if isinstance(fraction, bool) or not (isinstance(fraction, numbers.Real) and 0.0 < fraction <= 1.0):
        raise ConfigError(f"fraction must lie in (0, 1], got {fraction!r}: 0.1 keeps 10% of the dataset.")
    if subset not in ("transitions", "trajectories"):
        raise ConfigError(f"subset must be 'transitions' or 'trajectories', got {subset!r}.")
    if not dataset_exists(dataset_id):
        available = local_dataset_ids()
        raise DatasetNotFoundError(
            f"Dataset '{dataset_id}' is not in the local Minari root ({minari_root()}). "
            f"Local datasets: {', '.join(available) if available else 'none'}. "
            "The zoo's own datasets are made with `zoo datasets make <id>` (or `make quickstart` for "
            "zoo/hopper/quickstart-v0); official ones are fetched with `minari download <id>` on a "
            "machine with internet access (set MINARI_DATASETS_PATH to use another root)."
        )
    flat = read_dataset(dataset_id)
    index = _subset_index(flat, fraction, subset, seed)
    return _to_offline_dataset(dataset_id, flat, index, resolve_device(device))


def _subset_index(flat: FlatEpisodes, fraction: float, subset: Subset, seed: int) -> np.ndarray:
    n = len(flat.rewards)
    if fraction >= 1.0:
        return np.arange(n)
    if subset == "transitions":
        size = max(1, int(round(fraction * n)))
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(n, size=size, replace=False))
    # Whole episodes in collection order until the share is reached (at least one episode).
    n_episodes = max(1, int(np.searchsorted(flat.episode_ends, fraction * n, side="left")) + 1)
    n_episodes = min(n_episodes, len(flat.episode_ends))
    return np.arange(int(flat.episode_ends[n_episodes - 1]))


def _to_offline_dataset(
    dataset_id: str, flat: FlatEpisodes, index: np.ndarray, device: torch.device
) -> OfflineDataset:
    episode_of = np.searchsorted(flat.episode_ends, index, side="right")

    def tensor(array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array[index]), dtype=dtype).to(device)

    return OfflineDataset(
        dataset_id=dataset_id,
        observations=tensor(flat.observations),
        actions=tensor(flat.actions),
        rewards=tensor(flat.rewards),
        next_observations=tensor(flat.next_observations),
        terminations=tensor(flat.terminations, torch.bool),
        truncations=tensor(flat.truncations, torch.bool),
        episode_index=torch.as_tensor(episode_of, dtype=torch.long).to(device),
        observation_space=flat.observation_space,
        action_space=flat.action_space,
        task=task_for(dataset_id, flat.metadata),
        metadata=flat.metadata,
        _source_rewards=flat.rewards,
        _source_terminations=flat.terminations,
        _source_episode_ends=flat.episode_ends,
        _source_index=index,
    )
