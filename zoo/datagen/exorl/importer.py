"""Import ExoRL episode folders (official downloads or `collect` output) as relabelled Minari datasets."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from zoo.data.minari_io import Episode, write_dataset
from zoo.datagen.exorl.collect import read_collect_info
from zoo.datagen.exorl.episodes import (
    ExoRLEpisode,
    ExoRLEpisodeError,
    buffer_dir,
    parse_episode_filename,
    read_episode,
    relabel_rewards,
)
from zoo.envs.dmc import check_task, dmc_env_id, make_dmc_env
from zoo.errors import ConfigError, DataError

IMPORTER_VERSION = "1"
# dm_control rewards lie in [0, 1] per step and the suite's episodes last 1000 steps.
REF_MIN_SCORE, REF_MAX_SCORE = 0.0, 1000.0

OnError = Literal["stop", "skip"]


def exorl_dataset_id(domain: str, task: str, explorer: str) -> str:
    """`zoo/exorl/<domain>-<task>/<explorer>-v0`, e.g. `zoo/exorl/walker-walk/rnd-v0`."""
    return f"zoo/exorl/{domain}-{task}/{explorer}-v0"


def episode_files(root: str | Path, domain: str, explorer: str) -> list[Path]:
    """The episode files of `<root>/<domain>/<explorer>/buffer`, in collection order (by episode index)."""
    buffer = buffer_dir(root, domain, explorer)
    if not buffer.is_dir():
        parent = Path(root) / domain
        available = (
            sorted(p.name for p in parent.iterdir() if (p / "buffer").is_dir()) if parent.is_dir() else []
        )
        raise FileNotFoundError(
            f"No ExoRL buffer folder at {buffer}. "
            + (
                f"Explorers found under {parent}: {', '.join(available)}."
                if available
                else f"Nothing for domain '{domain}' under {root}: download it with ExoRL's "
                "download.sh or run collect()."
            )
        )
    files = sorted(
        buffer.glob("*.npz"), key=lambda p: ((parse_episode_filename(p) or (float("inf"),))[0], p.name)
    )
    if not files:
        raise FileNotFoundError(f"{buffer} holds no episode files (*.npz).")
    return files


def exorl_to_episode(episode: ExoRLEpisode, rewards: np.ndarray) -> Episode:
    """ExoRL rows -> Minari episode: observations O[0..L], actions A[1..L], rewards r[1..L].

    Row 0's action and reward are the dummy reset entries and are dropped. The last step is a termination
    when its discount is 0, otherwise a truncation (dm_control's time limit).
    """
    length = episode.length
    terminations = np.zeros(length, dtype=bool)
    truncations = np.zeros(length, dtype=bool)
    if episode.terminated:
        terminations[-1] = True
    else:
        truncations[-1] = True
    return Episode(
        observations=episode.observation,
        actions=episode.action[1:],
        rewards=np.asarray(rewards, dtype=np.float64)[1:],
        terminations=terminations,
        truncations=truncations,
    )


def load_exorl_episodes(
    root: str | Path,
    domain: str,
    explorer: str,
    task: str,
    *,
    on_error: OnError = "stop",
    max_episodes: int | None = None,
) -> tuple[list[Episode], list[str]]:
    """Read, check and relabel the episodes of one explorer folder with `task`'s reward.

    Returns the Minari episodes (in collection order) and the names of the files that were skipped.
    on_error: "stop" raises on the first unreadable or inconsistent file (an ExoRLEpisodeError naming
        it) and on gaps in the episode numbering; "skip" leaves such files out with one warning naming them.
    max_episodes: keep only the first episodes (ExoRL's own loader uses about the first 1M transitions).
    """
    if on_error not in ("stop", "skip"):
        raise ConfigError(f"on_error must be 'stop' or 'skip', got {on_error!r}.")
    check_task(domain, task)
    files = episode_files(root, domain, explorer)
    env = make_dmc_env(domain, task)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    physics_dim = env.physics_state().shape[0]
    problems: list[str] = []

    indices = [parsed[0] for parsed in map(parse_episode_filename, files) if parsed is not None]
    if indices:
        missing = sorted(set(range(min(indices), max(indices) + 1)) - set(indices))
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
            message = f"{len(missing)} episode indices are missing from {files[0].parent}: {shown}"
            if on_error == "stop":
                raise FileNotFoundError(message + " (pass on_error='skip' to import the others).")
            problems.append(message)

    episodes: list[Episode] = []
    skipped: list[str] = []
    try:
        for path in files:
            if max_episodes is not None and len(episodes) >= max_episodes:
                break
            try:
                if parse_episode_filename(path) is None:
                    raise ExoRLEpisodeError(
                        path, "the name is not '<prefix>_<index>_<length>.npz' (ExoRL's naming)."
                    )
                exorl = read_episode(path, obs_dim=obs_dim, act_dim=act_dim, physics_dim=physics_dim)
            except ExoRLEpisodeError as error:
                if on_error == "stop":
                    raise ExoRLEpisodeError(
                        error.path, error.reason + " Pass on_error='skip' to leave it out."
                    ) from error
                skipped.append(path.name)
                problems.append(f"{path.name}: {error.reason}")
                continue
            episodes.append(exorl_to_episode(exorl, relabel_rewards(env, exorl.physics)))
    finally:
        env.close()
    if problems:
        warnings.warn(
            f"ExoRL import of {buffer_dir(root, domain, explorer)} skipped {len(skipped)} episode file(s): "
            + "; ".join(problems),
            stacklevel=2,
        )
    if not episodes:
        raise DataError(
            f"No usable episodes in {buffer_dir(root, domain, explorer)} (skipped: {', '.join(skipped)})."
        )
    return episodes, skipped


def import_exorl(
    root: str | Path,
    domain: str,
    explorer: str,
    task: str,
    dataset_id: str | None = None,
    on_error: OnError = "stop",
    *,
    max_episodes: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Import `<root>/<domain>/<explorer>/buffer/*.npz` as `zoo/exorl/<domain>-<task>/<explorer>-v0`.

    Rewards are relabelled for `task` from the stored physics states (ExoRL's `relable_episode`); the
    dataset's env is `zoo/dmc-<domain>-<task>-v0` with reference returns 0 and 1000. The metadata records
    the explorer, the source folder, the collection config (from zoo_collect.json when present) and the
    relabel task. Returns the dataset folder.
    """
    episodes, skipped = load_exorl_episodes(
        root, domain, explorer, task, on_error=on_error, max_episodes=max_episodes
    )
    dataset_id = dataset_id or exorl_dataset_id(domain, task, explorer)
    env_id = dmc_env_id(domain, task)  # registered by make_dmc_env in load_exorl_episodes
    folder = buffer_dir(root, domain, explorer).parent
    collect_info = read_collect_info(folder)
    if collect_info and collect_info.get("status") != "complete":
        warnings.warn(
            f"The collection in {folder} did not finish (status '{collect_info.get('status')}'): "
            f"importing the {len(episodes)} episodes it saved.",
            stacklevel=2,
        )
    returns = np.array([ep.rewards.sum() for ep in episodes])
    n_transitions = sum(len(ep.actions) for ep in episodes)
    source = (
        "zoo collect"
        if collect_info
        else "ExoRL episode files (no zoo_collect.json: e.g. an official download)"
    )
    return write_dataset(
        dataset_id,
        episodes,
        env_id=env_id,
        ref_min_score=REF_MIN_SCORE,
        ref_max_score=REF_MAX_SCORE,
        requirements=["dm_control==1.0.50", "mujoco>=3.17,<4"],
        algorithm_name=f"URLB {explorer} explorer (reward-free)"
        if explorer != "random"
        else "uniform random actions",
        description=(
            f"{n_transitions} transitions ({len(episodes)} episodes) of dm_control {domain} explored "
            f"reward-free by {explorer} ({source}), rewards relabelled for '{task}' from the stored "
            f"physics states; mean episode return {returns.mean():.1f}."
        ),
        extra_metadata={
            "zoo_importer_version": IMPORTER_VERSION,
            "exorl_domain": domain,
            "exorl_explorer": explorer,
            "exorl_relabel_task": task,
            "exorl_source": str(folder.resolve()),
            "exorl_episodes": len(episodes),
            "exorl_skipped_files": skipped,
            "exorl_config_name": collect_info.get("config_name") if collect_info else "unknown",
            "exorl_config": (collect_info.get("config") or {}) if collect_info else {},
            "exorl_collect": {k: v for k, v in (collect_info or {}).items() if k != "config"},
        },
        overwrite=overwrite,
    )
