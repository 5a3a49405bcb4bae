"""Goal-conditioned datasets (Minari's AntMaze and Kitchen store a dict per step, Kitchen's goal a nested
dict): `load_dataset` flattens them in the same order as the evaluation env's FlattenObservation, so agents,
data and env agree."""

from __future__ import annotations

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from zoo.data import load_dataset
from zoo.envs import make_env

ENV_ID = "zoo-test/GoalPoint-v0"


class GoalPoint(gym.Env):
    """A point that moves by its action towards a goal: a dict observation as AntMaze's, with a nested goal
    dict as Kitchen's (keys given out of order on purpose: gymnasium's Dict sorts them, and so must the
    flattening)."""

    def __init__(self):
        box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float64)  # noqa: E731
        goal = gym.spaces.Dict({"y": box(1), "x": box(1)})
        self.observation_space = gym.spaces.Dict(
            {"observation": box(3), "desired_goal": goal, "achieved_goal": box(2)}
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _obs(self):
        goal = {"x": self.goal[:1].copy(), "y": self.goal[1:].copy()}
        return {"observation": np.r_[self.pos, 0.5], "achieved_goal": self.pos.copy(), "desired_goal": goal}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.goal = self.np_random.uniform(-1, 1, 2), np.array([0.75, -0.25])
        return self._obs(), {}

    def step(self, action):
        self.pos = self.pos + 0.1 * np.asarray(action, dtype=np.float64)
        reward = -float(np.linalg.norm(self.pos - self.goal))
        return self._obs(), reward, False, False, {}


gym.register(ENV_ID, entry_point=f"{__name__}:GoalPoint", max_episode_steps=5)


def stack(observations: list) -> dict | np.ndarray:
    """A list of (nested) dict observations -> a (nested) dict of stacked arrays, as Minari stores them."""
    if isinstance(observations[0], dict):
        return {key: stack([o[key] for o in observations]) for key in observations[0]}
    return np.asarray(observations)


def test_dict_dataset_loads_flattened_like_the_env():
    env = gym.make(ENV_ID)
    buffers = []
    for i in range(2):
        obs, _ = env.reset(seed=i)
        steps, actions, rewards = [obs], [], []
        for t in range(4):
            action = np.array([0.5, -1.0 + t * 0.5], np.float32)
            obs, reward, *_ = env.step(action)
            steps.append(obs)
            actions.append(action)
            rewards.append(reward)
        buffers.append(EpisodeBuffer(
            id=i, observations=stack(steps), actions=np.asarray(actions),
            rewards=np.asarray(rewards), terminations=np.zeros(4, bool),
            truncations=np.r_[np.zeros(3), 1].astype(bool),
        ))
    with pytest.warns(UserWarning):  # Minari's notes on unset optional metadata
        minari.create_dataset_from_buffers(
            dataset_id="other/goalpoint/test-v0", buffer=buffers, env=gym.spec(ENV_ID),
            algorithm_name="test", author="test", author_email="test@example.org",
            code_permalink="https://example.org", description="dict",
        )
    ds = load_dataset("other/goalpoint/test-v0", device="cpu")

    flat_env = make_env(ENV_ID)
    assert isinstance(flat_env.observation_space, gym.spaces.Box)
    assert ds.observation_space.shape == flat_env.observation_space.shape == (7,)
    # Sorted keys, nested too: achieved_goal (2), desired_goal.x (1), desired_goal.y (1), observation (3);
    # episode 0, step 0 and its successor.
    first = buffers[0].observations

    def flat(t):
        goal = first["desired_goal"]
        return np.r_[first["achieved_goal"][t], goal["x"][t], goal["y"][t], first["observation"][t]]

    expected = flat(0)
    np.testing.assert_allclose(ds.observations[0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(ds.next_observations[0].numpy(), flat(1), rtol=1e-6)
    # The evaluation env gives the same vector for the same reset.
    obs, _ = flat_env.reset(seed=0)
    np.testing.assert_allclose(obs, expected, rtol=1e-6)
    assert len(ds) == 8 and ds.task.env_id == ENV_ID
