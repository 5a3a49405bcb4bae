"""Environments the zoo makes itself: dm_control suite tasks behind the Gymnasium API (ExoRL's view), and
`make_env`, the one way the zoo builds an env for a dataset's task.

Importing this package registers `zoo/dmc-<domain>-<task>-v0` for the ExoRL suite domains (walker,
cheetah, cartpole, quadruped) without importing dm_control; `zoo/__init__.py` imports it, so the ids of
ExoRL datasets resolve wherever zoo is imported. dm_control is needed only to make an env.
"""

import gymnasium as gym

from zoo.envs.dmc import (
    DMCEnv,
    check_task,
    dmc_env_id,
    make_dmc_env,
    primal_task,
    register_dmc_env,
    suite_tasks,
)



def make_env(env_id: str, **kwargs) -> gym.Env:
    """`gym.make(env_id, **kwargs)`, with a dictionary observation (goal-conditioned tasks: AntMaze's
    observation / achieved_goal / desired_goal, Kitchen's) flattened by FlattenObservation: the keys in the
    space's (sorted) order, concatenated, which is how `load_dataset` flattens such datasets."""
    env = gym.make(env_id, **kwargs)
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = gym.wrappers.FlattenObservation(env)
    return env


__all__ = [
    "make_env",
    "DMCEnv",
    "check_task",
    "dmc_env_id",
    "make_dmc_env",
    "primal_task",
    "register_dmc_env",
    "suite_tasks",
]
