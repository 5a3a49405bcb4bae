"""The SAC family's base: tanh-Gaussian log-probabilities, SAC-N losses by hand, temperature, save/load."""

from __future__ import annotations

import math

import pytest
import torch

from tests.test_td3bc import fixed_batch, hopper, hopper_root, set_constant_output  # noqa: F401
from zoo.agents.sac import SAC
from zoo.nn import TanhGaussianActor, initialize
from zoo.nn.ensemble import EnsembleMLP


def test_tanh_gaussian_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    actor = TanhGaussianActor(5, 3, hidden=(16,), learnable_log_std_scale=True)
    obs = torch.randn(7, 5)
    actions, log_prob = actor(obs)
    mean, std = actor.distribution(obs)
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, std), torch.distributions.TanhTransform(cache_size=1)
    )
    torch.testing.assert_close(log_prob, reference.log_prob(actions).sum(-1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(actor.log_prob(obs, actions), log_prob, rtol=1e-4, atol=1e-3)
    # K samples per state share mu and sigma; the deterministic action is tanh(mu).
    many, many_log_prob = actor(obs, n_samples=4)
    assert many.shape == (4, 7, 3) and many_log_prob.shape == (4, 7)
    torch.testing.assert_close(actor(obs, deterministic=True)[0], torch.tanh(mean))


def test_learnable_log_std_scale_starts_as_jaxcql():
    actor = TanhGaussianActor(4, 2, hidden=(8,), learnable_log_std_scale=True)
    set_constant_output(actor.net, [[0.3, -0.2, 0.5, -30.0]])  # mu = (0.3, -0.2); raw log sigma = (0.5, -30)
    mean, std = actor.distribution(torch.zeros(1, 4))
    torch.testing.assert_close(mean, torch.tensor([[0.3, -0.2]]))
    # log sigma = 1 * raw - 1, clipped to [-20, 2]
    torch.testing.assert_close(std, torch.tensor([[math.exp(-0.5), math.exp(-20.0)]]))


def test_orthogonal_and_edac_initialisation():
    torch.manual_seed(0)
    mlp = EnsembleMLP(2, 6, 1, (8, 8))
    initialize(mlp, "orthogonal")
    w = mlp.layers[1].weight[1]  # (in, out) = (8, 8): orthogonal with gain sqrt(2)
    torch.testing.assert_close(w.T @ w, 2.0 * torch.eye(8), atol=1e-5, rtol=0)
    assert mlp.layers[-1].weight.abs().max() <= 1e-2 + 1e-7 and mlp.layers[0].bias.abs().max() == 0
    initialize(mlp, "edac", output_bound=3e-3)
    assert (mlp.layers[0].bias == 0.1).all() and mlp.layers[-1].weight.abs().max() <= 3e-3
    with pytest.raises(ValueError, match="Unknown initialisation"):
        initialize(mlp, "xavier")


def test_sac_losses_by_hand(hopper):
    agent = SAC(hopper, seed=0, gamma=0.9, policy_kwargs=dict(n_critics=3))
    policy = agent.policy
    set_constant_output(policy.critic.net, [1.0, 2.0, 4.0])
    set_constant_output(policy.critic_target.net, [3.0, 5.0, 7.0])  # min target Q = 3
    set_constant_output(policy.actor.net, [[0.0] * 3 + [math.log(0.5)] * 3])  # mu 0, sigma 0.5
    with torch.no_grad():
        policy.log_alpha.fill_(math.log(0.2))
    batch = fixed_batch()
    alpha = agent.alpha
    # Critic: y = r + 0.9 (1 - d) (3 - 0.2 log pi(a'|s')); log pi(a'|s') is checked through its own value.
    agent.random.manual_seed(1)  # the agent's own generator: the actor draws the same a' twice
    loss, stats = agent.critic_loss(batch, alpha)
    agent.random.manual_seed(1)
    _, next_log_prob = policy.actor(batch.next_observations)
    y = batch.rewards + 0.9 * (1 - batch.terminations) * (3.0 - 0.2 * next_log_prob)
    expected = sum(((c - y) ** 2).mean() for c in (1.0, 2.0, 4.0))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    agent.backup_entropy = False
    loss, _ = agent.critic_loss(batch, alpha)
    y = batch.rewards + 0.9 * (1 - batch.terminations) * 3.0
    assert loss.item() == pytest.approx(sum(((c - y) ** 2).mean() for c in (1.0, 2.0, 4.0)).item(), rel=1e-5)
    # Actor: mean(alpha log pi - min_i Q_i) = mean(0.2 log pi) - 1; temperature: -log_alpha * mean(log pi - 3).
    actions, log_prob = policy.actor(batch.observations)
    actor_loss, _ = agent.actor_loss(batch, actions, log_prob, alpha)
    assert actor_loss.item() == pytest.approx((0.2 * log_prob - 1.0).mean().item(), rel=1e-5)
    alpha_loss, _ = agent.alpha_loss(log_prob)
    assert alpha_loss.item() == pytest.approx((-math.log(0.2) * (log_prob + -3.0)).mean().item(), rel=1e-5)


def test_one_update_steps_every_part_and_fixed_alpha_stays(hopper):
    agent = SAC(hopper, seed=0, ent_coef=0.05, batch_size=32, policy_kwargs=dict(net_arch=[32, 32]))
    agent.learn(0)
    before = {name: p.detach().clone() for name, p in agent.policy.named_parameters()}
    agent.train(gradient_steps=1, batch_size=32)
    changed = {name for name, p in agent.policy.named_parameters() if not torch.equal(before[name], p)}
    assert any(n.startswith("actor.") for n in changed) and any(n.startswith("critic.") for n in changed)
    assert any(n.startswith("critic_target.") for n in changed)
    assert "log_alpha" not in changed and agent.alpha.item() == pytest.approx(0.05)
    auto = SAC(hopper, seed=0, ent_coef="auto_0.5", batch_size=32, policy_kwargs=dict(net_arch=[32, 32]))
    auto.learn(3)
    assert auto.alpha.item() != pytest.approx(0.5) and auto.alpha.item() == pytest.approx(0.5, rel=0.01)


def test_save_load_gives_identical_actions(hopper, tmp_path):
    agent = SAC(hopper, seed=3, actor_learning_rate=1e-4, policy_kwargs=dict(net_arch=[32, 32], n_critics=4))
    agent.learn(5)
    agent.save(tmp_path / "sac")
    loaded = SAC.load(tmp_path / "sac", dataset=hopper)
    obs = hopper.observations[:16].numpy()
    assert (agent.predict(obs, deterministic=True)[0] == loaded.predict(obs, deterministic=True)[0]).all()
    assert loaded.policy.critic.n_critics == 4
    assert loaded.policy.actor_optimizer.param_groups[0]["lr"] == 1e-4
    assert loaded.policy.critic_optimizer.param_groups[0]["lr"] == 3e-4


def test_bad_entropy_settings_are_clear_errors(hopper):
    with pytest.raises(ValueError, match="ent_coef"):
        SAC(hopper, ent_coef="learned")
    with pytest.raises(ValueError, match="ent_coef must be .* a fixed number > 0"):
        SAC(hopper, ent_coef=0.0)
