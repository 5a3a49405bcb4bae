"""PSQN: shared-Q critics, the transition-prediction phase, the switch to TD3+BC, the frozen variant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_td3bc import fixed_batch, hopper, hopper_root  # noqa: F401
from zoo import TD3BC, evaluate_returns, make_agent
from zoo.agents.pretraining import TransitionPrediction
from zoo.evaluation import agent_predict
from zoo.nn import SharedQ


def test_shared_q_heads_sit_on_one_backbone_per_critic():
    torch.manual_seed(0)
    critic = SharedQ(11, 3, n_critics=2, hidden=(8, 8))
    obs, act = torch.randn(5, 11), torch.randn(5, 3)
    z = critic.features(obs, act)
    assert z.shape == (2, 5, 8) and (z >= 0).all()
    for i in range(2):
        x = torch.cat([obs, act], 1)
        h = torch.relu(x @ critic.backbone.layers[0].weight[i] + critic.backbone.layers[0].bias[i, 0])
        h = torch.relu(h @ critic.backbone.layers[1].weight[i] + critic.backbone.layers[1].bias[i, 0])
        q = h @ critic.q_head.weight[i] + critic.q_head.bias[i, 0]
        s2 = h @ critic.transition_head.weight[i] + critic.transition_head.bias[i, 0]
        torch.testing.assert_close(critic(obs, act)[i], q[:, 0])
        torch.testing.assert_close(critic.predict_next_observation(obs, act)[i], s2)


def test_transition_loss_by_hand(hopper):
    agent = make_agent("psqn", hopper, seed=0)
    critic = agent.critic
    with torch.no_grad():
        for p in critic.parameters():
            p.zero_()
        critic.transition_head.bias[0, 0].fill_(1.0)  # critic 1 predicts s' = 1 everywhere
        critic.transition_head.bias[1, 0].fill_(-2.0)  # critic 2 predicts s' = -2
    batch = fixed_batch()
    s2 = batch.next_observations.numpy()
    expected = np.mean((1.0 - s2) ** 2) + np.mean((-2.0 - s2) ** 2)
    assert agent.pretraining.critic_loss(agent, batch)[0].item() == pytest.approx(expected, rel=1e-6)


def test_the_target_is_the_normalised_next_state(hopper):
    agent = make_agent("psqn", hopper, seed=0)
    agent.learn(0)
    mean, std = hopper.observation_statistics()
    torch.testing.assert_close(agent.replay.column("next_observations"), (hopper.next_observations - mean) / std)


def test_phase_switch_at_ten_percent_of_the_budget(hopper):
    agent = make_agent("psqn", hopper, seed=0)
    assert agent.pretrain_steps == 0.1 and isinstance(agent.pretraining, TransitionPrediction)
    critic = agent.critic
    snapshot = lambda module: [p.detach().clone() for p in module.parameters()]  # noqa: E731
    q_head, transition_head, actor = snapshot(critic.q_head), snapshot(critic.transition_head), snapshot(agent.actor)
    calls = []
    original = agent.pretraining.update
    agent.pretraining.update = lambda a, b: (calls.append(a._n_updates), original(a, b))
    agent.learn(20)
    assert agent.pretrain_until == 2 and calls == [1, 2]
    # Q heads got no gradient during pretraining, the actor was trained on step 2 as in the official code.
    agent2 = make_agent("psqn", hopper, seed=0)
    agent2.learn(20, callback=lambda *_: agent2.num_timesteps < 2)  # stop after the 2 pretraining steps
    assert agent2.num_timesteps == 2
    assert all(torch.equal(a, b) for a, b in zip(q_head, agent2.critic.q_head.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(transition_head, agent2.critic.transition_head.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(actor, agent2.actor.parameters()))
    # After the switch the transition heads idle and the Q heads learn.
    before = snapshot(agent2.critic.transition_head)
    q_before = snapshot(agent2.critic.q_head)
    agent2.train(gradient_steps=3, batch_size=32)
    assert all(torch.equal(a, b) for a, b in zip(before, agent2.critic.transition_head.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(q_before, agent2.critic.q_head.parameters()))


def test_frozen_backbone_variant(hopper, tmp_path):
    agent = make_agent("psqn", hopper, seed=0, pretrain_steps=2, pretrain_kwargs={"freeze_backbone": True})
    agent.learn(2)
    backbone = [p.detach().clone() for p in agent.critic.backbone.parameters()]
    agent.learn(4, reset_num_timesteps=False)
    assert all(torch.equal(a, b) for a, b in zip(backbone, agent.critic.backbone.parameters()))
    assert agent.critic.q_head.weight.requires_grad
    agent.save(tmp_path / "frozen.zip")
    loaded = TD3BC.load(tmp_path / "frozen.zip", dataset=hopper)
    assert not any(p.requires_grad for p in loaded.critic.backbone.parameters())


def test_transition_pretraining_needs_a_shared_q_critic(hopper):
    with pytest.raises(ValueError, match="shared_q"):
        TD3BC(hopper, pretrain="transition", pretrain_steps=10)
    with pytest.raises(ValueError, match="share of the budget in"):
        make_agent("psqn", hopper, pretrain_steps=1.5)


def test_save_load_identical_actions(hopper, tmp_path):
    agent = make_agent("psqn", hopper, seed=0)
    agent.learn(30)
    agent.save(tmp_path / "psqn.zip")
    loaded = TD3BC.load(tmp_path / "psqn.zip")
    obs = hopper.observations[:8].numpy()
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.pretrain_until == 3 and isinstance(loaded.critic, SharedQ)


def test_short_run_improves_on_its_starting_score(hopper):
    agent = make_agent("psqn", hopper, seed=0)
    task = hopper.task
    start = task.normalized_score(evaluate_returns(agent_predict(agent), task.env_id, 3, seed=100)).mean()
    agent.learn(1500)
    end = task.normalized_score(evaluate_returns(agent_predict(agent), task.env_id, 3, seed=100)).mean()
    assert end > start + 15, (start, end)


def test_psqn_on_td3_for_exorl(hopper):
    from zoo.agents import TD3

    agent = make_agent("psqn", hopper, base="td3", seed=0)
    assert type(agent) is TD3 and isinstance(agent.pretraining, TransitionPrediction)
    batch = fixed_batch()
    with torch.no_grad():
        for p in agent.critic.parameters():
            p.zero_()
        agent.critic.q_head.bias[0, 0].fill_(3.0)
    # Plain TD3 actor loss: -mean Q_1(s, pi(s)), no BC term.
    assert agent.actor_loss(batch)[0].item() == pytest.approx(-3.0)
    agent.learn(20)
    assert agent.pretrain_until == 2
    with pytest.raises(ValueError, match="'psqn' cannot be built on 'edac'. Supported bases: calql, cql, td3, td3bc"):
        make_agent("psqn", hopper, base="edac")


def test_psqn_on_calql_pretrains_the_shared_critics_then_hands_over(hopper):
    from zoo import CalQL

    agent = make_agent("psqn", hopper, base="calql", seed=0, batch_size=32, n_actions=2,
                       policy_kwargs=dict(net_arch=[32, 32]))
    assert isinstance(agent, CalQL) and isinstance(agent.critic, SharedQ) and agent.pretrain_steps == 0.1
    snapshot = lambda module: [p.detach().clone() for p in module.parameters()]  # noqa: E731
    q_head, transition_head = snapshot(agent.critic.q_head), snapshot(agent.critic.transition_head)
    # 20 steps: updates 1-2 predict the next state, then Cal-QL's own critic loss (with the bound).
    agent.learn(20, callback=lambda *_: agent.num_timesteps < 2)
    assert agent.pretrain_until == 2 and agent.num_timesteps == 2
    assert all(torch.equal(a, b) for a, b in zip(q_head, agent.critic.q_head.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(transition_head, agent.critic.transition_head.parameters()))
    before, q_before = snapshot(agent.critic.transition_head), snapshot(agent.critic.q_head)
    agent.train(gradient_steps=3, batch_size=32)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.critic.transition_head.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(q_before, agent.critic.q_head.parameters()))
    assert "calql_bound_rate" in agent._stat_sums  # the calibrated loss ran after the switch
    # The frozen variant keeps the backbone fixed under the SAC-family update too.
    frozen = make_agent("psqn", hopper, base="cql", seed=0, batch_size=32, n_actions=2,
                        pretrain_kwargs={"freeze_backbone": True}, policy_kwargs=dict(net_arch=[32, 32]))
    frozen.learn(10)
    backbone = snapshot(frozen.critic.backbone)
    frozen.train(gradient_steps=3, batch_size=32)
    assert all(torch.equal(a, b) for a, b in zip(backbone, frozen.critic.backbone.parameters()))
