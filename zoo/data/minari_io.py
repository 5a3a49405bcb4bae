"""Minari storage: where datasets live, reading them as flat arrays, writing them atomically."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import gymnasium as gym
import numpy as np


def minari_root() -> Path:
    """The local Minari root: $MINARI_DATASETS_PATH or ~/.minari/datasets (Minari's own rule)."""
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path())


def local_dataset_ids() -> list[str]:
    """Ids of the datasets in the local Minari root."""
    import minari

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sorted(minari.list_local_datasets())


def dataset_exists(dataset_id: str) -> bool:
    return (minari_root() / dataset_id / "data").is_dir()


@dataclass
class Episode:
    """One episode with Minari's alignment: T+1 observations, T of everything else."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    seed: int | None = None

    def __post_init__(self) -> None:
        steps = len(self.actions)
        if len(self.observations) != steps + 1:
            raise ValueError(
                f"An episode needs len(observations) == len(actions) + 1 (the final observation is kept); "
                f"got {len(self.observations)} observations for {steps} actions."
            )
        for name in ("rewards", "terminations", "truncations"):
            if len(getattr(self, name)) != steps:
                raise ValueError(f"Episode field '{name}' has {len(getattr(self, name))} steps, actions have {steps}.")


@dataclass
class FlatEpisodes:
    """All episodes of a dataset concatenated, transitions aligned as (s, a, r, s', terminated, truncated)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    episode_ends: np.ndarray  # exclusive end of each episode in the flat arrays
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Box
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]])

    @property
    def episode_returns(self) -> np.ndarray:
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts)


FLAT_ARRAYS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations", "episode_ends")


def read_dataset(dataset_id: str, *, cache: bool = True) -> FlatEpisodes:
    """Read every episode of a local Minari dataset into flat float32 arrays.

    Minari stores one HDF5 group per episode, which makes a 1M-transition dataset of short episodes
    (hopper-random: 45k episodes) take about a minute to read. The flat arrays are therefore cached in
    `<minari root>/.zoo-cache/` (a hidden folder Minari ignores), keyed by the size and modification
    time of the dataset's files, so later loads take about a second; `cache=False` skips it.
    """
    import minari

    dataset = minari.load_dataset(dataset_id)
    obs_space, act_space = dataset.observation_space, dataset.action_space
    for role, space in (("observation", obs_space), ("action", act_space)):
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(
                f"Dataset '{dataset_id}' has a {role} space {space}; zoo agents take flat Box spaces. "
                "Flatten it when writing the dataset (gymnasium.wrappers.FlattenObservation)."
            )
    cache_path, stamp = _cache_location(dataset_id)
    arrays = _read_cache(cache_path, stamp) if cache else None
    if arrays is None:
        arrays = _read_episodes(dataset, dataset_id)
        if cache:
            _write_cache(cache_path, stamp, arrays)
    flat = FlatEpisodes(
        **arrays, observation_space=obs_space, action_space=act_space, metadata=dict(dataset.storage.metadata)
    )
    check_finite(flat, dataset_id)
    return flat


def _read_episodes(dataset, dataset_id: str) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "next_obs", "act", "rew", "term", "trunc")}
    lengths = []
    for episode in dataset.iterate_episodes():
        observations = np.asarray(episode.observations, dtype=np.float32)
        parts["obs"].append(observations[:-1])
        parts["next_obs"].append(observations[1:])
        parts["act"].append(np.asarray(episode.actions, dtype=np.float32))
        parts["rew"].append(np.asarray(episode.rewards, dtype=np.float32))
        parts["term"].append(np.asarray(episode.terminations, dtype=bool))
        parts["trunc"].append(np.asarray(episode.truncations, dtype=bool))
        lengths.append(len(episode.actions))
    if not lengths or sum(lengths) == 0:
        raise ValueError(f"Dataset '{dataset_id}' holds no transitions.")
    return dict(
        observations=np.concatenate(parts["obs"]),
        actions=np.concatenate(parts["act"]),
        rewards=np.concatenate(parts["rew"]),
        next_observations=np.concatenate(parts["next_obs"]),
        terminations=np.concatenate(parts["term"]),
        truncations=np.concatenate(parts["trunc"]),
        episode_ends=np.cumsum(lengths),
    )


def _cache_location(dataset_id: str) -> tuple[Path, str]:
    data = minari_root() / dataset_id / "data"
    stamp = ";".join(
        f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(data.iterdir()) if f.is_file()
    )
    return minari_root() / ".zoo-cache" / (dataset_id.replace("/", "__") + ".npz"), stamp


def _read_cache(path: Path, stamp: str) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as cached:
            if str(cached["stamp"]) != stamp:
                return None
            return {name: cached[name] for name in FLAT_ARRAYS}
    except (OSError, KeyError, ValueError):
        return None  # absent, stale or unreadable: read the dataset itself


def _write_cache(path: Path, stamp: str, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp.npz")
    try:
        np.savez(tmp, stamp=np.array(stamp), **arrays)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only root only costs the speed-up
    finally:
        tmp.unlink(missing_ok=True)


def check_finite(flat: FlatEpisodes, dataset_id: str) -> None:
    """Name the first NaN/inf in a dataset: its field, transition index, episode and step."""
    for name in ("observations", "actions", "rewards", "next_observations"):
        values = getattr(flat, name)
        bad = ~np.isfinite(values)
        if bad.any():
            index = int(np.argwhere(bad)[0][0])
            episode = int(np.searchsorted(flat.episode_ends, index, side="right"))
            step = index - (int(flat.episode_ends[episode - 1]) if episode else 0)
            raise ValueError(
                f"Dataset '{dataset_id}' has a non-finite value ({values[index].ravel()[bad[index].ravel()][0]}) "
                f"in '{name}' at transition {index} (episode {episode}, step {step}). "
                "Regenerate the dataset or drop that episode before training."
            )


def write_dataset(
    dataset_id: str,
    episodes: Iterable[Episode],
    *,
    env_id: str,
    observation_space: gym.spaces.Space | None = None,
    action_space: gym.spaces.Space | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    algorithm_name: str | None = None,
    description: str | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
    requirements: Iterable[str] = ("gymnasium[mujoco]==1.0.0", "mujoco>=3.17,<4"),
    overwrite: bool = False,
) -> Path:
    """Write episodes as a Minari dataset with `minari.create_dataset_from_buffers`, all or nothing.

    The dataset is built in a hidden staging folder inside the Minari root (Minari skips hidden folders)
    and renamed into place only when complete, so a failure never leaves a half-written dataset.
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    root = minari_root()
    target = root / dataset_id
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"Dataset '{dataset_id}' already exists at {target}; pass overwrite=True (CLI: --overwrite) to replace it."
        )
    buffers = [
        EpisodeBuffer(
            id=i,
            seed=ep.seed,
            observations=np.asarray(ep.observations, dtype=np.float32),
            actions=np.asarray(ep.actions, dtype=np.float32),
            rewards=np.asarray(ep.rewards, dtype=np.float64),
            terminations=np.asarray(ep.terminations, dtype=bool),
            truncations=np.asarray(ep.truncations, dtype=bool),
        )
        for i, ep in enumerate(episodes)
    ]
    if not buffers:
        raise ValueError(f"No episodes to write for '{dataset_id}'.")
    env_spec = gym.spec(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with gym.make(env_id) as env:
            observation_space = observation_space or env.observation_space
            action_space = action_space or env.action_space
    for buffer in buffers:
        _check_episode_fits(buffer, observation_space, action_space, env_id)
    staging = Path(tempfile.mkdtemp(prefix=".zoo-staging-", dir=root))
    try:
        with _minari_root_override(staging), warnings.catch_warnings():
            # Minari warns about unset optional metadata (author email, eval env): not actionable here.
            warnings.simplefilter("ignore", UserWarning)
            if ref_max_score is not None and ref_min_score is None:
                raise ValueError("ref_max_score needs ref_min_score too (Minari would estimate it by rollouts).")
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                env=env_spec,
                observation_space=observation_space,
                action_space=action_space,
                algorithm_name=algorithm_name,
                author="offline-zoo",
                code_permalink="https://github.com/offline-zoo/zoo",
                ref_min_score=ref_min_score,
                ref_max_score=ref_max_score,
                description=description,
                requirements=list(requirements),
            )
            if extra_metadata:
                _merge_metadata(staging / dataset_id / "data", extra_metadata)
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_namespace_metadata(staging, root, dataset_id)
        backup = None
        if target.exists():
            backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            target.rename(backup)
        try:
            (staging / dataset_id).rename(target)
        except BaseException:
            if backup is not None:
                backup.rename(target)
            raise
        if backup is not None:
            shutil.rmtree(backup)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_episode_fits(buffer, observation_space: gym.spaces.Space, action_space: gym.spaces.Space, env_id: str) -> None:
    """Refuse episodes whose shapes or action range do not fit the env: they would load as a broken dataset."""
    for role, values, space in (("observations", buffer.observations, observation_space), ("actions", buffer.actions, action_space)):
        if values.shape[1:] != space.shape:
            raise ValueError(
                f"Episode {buffer.id} has {role} of shape {values.shape[1:]}, but {env_id} expects {space.shape}: "
                "write it with the environment it was collected in."
            )
    if isinstance(action_space, gym.spaces.Box):
        outside = (buffer.actions < action_space.low) | (buffer.actions > action_space.high)
        if outside.any():
            step = int(np.argwhere(outside)[0][0])
            raise ValueError(
                f"Episode {buffer.id} has an action outside {env_id}'s bounds [{action_space.low}, "
                f"{action_space.high}] at step {step}: clip actions to the action space before writing."
            )


@contextlib.contextmanager
def _minari_root_override(path: Path) -> Iterator[None]:
    """Point Minari at another root for the duration (process-wide: not for concurrent threads)."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def _merge_metadata(data_path: Path, extra: Mapping[str, Any]) -> None:
    from minari.dataset.minari_storage import MinariStorage

    storage = MinariStorage.read(data_path)
    storage.update_metadata({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in extra.items()})


def _copy_namespace_metadata(staging: Path, root: Path, dataset_id: str) -> None:
    """Minari keeps a namespace_metadata.json per namespace folder; create the missing ones in the root."""
    parts = Path(dataset_id).parts[:-1]
    for depth in range(1, len(parts) + 1):
        source = staging.joinpath(*parts[:depth], "namespace_metadata.json")
        dest = root.joinpath(*parts[:depth], "namespace_metadata.json")
        if source.exists() and not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
