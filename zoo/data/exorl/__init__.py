"""ExoRL exploratory datasets: dm_control envs, URLB explorers, the ExoRL episode layout, Minari import.

    from zoo.data.exorl import collect, import_exorl, make_dmc_env

    collect("walker", "rnd", "data/exorl", steps=100_000, config="small")      # reward-free exploration
    import_exorl("data/exorl", "walker", "rnd", "walk")                       # -> zoo/exorl/walker-walk/rnd-v0
    env = gymnasium.make("zoo/dmc-walker-walk-v0")                           # evaluation env

Importing this package registers `zoo/dmc-<domain>-<task>-v0` for the ExoRL suite domains (walker,
cheetah, cartpole, quadruped) without importing dm_control; dm_control is needed to make an env,
collect or import.
"""

from zoo.data.exorl.collect import EpisodeReplay, collect, read_collect_info
from zoo.data.exorl.env import (
    DMCEnv,
    check_task,
    dmc_env_id,
    make_dmc_env,
    primal_task,
    register_dmc_env,
    suite_tasks,
)
from zoo.data.exorl.episodes import (
    ExoRLEpisode,
    ExoRLEpisodeError,
    episode_filename,
    read_episode,
    relabel_rewards,
    write_episode,
)
from zoo.data.exorl.explorers import CONFIGS, EXPLORERS, ExplorerConfig, resolve_config
from zoo.data.exorl.importer import (
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
    "DMCEnv",
    "EpisodeReplay",
    "ExoRLEpisode",
    "ExoRLEpisodeError",
    "ExplorerConfig",
    "check_task",
    "collect",
    "dmc_env_id",
    "episode_filename",
    "episode_files",
    "exorl_dataset_id",
    "import_exorl",
    "load_exorl_episodes",
    "make_dmc_env",
    "primal_task",
    "read_collect_info",
    "read_episode",
    "register_dmc_env",
    "relabel_rewards",
    "resolve_config",
    "suite_tasks",
    "write_episode",
]
