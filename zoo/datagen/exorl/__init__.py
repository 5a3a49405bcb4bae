"""ExoRL exploratory datasets: URLB explorers, collection in the ExoRL episode layout, Minari import.

    from zoo.datagen.exorl import collect, import_exorl

    collect("walker", "rnd", "data/exorl", steps=100_000, config="small")  # reward-free exploration
    import_exorl("data/exorl", "walker", "rnd", "walk")  # -> zoo/exorl/walker-walk/rnd-v0
    env = gymnasium.make("zoo/dmc-walker-walk-v0")  # evaluation env (zoo.envs)

The dm_control envs live in `zoo.envs` (registered whenever zoo is imported); dm_control is needed to
make an env, collect or import.
"""

from zoo.datagen.exorl.collect import EpisodeReplay, collect, read_collect_info
from zoo.datagen.exorl.episodes import (
    ExoRLEpisode,
    ExoRLEpisodeError,
    episode_filename,
    read_episode,
    relabel_rewards,
    write_episode,
)
from zoo.datagen.exorl.explorers import CONFIGS, EXPLORERS, ExplorerConfig, resolve_config
from zoo.datagen.exorl.importer import (
    REF_MAX_SCORE,
    REF_MIN_SCORE,
    episode_files,
    exorl_dataset_id,
    import_exorl,
    load_exorl_episodes,
)

__all__ = [
    "CONFIGS",
    "EXPLORERS",
    "REF_MAX_SCORE",
    "REF_MIN_SCORE",
    "EpisodeReplay",
    "ExoRLEpisode",
    "ExoRLEpisodeError",
    "ExplorerConfig",
    "collect",
    "episode_filename",
    "episode_files",
    "exorl_dataset_id",
    "import_exorl",
    "load_exorl_episodes",
    "read_collect_info",
    "read_episode",
    "relabel_rewards",
    "resolve_config",
    "write_episode",
]
