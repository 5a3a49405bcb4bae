"""Online fine-tuning in the agent base: env from the dataset, device buffer, mixing, UTD, callbacks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.test_td3bc import hopper, hopper_root  # noqa: F401
from zoo import TD3BC, make_agent
from zoo.evaluation import EvalCallback


def test_finetune_stores_normalised_online_transitions(hopper):
    agent = TD3BC(hopper, seed=0, online_utd_ratio=2)
    agent.learn(20)
    updates_before = agent._n_updates
    env = gym.make("Hopper-v5")
    seen = []

    class Recorder(gym.Wrapper):
        def step(self, action):
            out = super().step(action)
            seen.append((np.asarray(action), out[0], out[1], out[2], out[3]))
            return out

    agent.finetune(300, env=Recorder(env))
    assert agent.num_timesteps == 300 and agent.replay.online_size == 300
    assert agent._n_updates == updates_before + 2 * 300  # UTD 2
    mean, std = agent.policy.obs_mean.numpy(), agent.policy.obs_std.numpy()
    stored = agent.replay.stored("online")
    data = {name: stored[name].numpy() for name in stored}
    for i in (0, 150, 299):
        action, next_obs, reward, terminated, _ = seen[i]
        np.testing.assert_allclose(data["next_observations"][i], (next_obs - mean) / std, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(data["actions"][i], action, rtol=1e-6)
        assert data["rewards"][i] == pytest.approx(reward, rel=1e-6)
        assert data["terminations"][i] == float(terminated)
    # Consecutive steps inside an episode chain: s' of step i is s of step i + 1.
    done = [t or tr for *_, t, tr in seen]
    i = next(k for k in range(299) if not done[k])
    np.testing.assert_allclose(data["next_observations"][i], data["observations"][i + 1], atol=1e-6)
    # Only terminations are stored as done; Hopper falls, so some episodes terminated.
    assert sum(t for *_, t, _ in seen) == data["terminations"].sum() > 0


def test_batches_mix_offline_and_online_rows(hopper):
    agent = TD3BC(hopper, seed=0, online_mixing_ratio=0.25)
    agent.learn(1)
    agent.finetune(5)
    # Mark online rows so a batch tells where each row came from.
    agent.replay.write_column("rewards", 1e6, source="online")
    batch = agent.sample(256)
    from_online = (batch.rewards == 1e6).sum().item()
    assert from_online == 192  # 256 - round(0.25 * 256)
    agent.online_mixing_ratio = 1.0
    assert (agent.sample(64).rewards == 1e6).sum().item() == 0


def test_finetune_uses_the_datasets_env_and_counts_env_steps_for_callbacks(hopper):
    agent = make_agent("td3bc", hopper, seed=0)
    agent.learn(10)
    callback = EvalCallback(eval_freq=100, n_eval_episodes=2)
    agent.finetune(200, callback=callback)
    assert [e.step for e in callback.evaluations] == [100, 200]
    assert agent.ep_info_buffer and all(ep["l"] > 0 for ep in agent.ep_info_buffer)


def test_exploration_noise_is_seeded_and_bounded(hopper):
    agent = TD3BC(hopper, seed=3, exploration_noise=0.5)
    obs = hopper.observations[0].numpy()
    a = agent.explore(obs)
    b = TD3BC(hopper, seed=3, exploration_noise=0.5).explore(obs)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3,) and np.all(np.abs(a) <= 1.0)
    assert not np.allclose(a, agent.predict(obs, deterministic=True)[0])


def test_bad_finetune_settings_are_clear_errors(hopper, tmp_path):
    with pytest.raises(ValueError, match=r"online_mixing_ratio must be a number in \[0, 1\]"):
        TD3BC(hopper, online_mixing_ratio=1.5)
    with pytest.raises(ValueError, match="online_utd_ratio"):
        TD3BC(hopper, online_utd_ratio=0)
    agent = TD3BC(hopper, seed=0)
    with pytest.raises(ValueError, match="observation space"):
        agent.finetune(10, env=gym.make("HalfCheetah-v5"))
    agent.save(tmp_path / "a.zip")
    loaded = TD3BC.load(tmp_path / "a.zip")
    loaded.task = None
    with pytest.raises(ValueError, match="finetune\\(\\) needs an environment"):
        loaded.finetune(10)
    with pytest.raises(ValueError, match="has no dataset"):
        loaded.finetune(10, env=gym.make("Hopper-v5"))
    # Without offline data, online-only fine-tuning works.
    loaded.online_mixing_ratio = 0.0
    loaded.finetune(20, env=gym.make("Hopper-v5"))
    replay = loaded.replay
    assert replay.online_size == 20
    assert all(torch.isfinite(replay.column(name, source="online")).all() for name in replay.columns)


def test_rewards_are_transformed_offline_and_online(hopper):
    agent = TD3BC(hopper, seed=0, reward_scale=10.0, reward_bias=-5.0)
    agent.learn(0)
    torch.testing.assert_close(agent.replay.column("rewards"), hopper.rewards * 10.0 - 5.0)
    agent.finetune(3)
    online = agent.replay.column("rewards", source="online")[:3]
    assert torch.all(online != 0)
    raw = (online + 5.0) / 10.0  # Hopper's reward per step is about 1 near the start
    assert torch.all((raw > 0.5) & (raw < 1.5))


def test_whole_episode_columns_wait_for_the_episode_end(hopper):
    ends = []

    class WaitsForEpisodes(TD3BC):
        online_rows_wait_for_episode_end = True

        def _on_online_episode_end(self, start, stop):
            ends.append((start, stop, self.replay.online_ready))
            assert self.replay.online_size == stop

    agent = WaitsForEpisodes(hopper, seed=0, online_mixing_ratio=0.5)
    agent.learn(1)
    readies = []
    agent.finetune(60, env=gym.wrappers.TimeLimit(gym.make("Hopper-v5").unwrapped, max_episode_steps=25),
                   callback=lambda *_: readies.append(agent.replay.online_ready) or True)
    # Episodes of at most 25 steps: rows become sampleable exactly at each episode's last step.
    assert ends and ends[0][0] == 0 and all(start == prev_stop for (start, *_), (_, prev_stop, _) in zip(ends[1:], ends))
    assert all(ready == start for start, _, ready in ends)
    assert readies[ends[0][1] - 2] == 0 and readies[ends[0][1] - 1] == ends[0][1]
