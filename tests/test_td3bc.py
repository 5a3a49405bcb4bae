"""TD3+BC: losses against hand-computed values, update schedule, save/load, and a real offline run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo import TD3BC, evaluate_returns, load_dataset
from zoo.agents.replay import Batch
from zoo.datagen.behavior import vendored_behavior
from zoo.datagen.generate import make_behavior_dataset
from zoo.evaluation import EvalCallback, agent_predict

DATASET = "zoo/hopper/test-medium-v0"


@pytest.fixture(scope="module")
def hopper_root(tmp_path_factory):
    """A small real Hopper-v5 dataset from the vendored SAC behaviour actor, made once per module."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        make_behavior_dataset(DATASET, "Hopper-v5", vendored_behavior("hopper_sac_actor_0130000.pt"), 10_000, seed=0)
    return root


@pytest.fixture
def hopper(hopper_root, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(hopper_root))
    return load_dataset(DATASET, device="cpu")


def fixed_batch(obs_dim=11, act_dim=3, batch=4):
    g = torch.Generator().manual_seed(0)
    return Batch(
        observations=torch.randn(batch, obs_dim, generator=g),
        actions=torch.rand(batch, act_dim, generator=g) * 2 - 1,
        rewards=torch.tensor([1.0, -0.5, 2.0, 0.25])[:batch],
        next_observations=torch.randn(batch, obs_dim, generator=g),
        terminations=torch.tensor([0.0, 1.0, 0.0, 0.0])[:batch],
    )


def set_constant_output(mlp, bias_per_member):
    """Zero every weight of an EnsembleMLP; the output layer's bias then is the network's output."""
    with torch.no_grad():
        for layer in mlp.layers:
            layer.weight.zero_()
            layer.bias.zero_()
        mlp.layers[-1].bias.copy_(torch.as_tensor(bias_per_member, dtype=torch.float32).view_as(mlp.layers[-1].bias))


def test_critic_loss_by_hand(hopper):
    agent = TD3BC(hopper, seed=0, gamma=0.9)
    policy = agent.policy
    set_constant_output(policy.critic.net, [1.0, 2.0])  # Q1 = 1, Q2 = 2 everywhere
    set_constant_output(policy.critic_target.net, [3.0, 5.0])  # min target Q = 3
    batch = fixed_batch()
    loss, stats = agent.critic_loss(batch)
    q = agent.critic(batch.observations, batch.actions)
    assert stats["q_mean"].item() == 1.5
    # y = r + 0.9 * (1 - d) * 3 = [3.7, -0.5, 4.7, 2.95]
    y = np.array([1.0 + 2.7, -0.5, 2.0 + 2.7, 0.25 + 2.7])
    expected = np.mean((1.0 - y) ** 2) + np.mean((2.0 - y) ** 2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert q.shape == (2, 4)
    assert torch.equal(q, torch.tensor([[1.0] * 4, [2.0] * 4]))


def test_actor_loss_by_hand(hopper):
    agent = TD3BC(hopper, seed=0, alpha=2.5)
    policy = agent.policy
    set_constant_output(policy.critic.net, [4.0, -7.0])  # lambda uses Q1 only
    set_constant_output(policy.actor.net, [0.5, -0.25, 0.0])  # pi(s) = tanh(bias)
    batch = fixed_batch()
    pi = np.tanh([0.5, -0.25, 0.0])
    bc = np.mean((pi[None, :] - batch.actions.numpy()) ** 2)
    # lambda = 2.5 / |4| and -lambda * mean Q1 = -2.5
    assert agent.actor_loss(batch)[0].item() == pytest.approx(-2.5 + bc, rel=1e-6)


def test_losses_match_plain_pytorch_with_random_weights(hopper):
    """The batched ensemble computes what two separate MLPs with the same weights compute."""
    agent = TD3BC(hopper, seed=3, target_policy_noise=0.0)
    policy = agent.policy
    batch = fixed_batch()

    def mlp(net, member, x):
        *hidden, last = net.layers
        for layer in hidden:
            x = F.relu(x @ layer.weight[member] + layer.bias[member, 0])
        return x @ last.weight[member] + last.bias[member, 0]

    with torch.no_grad():
        next_a = torch.tanh(mlp(policy.actor_target.net, 0, batch.next_observations)).clamp(-1, 1)
        sa2 = torch.cat([batch.next_observations, next_a], 1)
        target_q = torch.minimum(mlp(policy.critic_target.net, 0, sa2), mlp(policy.critic_target.net, 1, sa2))[:, 0]
        y = batch.rewards + agent.gamma * (1 - batch.terminations) * target_q
        sa = torch.cat([batch.observations, batch.actions], 1)
        expected_critic = sum(F.mse_loss(mlp(policy.critic.net, i, sa)[:, 0], y) for i in (0, 1))
        pi = torch.tanh(mlp(policy.actor.net, 0, batch.observations))
        q1 = mlp(policy.critic.net, 0, torch.cat([batch.observations, pi], 1))[:, 0]
        expected_actor = -agent.alpha / q1.abs().mean() * q1.mean() + F.mse_loss(pi, batch.actions)
    assert agent.critic_loss(batch)[0].item() == pytest.approx(expected_critic.item(), rel=1e-5)
    assert agent.actor_loss(batch)[0].item() == pytest.approx(expected_actor.item(), rel=1e-5)


def test_actor_and_targets_update_every_policy_delay_steps(hopper):
    agent = TD3BC(hopper, seed=0, policy_delay=2)
    agent.learn(0)  # builds the device table
    actor0 = [p.detach().clone() for p in agent.actor.parameters()]
    critic0 = [p.detach().clone() for p in agent.critic.parameters()]
    target0 = [p.detach().clone() for p in agent.policy.critic_target.parameters()]
    agent.train(gradient_steps=1, batch_size=32)
    assert all(torch.equal(a, b) for a, b in zip(actor0, agent.actor.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(target0, agent.policy.critic_target.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(critic0, agent.critic.parameters()))
    agent.train(gradient_steps=1, batch_size=32)
    assert not all(torch.equal(a, b) for a, b in zip(actor0, agent.actor.parameters()))
    # Polyak: target = 0.995 target + 0.005 online, applied once.
    for before, target, online in zip(target0, agent.policy.critic_target.parameters(), agent.critic.parameters()):
        torch.testing.assert_close(target, before + 0.005 * (online - before))


def test_training_batches_are_normalised_and_scaled(hopper):
    agent = TD3BC(hopper, seed=0)
    agent.learn(0)
    mean, std = hopper.observation_statistics()
    torch.testing.assert_close(agent.policy.obs_mean, mean)
    torch.testing.assert_close(agent.policy.obs_std, std)
    torch.testing.assert_close(agent.replay.column("observations"), (hopper.observations - mean) / std)
    # Hopper's action bounds are [-1, 1]: scaling leaves actions as they are.
    torch.testing.assert_close(agent.replay.column("actions"), hopper.actions)


def test_save_load_gives_identical_actions(hopper, tmp_path):
    agent = TD3BC(hopper, seed=0)
    agent.learn(50)
    obs = hopper.observations[:16].numpy()
    before, _ = agent.predict(obs, deterministic=True)
    agent.save(tmp_path / "agent.zip")
    loaded = TD3BC.load(tmp_path / "agent.zip")
    after, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(before, after)
    assert loaded.alpha == agent.alpha and loaded.task == agent.task and loaded.dataset_id == DATASET
    torch.testing.assert_close(loaded.policy.obs_mean, agent.policy.obs_mean)
    # Training resumes on a dataset given at load time, keeping the saved normalisation.
    resumed = TD3BC.load(tmp_path / "agent.zip", dataset=hopper)
    resumed.learn(10)
    assert resumed.num_timesteps == 10


def test_load_into_mismatched_env_is_a_clear_error(hopper, tmp_path):
    import gymnasium as gym

    agent = TD3BC(hopper, seed=0)
    agent.save(tmp_path / "agent.zip")
    with pytest.raises(ValueError, match="observation space of the env .* does not match the agent"):
        TD3BC.load(tmp_path / "agent.zip", env=gym.make("HalfCheetah-v5"))


def test_learn_without_dataset_is_a_clear_error(hopper, tmp_path):
    agent = TD3BC(hopper, seed=0)
    agent.save(tmp_path / "agent.zip")
    with pytest.raises(ValueError, match="no dataset"):
        TD3BC.load(tmp_path / "agent.zip").learn(10)
    with pytest.raises(ValueError, match="needs a dataset"):
        TD3BC()


def test_offline_run_beats_random_policy(hopper):
    """A few thousand gradient steps on 10k medium transitions clear the random policy's score by far."""
    task = hopper.task
    rng = np.random.default_rng(0)
    random_returns = evaluate_returns(lambda obs: rng.uniform(-1, 1, (len(obs), 3)), task.env_id, 5, seed=100)
    random_score = float(np.mean(task.normalized_score(random_returns)))

    agent = TD3BC(hopper, seed=0)
    callback = EvalCallback(eval_freq=1500, n_eval_episodes=5)
    agent.learn(3000, callback=callback)
    assert [e.step for e in callback.evaluations] == [1500, 3000]
    score = callback.evaluations[-1].normalized_score
    assert random_score < 5
    assert score > random_score + 15, (score, random_score)
    # The evaluation helper and the callback agree on the same seeds.
    returns = evaluate_returns(agent_predict(agent), task.env_id, 5, seed=100)
    assert float(np.mean(task.normalized_score(returns))) == pytest.approx(score)


def test_a_failed_save_keeps_the_previous_checkpoint(hopper, tmp_path, monkeypatch):
    agent = TD3BC(hopper, seed=0)
    path = tmp_path / "agent.zip"
    agent.save(path)
    before = path.read_bytes()
    agent.learn(4)

    def broken(save_path, *args, **kwargs):  # writes half a file, then fails
        with open(save_path, "wb") as handle:
            handle.write(b"PK half a zip")
        raise OSError("disk full")

    monkeypatch.setattr("stable_baselines3.common.base_class.save_to_zip_file", broken)
    with pytest.raises(OSError, match="disk full"):
        agent.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.zip"]


def test_learning_rate_schedule_is_applied(hopper):
    agent = TD3BC(hopper, seed=0, learning_rate=lambda progress: 1e-3 * progress)
    agent.learn(10)
    # After the last step's update the remaining progress was 1/10 before the final gradient step.
    assert agent.policy.critic_optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert agent.policy.actor_optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_bf16_on_a_cpu_without_bf16_instructions_warns(tiny):
    """precision="bfloat16" warns, in one line, exactly where the CPU would emulate bf16 matrix products
    (26x slower than float32 for TD3+BC on an AVX2 CPU); float32 never warns."""
    import warnings

    from zoo.agents.base import cpu_multiplies_bf16

    dataset = load_dataset("zoo/hopper/tiny-v0", device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TD3BC(dataset, seed=0, device="cpu", precision="float32")
        TD3BC(dataset, seed=0, device="cpu", precision="bfloat16")
    warned = [w for w in caught if "bfloat16" in str(w.message)]
    messages = [str(w.message) for w in warned]
    if cpu_multiplies_bf16():
        assert messages == []
    else:
        assert len(messages) == 1 and "\n" not in messages[0]
        assert "use precision='float32'" in messages[0]
        # attributed to the line that chose the setting (this file), not to zoo's or SB3's code
        assert warned[0].filename == __file__
