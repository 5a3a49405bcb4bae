"""Environments the zoo makes itself: dm_control suite tasks behind the Gymnasium API (ExoRL's view).

Importing this package registers `zoo/dmc-<domain>-<task>-v0` for the ExoRL suite domains (walker,
cheetah, cartpole, quadruped) without importing dm_control; `zoo/__init__.py` imports it, so the ids of
ExoRL datasets resolve wherever zoo is imported. dm_control is needed only to make an env.
"""

from zoo.envs.dmc import (
    DMCEnv,
    check_task,
    dmc_env_id,
    make_dmc_env,
    primal_task,
    register_dmc_env,
    suite_tasks,
)

__all__ = [
    "DMCEnv",
    "check_task",
    "dmc_env_id",
    "make_dmc_env",
    "primal_task",
    "register_dmc_env",
    "suite_tasks",
]
