"""DeepMind Control suite tasks as Gymnasium environments, shaped as ExoRL/URLB see them (states).

ExoRL builds its environments with `suite.load(domain, task, task_kwargs={'random': seed},
environment_kwargs={'flat_observation': True})` and wraps them so that observations are float32,
actions are float32 in [-1, 1] (rescaled to the task's action spec) and one agent step is one control
step (`action_repeat=1` for states). `DMCEnv` reproduces exactly that behind the Gymnasium API:

* observation: the task's observation dict flattened in the order dm_control returns it (walker:
  orientations 14, height 1, velocity 9 = 24 float32 values);
* action: Box(-1, 1) float32, mapped linearly onto the task's action spec;
* episode end: dm_control's time limit (1000 steps for the suite tasks) is a *truncation*; a step that
  ends the episode with discount 0 is a *termination* (walker never terminates);
* `reset(seed=s)` reseeds the task's RandomState (dm_control's `task_kwargs={'random': s}`), so an
  evaluation seeded per episode starts from the same states every time.

Gymnasium ids are `zoo/dmc-<domain>-<task>-v0` (e.g. `zoo/dmc-walker-walk-v0`). The ExoRL domains of
the suite are registered when this module is imported (cheap: dm_control is imported only when an env
is made); `register_dmc_env(domain, task)` registers any other suite task.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from zoo.errors import ConfigError

ENV_ID_TEMPLATE = "zoo/dmc-{domain}-{task}-v0"
ENTRY_POINT = "zoo.envs.dmc:DMCEnv"

# Suite tasks of the ExoRL domains (exorl README) that are registered at import. ExoRL's custom tasks
# (walker flip, cheetah run_backward/flip, point_mass_maze, jaco) are not part of dm_control's suite.
REGISTERED_AT_IMPORT: dict[str, tuple[str, ...]] = {
    "walker": ("stand", "walk", "run"),
    "cheetah": ("run",),
    "cartpole": ("balance", "balance_sparse", "swingup", "swingup_sparse"),
    "quadruped": ("walk", "run"),
}

# URLB's pretraining task per domain (dmc_benchmark.PRIMAL_TASKS): the reward written while exploring.
PRIMAL_TASKS: dict[str, str] = {"walker": "stand", "quadruped": "walk"}


def _suite():
    """dm_control.suite, imported on first use (dm_control is needed only to make an env).

    Without MUJOCO_GL, dm_control picks the first OpenGL backend that imports; GLFW then warns on a
    headless machine although nothing here renders: that warning is silenced. Set MUJOCO_GL=egl (or
    osmesa) to render headless.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*DISPLAY environment variable is missing")
        from dm_control import suite
    return suite


def dmc_env_id(domain: str, task: str) -> str:
    """The Gymnasium id of a suite task: `zoo/dmc-walker-walk-v0`."""
    return ENV_ID_TEMPLATE.format(domain=domain, task=task)


def suite_tasks(domain: str) -> tuple[str, ...]:
    """Tasks of a dm_control suite domain; a ValueError listing the domains when it is not one."""
    by_domain = _suite().TASKS_BY_DOMAIN
    if domain not in by_domain:
        raise ConfigError(
            f"'{domain}' is not a dm_control suite domain; the domains are: {', '.join(sorted(by_domain))}."
        )
    return tuple(by_domain[domain])


def check_task(domain: str, task: str) -> None:
    """A clear ValueError when `task` is not a suite task of `domain` (names the domain's tasks)."""
    tasks = suite_tasks(domain)
    if task not in tasks:
        raise ConfigError(
            f"'{task}' is not a task of dm_control's '{domain}' domain; its tasks are: {', '.join(tasks)}. "
            "(ExoRL's custom tasks such as walker 'flip' are not in the dm_control suite.)"
        )


def primal_task(domain: str) -> str:
    """The task whose reward URLB writes while exploring `domain` (its first suite task if URLB has none)."""
    return PRIMAL_TASKS.get(domain) or suite_tasks(domain)[0]


def register_dmc_env(domain: str, task: str) -> str:
    """Register `zoo/dmc-<domain>-<task>-v0` (idempotent) and return the id."""
    env_id = dmc_env_id(domain, task)
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=ENTRY_POINT, kwargs={"domain": domain, "task": task})
    return env_id


def make_dmc_env(
    domain: str, task: str, *, seed: int | None = None, episode_length: int | None = None
) -> DMCEnv:
    """A suite task as a Gymnasium env (see `DMCEnv`), registering its id for `gymnasium.make` too."""
    check_task(domain, task)
    register_dmc_env(domain, task)
    return DMCEnv(domain, task, seed=seed, episode_length=episode_length)


class DMCEnv(gym.Env):
    """One dm_control suite task with ExoRL's observation/action conventions (module docstring).

    domain, task: the suite task, e.g. ("walker", "walk").
    seed: seeds the task's RandomState (initial states), as `task_kwargs={'random': seed}`.
    episode_length: truncate after this many steps; None keeps dm_control's time limit (1000 steps).
        Must not exceed that limit. Shorter episodes are for tests and quick checks.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 40}

    def __init__(
        self,
        domain: str,
        task: str,
        *,
        seed: int | None = None,
        episode_length: int | None = None,
        render_mode: str | None = None,
    ):
        check_task(domain, task)
        self.domain, self.task_name = domain, task
        self.dm_env = _suite().load(
            domain,
            task,
            task_kwargs={"random": seed},
            environment_kwargs={"flat_observation": True},
            visualize_reward=False,
        )
        obs_spec = self.dm_env.observation_spec()["observations"]
        act_spec = self.dm_env.action_spec()
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=obs_spec.shape, dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=act_spec.shape, dtype=np.float32)
        self._act_low = np.asarray(act_spec.minimum, dtype=np.float64)
        self._act_high = np.asarray(act_spec.maximum, dtype=np.float64)
        limit = self.dm_env._step_limit  # dm_control keeps the time limit in steps here (float, may be inf)
        self.time_limit_steps = None if np.isinf(limit) else round(limit)
        too_long = (
            self.time_limit_steps is not None
            and episode_length is not None
            and episode_length > self.time_limit_steps
        )
        if episode_length is not None and (episode_length < 1 or too_long):
            raise ConfigError(
                f"episode_length must lie in [1, {self.time_limit_steps}] for {domain}-{task}, "
                f"got {episode_length}."
            )
        self.episode_length = episode_length if episode_length is not None else self.time_limit_steps
        self.render_mode = render_mode
        self._steps = 0

    # dm_control handles, for relabelling and for storing physics states.
    @property
    def physics(self):
        return self.dm_env.physics

    @property
    def dm_task(self):
        return self.dm_env.task

    def physics_state(self) -> np.ndarray:
        """`physics.state()`: qpos ‖ qvel ‖ act (float64), what ExoRL stores as `physics`."""
        return np.array(self.dm_env.physics.state(), dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # What `task_kwargs={'random': seed}` does at construction: the task's own RandomState.
            self.dm_env.task._random = np.random.RandomState(seed)
        time_step = self.dm_env.reset()
        self._steps = 0
        return self._observation(time_step), {}

    def step(self, action):
        action = np.asarray(action, dtype=np.float32).astype(np.float64)  # ExoRL's float32 action spec
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"{self.domain}-{self.task_name} expects actions of shape {self.action_space.shape}, "
                f"got {action.shape}."
            )
        scaled = self._act_low + (action + 1.0) * 0.5 * (self._act_high - self._act_low)
        time_step = self.dm_env.step(scaled)
        self._steps += 1
        terminated = bool(time_step.last() and time_step.discount == 0.0)
        truncated = not terminated and (
            time_step.last() or (self.episode_length is not None and self._steps >= self.episode_length)
        )
        reward = 0.0 if time_step.reward is None else float(time_step.reward)
        return (
            self._observation(time_step),
            reward,
            terminated,
            truncated,
            {"discount": float(time_step.discount)},
        )

    def render(self):
        if self.render_mode == "rgb_array":
            return self.dm_env.physics.render(height=480, width=480, camera_id=0)
        return None

    def close(self):
        self.dm_env.close()

    @staticmethod
    def _observation(time_step) -> np.ndarray:
        return np.asarray(time_step.observation["observations"], dtype=np.float32)


for _domain, _tasks in REGISTERED_AT_IMPORT.items():
    for _task in _tasks:
        register_dmc_env(_domain, _task)
