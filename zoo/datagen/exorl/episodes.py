"""The ExoRL episode files: layout, reading with checks, writing, and reward relabelling.

Layout (ExoRL `download.sh`): `<root>/<domain>/<explorer>/buffer/<prefix>_<index>_<length>.npz`, one
`np.savez_compressed` file per episode. Keys and rows (ExoRL/URLB `ExtendedTimeStepWrapper` and
`ReplayBufferStorage`), with L = episode length and L + 1 rows:

    observation (L+1, obs_dim) float32   row 0 = s_0 after reset, row i = s_i
    action      (L+1, act_dim) float32   row 0 = zeros (dummy), row i = a_i, the action taken at s_{i-1}
    reward      (L+1, 1)       float32   row 0 = 0 (dummy), row i = r_i of that step
    discount    (L+1, 1)       float32   row 0 = 1, row i = dm_control's discount (0 only at a termination)
    physics     (L+1, n_state) float64   physics.state() = qpos ‖ qvel ‖ act after reset / after step i

A transition is (observation[i-1], action[i], reward[i], discount[i], observation[i]) for i = 1..L.
Extra keys (SMM's `z`, other explorers' meta) are allowed and ignored by the loader.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import DataError
from zoo.io import atomic_write

REQUIRED_KEYS = ("observation", "action", "reward", "discount", "physics")
EPISODE_NAME = re.compile(r"^(?P<prefix>[^_]+)_(?P<index>\d+)_(?P<length>\d+)\.npz$")


class ExoRLEpisodeError(DataError):
    """An episode file that cannot be used; `path` names it and `reason` says why."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"ExoRL episode file {self.path}: {reason}")


def episode_filename(index: int, length: int) -> str:
    """`episode_000012_1000.npz`: ExoRL's distributed naming (zero-padded, so name order = index order)."""
    return f"episode_{index:06d}_{length}.npz"


def parse_episode_filename(path: Path | str) -> tuple[int, int] | None:
    """(index, length) from `<prefix>_<index>_<length>.npz`, or None when the name has another shape."""
    match = EPISODE_NAME.match(Path(path).name)
    return (int(match["index"]), int(match["length"])) if match else None


def buffer_dir(root: Path | str, domain: str, explorer: str) -> Path:
    return Path(root) / domain / explorer / "buffer"


@dataclass
class ExoRLEpisode:
    """One episode file's arrays, in the stored (L+1)-row layout (see the module docstring)."""

    path: Path
    observation: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    discount: np.ndarray
    physics: np.ndarray

    @property
    def length(self) -> int:
        return len(self.observation) - 1

    @property
    def terminated(self) -> bool:
        return bool(self.discount[-1] == 0.0)


def write_episode(path: Path | str, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write one episode with np.savez_compressed, atomically (zoo.io.atomic_write)."""
    path = Path(path)
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"Episode for {path.name} lacks the keys {missing}.")
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def read_episode(
    path: Path | str,
    *,
    obs_dim: int | None = None,
    act_dim: int | None = None,
    physics_dim: int | None = None,
) -> ExoRLEpisode:
    """Read and check one episode file; any problem is an `ExoRLEpisodeError` naming the file.

    Checks: a readable npz with the five keys, at least 2 rows, every key with the same number of rows,
    the row count matching the length in the file name, the expected widths (when given), finite
    values, the dummy first row, and a discount of 0 (termination) at most on the last row.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in REQUIRED_KEYS if k not in data.files]
            if missing:
                raise ExoRLEpisodeError(path, f"missing keys {missing} (has {sorted(data.files)}).")
            arrays = {k: np.asarray(data[k]) for k in REQUIRED_KEYS}
    except ExoRLEpisodeError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise ExoRLEpisodeError(
            path, f"not a readable npz file ({type(error).__name__}: {error})."
        ) from error

    rows = {k: (v.shape[0] if v.ndim else 0) for k, v in arrays.items()}
    if len(set(rows.values())) != 1:
        raise ExoRLEpisodeError(path, f"keys have different numbers of rows: {rows}.")
    n_rows = rows["observation"]
    if n_rows < 2:
        raise ExoRLEpisodeError(
            path, f"{n_rows} rows; an episode needs the dummy first row and at least one step."
        )
    parsed = parse_episode_filename(path)
    if parsed is not None and parsed[1] != n_rows - 1:
        raise ExoRLEpisodeError(
            path, f"the name says {parsed[1]} steps but the file holds {n_rows - 1} (+1 dummy row)."
        )
    observation = arrays["observation"].reshape(n_rows, -1).astype(np.float32, copy=False)
    action = arrays["action"].reshape(n_rows, -1).astype(np.float32, copy=False)
    reward = arrays["reward"].reshape(n_rows, -1).astype(np.float32, copy=False)
    discount = arrays["discount"].reshape(n_rows).astype(np.float32, copy=False)
    physics = arrays["physics"].reshape(n_rows, -1).astype(np.float64, copy=False)
    for name, values, expected in (
        ("observation", observation, obs_dim),
        ("action", action, act_dim),
        ("physics", physics, physics_dim),
    ):
        if expected is not None and values.shape[1] != expected:
            raise ExoRLEpisodeError(
                path,
                f"'{name}' has width {values.shape[1]}, the environment expects {expected} "
                "(another domain?).",
            )
    for name, values in (
        ("observation", observation),
        ("action", action),
        ("discount", discount),
        ("physics", physics),
    ):
        bad = ~np.isfinite(values)
        if bad.any():
            raise ExoRLEpisodeError(
                path, f"non-finite value in '{name}' at row {int(np.argwhere(bad)[0][0])}."
            )
    if np.any(action[0] != 0.0):
        raise ExoRLEpisodeError(
            path,
            "row 0 has a non-zero action; ExoRL's first row is the dummy reset row (action = 0), "
            "so the rows would be misaligned.",
        )
    if np.any(discount[:-1] == 0.0):
        row = int(np.flatnonzero(discount[:-1] == 0.0)[0])
        raise ExoRLEpisodeError(
            path, f"discount 0 (a termination) at row {row}, before the last row {n_rows - 1}."
        )
    return ExoRLEpisode(path, observation, action, reward, discount, physics)


def relabel_rewards(env, physics_states: np.ndarray) -> np.ndarray:
    """Rewards of `env`'s task at each stored physics state, as ExoRL's `relable_episode` computes them.

    For every row: restore the state inside `physics.reset_context()` (reset, set_state, forward) and
    ask the task for `get_reward(physics)`. `env` is a `DMCEnv` (or anything with `.physics` and
    `.dm_task`). Returns float64 rewards, one per row (row 0 included, as ExoRL does).
    """
    physics, task = env.physics, env.dm_task
    rewards = np.empty(len(physics_states), dtype=np.float64)
    for i, state in enumerate(physics_states):
        with physics.reset_context():
            physics.set_state(state)
        rewards[i] = task.get_reward(physics)
    return rewards
