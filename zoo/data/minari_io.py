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

from zoo.errors import DataError
from zoo.io import atomic_write, atomic_write_bytes, atomic_write_json


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
            raise DataError(
                f"An episode needs len(observations) == len(actions) + 1 (the final observation is kept); "
                f"got {len(self.observations)} observations for {steps} actions."
            )
        for name in ("rewards", "terminations", "truncations"):
            if len(getattr(self, name)) != steps:
                raise DataError(
                    f"Episode field '{name}' has {len(getattr(self, name))} steps, actions have {steps}."
                )


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


class DatasetExistsError(DataError, FileExistsError):
    """write_dataset without overwrite=True on an id that exists."""


FLAT_ARRAYS = (
    "observations",
    "actions",
    "rewards",
    "next_observations",
    "terminations",
    "truncations",
    "episode_ends",
)


def read_dataset(dataset_id: str, *, cache: bool = True) -> FlatEpisodes:
    """Read every episode of a local Minari dataset into flat float32 arrays, refusing data that is not
    usable as it is: a NaN/inf anywhere, an action outside the action space, an unreadable file (each a
    DataError naming the field, the transition and the fix). The verdict is kept beside the cache, so
    `zoo datasets list` can show it without reading the dataset again.

    Minari stores one HDF5 group per episode, which makes a 1M-transition dataset of short episodes
    (hopper-random: 45k episodes) take about a minute to read. The flat arrays are therefore cached in
    `<minari root>/.zoo-cache/` (a hidden folder Minari ignores), keyed by the size and modification
    time of the dataset's files, so later loads take about a second; `cache=False` skips it.
    """
    import minari

    try:
        dataset = minari.load_dataset(dataset_id)
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as error:
        raise _unreadable(dataset_id, error) from error
    obs_space, act_space = dataset.observation_space, dataset.action_space
    if _is_dict_of_vectors(obs_space):
        # Goal-conditioned datasets (AntMaze, Kitchen) store a (nested) dict per step: flattened here exactly
        # as zoo.envs.make_env's FlattenObservation flattens the env's (the space's key order, concatenated).
        obs_space = gym.spaces.flatten_space(obs_space)
    for role, space in (("observation", obs_space), ("action", act_space)):
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise DataError(
                f"Dataset '{dataset_id}' has a {role} space {space}; zoo agents take flat Box spaces (or a "
                "Dict of them, which is flattened). Flatten it when writing the dataset "
                "(gymnasium.wrappers.FlattenObservation)."
            )
    cache_path, stamp = _cache_location(dataset_id)
    arrays = _read_cache(cache_path, stamp) if cache else None
    if arrays is None:
        try:
            arrays = _read_episodes(dataset, dataset_id)
        except (OSError, KeyError) as error:  # h5py: truncated or corrupted file, missing episode groups
            if cache:
                _write_verdict(dataset_id, stamp, _unreadable(dataset_id, error))
            raise _unreadable(dataset_id, error) from error
        if cache:
            _write_cache(cache_path, stamp, arrays)
    flat = FlatEpisodes(
        **arrays, observation_space=obs_space, action_space=act_space, metadata=dict(dataset.storage.metadata)
    )
    try:
        check_finite(flat, dataset_id)
        check_action_bounds(flat, dataset_id)
    except DataError as error:
        if cache:
            _write_verdict(dataset_id, stamp, error)
        raise
    if cache:
        _write_verdict(dataset_id, stamp, None, flat)
    return flat


def _unreadable(dataset_id: str, error: BaseException) -> DataError:
    path = minari_root() / dataset_id
    reason = " ".join(str(error).split()) or type(error).__name__
    return DataError(
        f"Dataset '{dataset_id}' cannot be read ({reason}): the file was cut short or damaged while being "
        f"written or copied. Delete {path} and make or download it again."
    )


@dataclass
class DatasetSummary:
    """What `zoo datasets list` shows of a local dataset, from its metadata and file sizes (the data is not
    read): `problem` says why it cannot be used, when that is known without reading it, or from the
    verdict of the last full read (`read_dataset`) of the same files."""

    dataset_id: str
    transitions: int | None
    episodes: int | None
    size_bytes: int
    problem: str | None = None
    mean_return: float | None = None
    checked: bool = False  # a full read of these files passed or failed (the verdict is current)


def summarize_datasets() -> list[DatasetSummary]:
    """Every dataset folder of the local root (Minari's rule: a non-hidden folder holding data/), each
    one summarised on its own so that a damaged dataset is marked, never hiding the others."""
    root = minari_root()
    found: list[str] = []

    def walk(folder: Path, prefix: str) -> None:
        if (folder / "data").is_dir():
            found.append(prefix)
            return
        for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            walk(child, f"{prefix}/{child.name}" if prefix else child.name)

    if root.is_dir():
        walk(root, "")
    return [summarize_dataset(dataset_id) for dataset_id in found if dataset_id]


def summarize_dataset(dataset_id: str) -> DatasetSummary:
    import h5py

    data = minari_root() / dataset_id / "data"
    size = sum(f.stat().st_size for f in data.iterdir() if f.is_file()) if data.is_dir() else 0
    summary = DatasetSummary(dataset_id, None, None, size)
    try:
        metadata = json.loads((data / "metadata.json").read_text())
        summary.transitions, summary.episodes = int(metadata["total_steps"]), int(metadata["total_episodes"])
        if metadata.get("dataset_id") != dataset_id:
            summary.problem = (
                f"metadata.json names '{metadata.get('dataset_id')}', not its folder '{dataset_id}'"
            )
            return summary
    except (OSError, ValueError, KeyError, TypeError) as error:
        summary.problem = f"unreadable metadata.json ({' '.join(str(error).split())})"
        return summary
    hdf5 = data / "main_data.hdf5"
    if metadata.get("data_format", "hdf5") == "hdf5":
        try:
            with h5py.File(hdf5, "r") as handle:  # reads the superblock only: a truncated file fails here
                n_groups = len(handle.keys())
            if n_groups != summary.episodes:
                summary.problem = (
                    f"main_data.hdf5 holds {n_groups} episodes, metadata.json says {summary.episodes}"
                )
                return summary
        except OSError as error:
            summary.problem = f"unreadable main_data.hdf5 ({' '.join(str(error).split())})"
            return summary
    _, stamp = _cache_location(dataset_id)
    verdict = _read_verdict(dataset_id, stamp)
    if verdict is not None:
        summary.checked, summary.problem = True, verdict.get("problem")
        summary.mean_return = verdict.get("mean_return")
    return summary


def _is_dict_of_vectors(space: gym.Space) -> bool:
    """A Dict whose leaves (through nested Dicts) are 1-D Boxes: FlattenObservation makes it a vector."""
    return isinstance(space, gym.spaces.Dict) and all(
        _is_dict_of_vectors(sub) or (isinstance(sub, gym.spaces.Box) and len(sub.shape) == 1)
        for sub in space.spaces.values()
    )


def _flatten_steps(space: gym.Space, steps) -> np.ndarray:
    """(T+1, ...) arrays of a (nested) dict -> (T+1, d): the leaves in the space's key order, as
    gymnasium.spaces.flatten does for one step."""
    if isinstance(space, gym.spaces.Dict):
        return np.concatenate([_flatten_steps(sub, steps[key]) for key, sub in space.spaces.items()], axis=1)
    return np.asarray(steps, dtype=np.float32).reshape(len(steps), -1)


def _read_episodes(dataset, dataset_id: str) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "next_obs", "act", "rew", "term", "trunc")}
    lengths = []
    space = dataset.observation_space
    for episode in dataset.iterate_episodes():
        observations = _flatten_steps(space, episode.observations)
        parts["obs"].append(observations[:-1])
        parts["next_obs"].append(observations[1:])
        parts["act"].append(np.asarray(episode.actions, dtype=np.float32))
        parts["rew"].append(np.asarray(episode.rewards, dtype=np.float32))
        parts["term"].append(np.asarray(episode.terminations, dtype=bool))
        parts["trunc"].append(np.asarray(episode.truncations, dtype=bool))
        lengths.append(len(episode.actions))
    if not lengths or sum(lengths) == 0:
        raise DataError(
            f"Dataset '{dataset_id}' holds no transitions: write it again with at least one episode."
        )
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
    try:
        with atomic_write(path, "wb") as handle:
            np.savez(handle, stamp=np.array(stamp), **arrays)
    except OSError:
        pass  # a read-only root only costs the speed-up


def _verdict_path(dataset_id: str) -> Path:
    return minari_root() / ".zoo-cache" / (dataset_id.replace("/", "__") + ".check.json")


def _write_verdict(
    dataset_id: str, stamp: str, error: DataError | None, flat: "FlatEpisodes | None" = None
) -> None:
    """Record whether the dataset's files (as of `stamp`) passed the checks of `read_dataset`."""
    verdict: dict[str, Any] = {"stamp": stamp, "problem": str(error) if error is not None else None}
    if flat is not None:
        verdict["mean_return"] = float(flat.episode_returns.mean())
    try:
        atomic_write_json(_verdict_path(dataset_id), verdict)
    except OSError:
        pass


def _read_verdict(dataset_id: str, stamp: str) -> dict[str, Any] | None:
    try:
        verdict = json.loads(_verdict_path(dataset_id).read_text())
    except (OSError, ValueError):
        return None
    return verdict if verdict.get("stamp") == stamp else None


def check_finite(flat: FlatEpisodes, dataset_id: str) -> None:
    """Name the first NaN/inf in a dataset: its field, transition index, episode and step."""
    for name in ("observations", "actions", "rewards", "next_observations"):
        values = getattr(flat, name)
        bad = ~np.isfinite(values)
        if bad.any():
            index = int(np.argwhere(bad)[0][0])
            episode = int(np.searchsorted(flat.episode_ends, index, side="right"))
            step = index - (int(flat.episode_ends[episode - 1]) if episode else 0)
            raise DataError(
                f"Dataset '{dataset_id}' has a non-finite value "
                f"({values[index].ravel()[bad[index].ravel()][0]}) "
                f"in '{name}' at transition {index} (episode {episode}, step {step}). "
                "Regenerate the dataset or drop that episode before training."
            )


def _transition_place(flat: FlatEpisodes, index: int) -> str:
    episode = int(np.searchsorted(flat.episode_ends, index, side="right"))
    step = index - (int(flat.episode_ends[episode - 1]) if episode else 0)
    return f"transition {index} (episode {episode}, step {step})"


def check_action_bounds(flat: FlatEpisodes, dataset_id: str) -> None:
    """Name the first action outside the dataset's action space. Agents scale actions to [-1, 1] by the
    space's bounds and their actors cannot leave them: such data would train a policy on targets it can
    never reach, without a word."""
    low = np.asarray(flat.action_space.low, dtype=np.float64)
    high = np.asarray(flat.action_space.high, dtype=np.float64)
    slack = 1e-6 * np.maximum(1.0, np.maximum(np.abs(low), np.abs(high)))  # float32 storage of the bounds
    inside = (flat.actions >= low - slack) & (flat.actions <= high + slack)  # NaN is outside too
    if not inside.all():
        index, dim = (int(i) for i in np.argwhere(~inside)[0])
        raise DataError(
            f"Dataset '{dataset_id}' has an action outside its action space in 'actions' at "
            f"{_transition_place(flat, index)}, dimension {dim}: {flat.actions[index, dim]} not in "
            f"[{low[dim]}, {high[dim]}]. Clip the actions to the action space (numpy.clip) and write the "
            "dataset again, or declare the space the actions were collected in."
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
    and renamed into place only when complete, so a failure never leaves a half-written dataset. A
    process killed mid-write (SIGKILL, power loss) leaves its staging folder behind: every write first
    removes those of processes that no longer run (`remove_stale_staging`). Episodes are checked before
    anything is written: shapes, finite values, actions inside the action space (NaN included).
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    root = minari_root()
    target = root / dataset_id
    remove_stale_staging(root)
    if target.exists() and not overwrite:
        raise DatasetExistsError(
            f"Dataset '{dataset_id}' already exists at {target}; pass overwrite=True (CLI: --overwrite) "
            "to replace it."
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
        raise DataError(f"No episodes to write for '{dataset_id}': give at least one Episode.")
    env_spec = gym.spec(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with gym.make(env_id) as env:
            observation_space = observation_space or env.observation_space
            action_space = action_space or env.action_space
    for buffer in buffers:
        _check_episode_fits(buffer, observation_space, action_space, env_id)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=root))
    try:
        with _minari_root_override(staging), warnings.catch_warnings():
            # Minari warns about unset optional metadata (author email, eval env): not actionable here.
            warnings.simplefilter("ignore", UserWarning)
            if ref_max_score is not None and ref_min_score is None:
                raise DataError(
                    "ref_max_score needs ref_min_score too (Minari would estimate it by rollouts)."
                )
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
            backup = target.with_name(f".{target.name}{BACKUP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
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


def _check_episode_fits(
    buffer, observation_space: gym.spaces.Space, action_space: gym.spaces.Space, env_id: str
) -> None:
    """Refuse episodes that would load as a broken dataset: shapes that do not fit the env, NaN/inf values,
    actions outside the action space. The bounds test is written as "inside", so that NaN fails it."""
    for role, values, space in (
        ("observations", buffer.observations, observation_space),
        ("actions", buffer.actions, action_space),
    ):
        if values.shape[1:] != space.shape:
            raise DataError(
                f"Episode {buffer.id} has {role} of shape {values.shape[1:]}, but {env_id} expects "
                f"{space.shape}: "
                "write it with the environment it was collected in."
            )
    for role in ("observations", "actions", "rewards"):
        values = np.asarray(getattr(buffer, role))
        finite = np.isfinite(values)
        if not finite.all():
            step = int(np.argwhere(~finite)[0][0])
            raise DataError(
                f"Episode {buffer.id} has a non-finite value "
                f"({values[step].ravel()[~finite[step].ravel()][0]}) in "
                f"'{role}' at step {step}: drop or repair that episode before writing."
            )
    if isinstance(action_space, gym.spaces.Box):
        inside = (buffer.actions >= action_space.low) & (buffer.actions <= action_space.high)
        if not inside.all():
            step, dim = (int(i) for i in np.argwhere(~inside)[0])
            raise DataError(
                f"Episode {buffer.id} has an action outside {env_id}'s action space in 'actions' at "
                f"step {step}, "
                f"dimension {dim}: {buffer.actions[step, dim]} not in [{action_space.low[dim]}, "
                f"{action_space.high[dim]}]. Clip actions to the action space (numpy.clip) before writing."
            )


STAGING_PREFIX = ".zoo-staging-"  # + "<pid>-<random>": the folder a write builds its dataset in
BACKUP_MARK = ".old-"  # ".<name>.old-<pid>-<random>": a dataset being replaced, during the swap


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _writer_pid(name: str, marker: str) -> int | None:
    """The pid in a staging/backup folder name; None for names that do not carry one (older versions)."""
    head = name.split(marker, 1)[1].split("-", 1)[0] if marker in name else ""
    return int(head) if head.isdigit() else None


def stale_staging(root: Path | None = None) -> list[Path]:
    """Staging and backup folders left in the root by writers that no longer run (killed mid-write)."""
    root = minari_root() if root is None else Path(root)
    if not root.is_dir():
        return []
    stale = []
    for path in root.rglob(".*"):
        if not path.is_dir():
            continue
        marker = (
            STAGING_PREFIX
            if path.name.startswith(STAGING_PREFIX)
            else BACKUP_MARK
            if BACKUP_MARK in path.name
            else None
        )
        if marker is None:
            continue
        pid = _writer_pid(path.name, marker)
        if pid is None or not _pid_alive(pid):
            stale.append(path)
    return stale


def remove_stale_staging(root: Path | None = None) -> list[Path]:
    """Remove what killed writers left: their staging folders (a partial dataset, gigabytes at full size)
    and, for a kill between the two renames of a replacement, put the previous dataset back when the new
    one never arrived (else delete the backup). Returns the paths handled."""
    handled = []
    for path in stale_staging(root):
        if path.name.startswith(STAGING_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
        else:
            original = path.with_name(path.name[1:].split(BACKUP_MARK, 1)[0])
            if original.exists():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.rename(original)
        handled.append(path)
    return handled


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
    storage.update_metadata(
        {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in extra.items()}
    )


def _copy_namespace_metadata(staging: Path, root: Path, dataset_id: str) -> None:
    """Minari keeps a namespace_metadata.json per namespace folder; create the missing ones in the root."""
    parts = Path(dataset_id).parts[:-1]
    for depth in range(1, len(parts) + 1):
        source = staging.joinpath(*parts[:depth], "namespace_metadata.json")
        dest = root.joinpath(*parts[:depth], "namespace_metadata.json")
        if source.exists() and not dest.exists():
            atomic_write_bytes(dest, source.read_bytes())
