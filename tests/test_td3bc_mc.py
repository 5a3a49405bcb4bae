"""First imitate, then improve (td3bc-mc): MC critic and BC losses, lambda mixing, the phase switch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_td3bc import DATASET, fixed_batch, hopper, hopper_root, set_constant_output  # noqa: F401
from zoo import TD3BC, evaluate_returns, make_agent
from zoo.agents.pretraining import Imitation
from zoo.evaluation import agent_predict


def with_returns(batch, returns):
    return batch.replace(returns_to_go=torch.tensor(returns, dtype=torch.float32))


def test_key_defaults_are_the_papers(hopper):
    agent = make_agent("td3bc-mc", hopper, seed=0)
    assert agent.pretrain == "imitate" and agent.pretrain_steps == 10_000
    assert isinstance(agent.pretraining, Imitation) and agent.pretraining.td_weight == 0.0
    assert [layer.out_features for layer in agent.actor.net.layers] == [256, 256, 256, 3]
    assert [layer.out_features for layer in agent.critic.net.layers] == [256, 256, 1]
    assert agent.actor.net.layer_norm and agent.critic.net.layer_norm
    # LayerNorm without affine parameters: nothing but the linear layers' weights and biases.
    assert len(list(agent.actor.parameters())) == 2 * 4
    # Keyword arguments go on top of the key's defaults; policy_kwargs merge key by key.
    custom = make_agent("td3bc-mc", hopper, pretrain_steps=50, policy_kwargs={"actor_layer_norm": False})
    assert custom.pretrain_steps == 50 and not custom.actor.net.layer_norm and custom.critic.net.layer_norm


def test_monte_carlo_critic_loss_by_hand(hopper):
    agent = make_agent("td3bc-mc", hopper, seed=0)
    set_constant_output(agent.critic.net, [1.0, 2.0])
    batch = with_returns(fixed_batch(), [10.0, -1.0, 0.0, 2.0])
    g = np.array([10.0, -1.0, 0.0, 2.0])
    expected = np.mean((1.0 - g) ** 2) + np.mean((2.0 - g) ** 2)
    assert agent.pretraining.critic_loss(agent, batch)[0].item() == pytest.approx(expected, rel=1e-6)


def test_bc_actor_loss_by_hand(hopper):
    agent = make_agent("td3bc-mc", hopper, seed=0)
    set_constant_output(agent.actor.net, [0.3, 0.0, -0.6])
    batch = fixed_batch()
    expected = np.mean((np.tanh([0.3, 0.0, -0.6])[None] - batch.actions.numpy()) ** 2)
    assert agent.pretraining.actor_loss(agent, batch)[0].item() == pytest.approx(expected, rel=1e-6)


def test_td_mixing_is_loss_normalised(hopper):
    """(1-l) L_MC/sg(L_MC) + l L_TD/sg(L_TD): value 1, gradient the normalised mix of both gradients."""
    agent = make_agent("td3bc-mc", hopper, seed=0, pretrain_kwargs={"td_weight": 0.25}, target_policy_noise=0.0)
    batch = with_returns(fixed_batch(), [10.0, -1.0, 0.0, 2.0])
    params = list(agent.critic.parameters())
    mixed, _ = agent.pretraining.critic_loss(agent, batch)
    assert mixed.item() == pytest.approx(1.0, rel=1e-6)
    grads = torch.autograd.grad(mixed, params)
    mc = (agent.critic(batch.observations, batch.actions) - batch.returns_to_go).pow(2).mean(1).sum()
    td, _ = agent.critic_loss(batch)
    mc_grads = torch.autograd.grad(mc, params)
    td_grads = torch.autograd.grad(td, params)
    for g, gm, gt in zip(grads, mc_grads, td_grads):
        torch.testing.assert_close(g, 0.75 * gm / mc.detach() + 0.25 * gt / td.detach(), rtol=1e-4, atol=1e-7)


def test_returns_to_go_column_uses_the_timeout_tail(hopper):
    agent = make_agent("td3bc-mc", hopper, seed=0)
    agent.learn(0)
    torch.testing.assert_close(agent.replay.column("returns_to_go"), hopper.returns_to_go(0.99, timeout_tail=True))


def test_phase_switch_happens_after_pretrain_steps(hopper):
    agent = make_agent("td3bc-mc", hopper, seed=0, pretrain_steps=3)
    agent.learn(0)
    calls = []
    original = agent.pretraining.update
    agent.pretraining.update = lambda a, b: (calls.append(a._n_updates), original(a, b))
    actor_before = [p.detach().clone() for p in agent.actor.parameters()]
    agent.train(gradient_steps=1, batch_size=32)
    # Pretraining updates the actor on every step (no policy delay).
    assert not all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    agent.train(gradient_steps=4, batch_size=32)
    assert calls == [1, 2, 3]
    assert agent._n_updates == 5
    assert "actor_loss" in agent._stat_sums and agent._stat_counts["actor_loss"] == 1  # update 4 only
    assert agent._stat_counts["pretrain_critic_loss"] == 3


def test_bad_pretraining_settings_fail_at_construction(hopper):
    with pytest.raises(ValueError, match="pretrain='imitation' .*one of the pretraining recipes 'imitate'"):
        TD3BC(hopper, pretrain="imitation", pretrain_steps=10)
    with pytest.raises(ValueError, match="needs pretrain_steps > 0"):
        TD3BC(hopper, pretrain="imitate")
    with pytest.raises(ValueError, match=r"td_weight must be a number in \[0, 1\]"):
        TD3BC(hopper, pretrain="imitate", pretrain_steps=10, pretrain_kwargs={"td_weight": 1.5})


def test_save_load_keeps_the_recipe(hopper, tmp_path):
    agent = make_agent("td3bc-mc", hopper, seed=0, pretrain_steps=20)
    agent.learn(25)
    agent.save(tmp_path / "mc.zip")
    loaded = TD3BC.load(tmp_path / "mc.zip", dataset=hopper)
    assert loaded.pretrain == "imitate" and loaded.pretrain_steps == 20 and isinstance(loaded.pretraining, Imitation)
    obs = hopper.observations[:8].numpy()
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])


def test_short_run_improves_on_its_starting_score(hopper):
    agent = make_agent("td3bc-mc", hopper, seed=0, pretrain_steps=1000)
    task = hopper.task
    start = task.normalized_score(evaluate_returns(agent_predict(agent), task.env_id, 3, seed=100)).mean()
    agent.learn(1500)
    end = task.normalized_score(evaluate_returns(agent_predict(agent), task.env_id, 3, seed=100)).mean()
    assert end > start + 15, (start, end)
