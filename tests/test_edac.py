"""EDAC and its first-imitate variant (edac-mc): the diversity term by hand, soft Monte-Carlo returns by
hand, the phases of "soft-imitate", save/load, YAML settings, and short runs on the real Hopper data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import TINY_ID
from tests.test_td3bc import fixed_batch, hopper, hopper_root, set_constant_output  # noqa: F401
from zoo import EDAC, evaluate_returns, load_dataset, make_agent
from zoo.agents.pretraining import SoftImitation
from zoo.agents.sac import SAC
from zoo.agents.td3 import TD3
from zoo.config import load_hyperparams
from zoo.evaluation import agent_predict
from zoo.registry import make_population

SMALL = dict(net_arch=[16, 16], n_critics=3)


def explicit_diversity(critic, observations, actions):
    """ES with one autograd call per member: 1/(N-1) sum_{i != j} <g_i, g_j>, g_i = unit grad_a Q_i."""
    n = critic.n_critics
    grads = []
    for i in range(n):
        a = actions.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(critic(observations, a, members=slice(i, i + 1)).sum(), a, create_graph=True)
        grads.append(g / (g.norm(dim=1, keepdim=True) + 1e-10))
    pairs = sum((grads[i] * grads[j]).sum(1) for i in range(n) for j in range(n) if i != j)
    return pairs.mean() / (n - 1)


def reference_soft_returns(rewards, entropies, episodes, gamma, alpha):
    """The official per-episode loop (EfficientOfflineRL compute_soft_returns_to_go), in plain Python.

    episodes: (length, tail) pairs in order; tail: the episode did not terminate."""
    out, start = [], 0
    for length, tail in episodes:
        r = list(rewards[start:start + length])
        h = list(entropies[start:start + length])
        if tail:
            r[-1], h[-1] = r[-1] / (1 - gamma), h[-1] / (1 - gamma)
        for t in range(length):
            reward_part = sum(gamma**k * r[t + k] for k in range(length - t))
            entropy_part = sum(gamma**k * h[t + k] for k in range(1, length - t))
            out.append(reward_part + alpha * entropy_part)
        start += length
    return np.array(out)


# ---------------------------------------------------------------- EDAC


def test_defaults_are_the_papers(hopper):
    agent = EDAC(hopper, seed=0)
    critic, actor = agent.critic.net, agent.actor.net
    assert agent.eta == 1.0 and agent.critic.n_critics == 10 and agent.backup_entropy
    assert [layer.out_features for layer in critic.layers] == [256, 256, 256, 1]
    assert [layer.out_features for layer in actor.layers] == [256, 256, 256, 6]
    assert all((layer.bias == 0.1).all() for net in (critic, actor) for layer in net.layers[:-1])
    assert critic.layers[-1].weight.abs().max() <= 3e-3 and actor.layers[-1].weight.abs().max() <= 1e-3
    assert agent.actor.log_std_bounds == (-5.0, 2.0) and not critic.layer_norm
    assert not agent.normalize_observations and (agent.policy.obs_std == 1).all()
    # The edac-mc key: soft imitation for 20k steps (half BC), LayerNorm, normalised observations.
    mc = make_agent("edac-mc", hopper, seed=0, policy_kwargs={"n_critics": 5})
    assert mc.pretrain == "soft-imitate" and mc.pretrain_steps == 20_000 and mc.normalize_observations
    assert isinstance(mc.pretraining, SoftImitation) and mc.pretraining.bc_fraction == 0.5
    assert mc.pretraining.td_weight == 0.0 and mc.critic.n_critics == 5
    assert mc.actor.net.layer_norm and mc.critic.net.layer_norm and len(mc.critic.net.layers) == 4


def test_diversity_term_by_hand_with_linear_critics(hopper):
    """Q_i(s, a) = w_i . a: grad_a Q_i = w_i whatever (s, a), so ES is the pairwise cosines of the w_i."""
    agent = EDAC(hopper, seed=0, policy_kwargs=dict(net_arch=(), actor_net_arch=[16], n_critics=3))
    w = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [-3.0, 0.0, 0.0]])
    layer = agent.critic.net.layers[0]  # the only layer: (3 members, 11 + 3 inputs, 1 output)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        layer.weight[:, 11:, 0] = w
    batch = fixed_batch()
    q, diversity = agent.q_and_diversity(batch.observations, batch.actions)
    torch.testing.assert_close(q, w @ batch.actions.T)
    # cosines: (1, 2) 1/sqrt(2), (1, 3) -1, (2, 3) -1/sqrt(2); both orders, / (N - 1) = 2 -> -1
    assert diversity.item() == pytest.approx(-1.0, abs=1e-6)
    assert explicit_diversity(agent.critic, batch.observations, batch.actions).item() == pytest.approx(-1.0, abs=1e-6)
    # Two critics pointing the same way: 2 ordered pairs of cosine 1, / (N - 1) = 1.
    twins = EDAC(hopper, seed=0, policy_kwargs=dict(net_arch=(), actor_net_arch=[16], n_critics=2))
    with torch.no_grad():
        twins.critic.net.layers[0].weight.zero_()
        twins.critic.net.layers[0].weight[:, 11:, 0] = torch.tensor([[0.5, -1.0, 2.0], [1.0, -2.0, 4.0]])
    assert twins.q_and_diversity(batch.observations, batch.actions)[1].item() == pytest.approx(2.0, rel=1e-6)


def test_diversity_term_matches_per_member_autograd(hopper):
    """One backward over per-member action copies = N separate autograd calls, in value and in gradient."""
    agent = EDAC(hopper, seed=1, policy_kwargs=dict(net_arch=[16, 16], n_critics=4, critic_layer_norm=True))
    g = torch.Generator().manual_seed(2)
    obs, actions = torch.randn(32, 11, generator=g), torch.rand(32, 3, generator=g) * 2 - 1
    params = list(agent.critic.parameters())
    _, diversity = agent.q_and_diversity(obs, actions)
    expected = explicit_diversity(agent.critic, obs, actions)
    assert diversity.item() == pytest.approx(expected.item(), rel=1e-5)
    grad = lambda x: torch.autograd.grad(x, params, allow_unused=True, materialize_grads=True)
    for got, want in zip(grad(diversity), grad(expected)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_critic_loss_is_td_plus_eta_times_diversity(hopper):
    agent = EDAC(hopper, seed=0, eta=2.5, gamma=0.9, policy_kwargs=SMALL)
    batch = fixed_batch()
    alpha = agent.alpha
    params = list(agent.critic.parameters())
    agent.random.manual_seed(1)
    loss, stats = agent.critic_loss(batch, alpha)
    agent.random.manual_seed(1)
    td, td_stats = SAC.critic_loss(agent, batch, alpha)  # SAC-N's TD loss, same a' ~ pi(s')
    es = explicit_diversity(agent.critic, batch.observations, batch.actions)
    assert loss.item() == pytest.approx((td + 2.5 * es).item(), rel=1e-5)
    torch.testing.assert_close(stats["q_mean"], td_stats["q_mean"])
    torch.testing.assert_close(stats["critic_td_loss"], td)
    q, _ = agent.q_and_diversity(batch.observations, batch.actions)
    torch.testing.assert_close(q, agent.critic(batch.observations, batch.actions))
    grad = lambda x: torch.autograd.grad(x, params, allow_unused=True, materialize_grads=True)
    for got, a, b in zip(grad(loss), grad(td), grad(es)):
        torch.testing.assert_close(got, a + 2.5 * b, rtol=1e-4, atol=1e-6)
    # Constant critics have no action gradient: ES = 0 (not NaN) and the loss is the hand-computed TD loss.
    set_constant_output(agent.critic.net, [1.0, 2.0, 4.0])
    set_constant_output(agent.policy.critic_target.net, [3.0, 5.0, 7.0])
    agent.random.manual_seed(1)
    loss, _ = agent.critic_loss(batch, alpha)
    agent.random.manual_seed(1)
    _, next_log_prob = agent.actor(batch.next_observations)
    y = batch.rewards + 0.9 * (1 - batch.terminations) * (3.0 - alpha * next_log_prob)
    assert loss.item() == pytest.approx(sum(((c - y) ** 2).mean() for c in (1.0, 2.0, 4.0)).item(), rel=1e-5)
    # eta = 0 is SAC-N.
    sac_n = EDAC(hopper, seed=0, eta=0.0, policy_kwargs=SMALL)
    sac_n.random.manual_seed(1)
    loss, _ = sac_n.critic_loss(batch, alpha)
    sac_n.random.manual_seed(1)
    assert loss.item() == SAC.critic_loss(sac_n, batch, alpha)[0].item()


def test_a_population_member_with_eta_zero_trains_as_sac_n_while_its_neighbour_pays_the_diversity(hopper):
    """Per-member eta: in a population with eta = (0, 2), member 0 (0 * its own ES) trains as a population of
    one with eta = 0 (SAC-N's loss, no diversity computed) and member 1 as one with eta = 2; with eta = 2,
    member 0's seed trains otherwise, so the weight really reaches only its member."""
    kwargs = dict(batch_size=32, policy_kwargs=dict(net_arch=[32, 32], n_critics=3))
    population = make_population("edac", hopper, [3, 5], members=[{"eta": 0.0}, {"eta": 2.0}], **kwargs)
    assert torch.equal(population.eta, torch.tensor([0.0, 2.0]))
    population.learn(12)

    def difference(a, b):
        sa, sb = a.policy.state_dict(), b.policy.state_dict()
        return max((sa[name] - sb[name]).abs().max().item() for name in sa)

    for k, (seed, eta) in enumerate([(3, 0.0), (5, 2.0)]):
        alone = make_population("edac", hopper, [seed], eta=eta, **kwargs)
        assert alone.sac_n == (eta == 0.0)
        alone.learn(12)
        assert difference(population.member(k), alone.member(0)) <= 1e-6
    other = make_population("edac", hopper, [3], eta=2.0, **kwargs)
    other.learn(12)
    assert difference(population.member(0), other.member(0)) > 1e-4


# ---------------------------------------------------------------- soft Monte-Carlo returns


def test_soft_returns_by_hand():
    # Episode 1 terminates after 3 steps; episode 2 (2 steps) ends on a time limit: tail / (1 - gamma).
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    entropies = torch.tensor([0.5, 0.25, 1.0, 2.0, 3.0])
    last = torch.tensor([False, False, True, False, True])
    tail = torch.tensor([False, False, False, False, True])
    returns = SoftImitation.soft_returns_to_go(rewards, entropies, last, tail, gamma=0.5, alpha=0.2)
    # G_2 = 3 (no entropy of its own step); G_1 = 2 + .5*3 + .2*(.5*1) = 3.6;
    # G_0 = 1 + .5*2 + .25*3 + .2*(.5*.25 + .25*1) = 2.825; G_4 = 5/.5 = 10; G_3 = 4 + .5*10 + .2*(.5*3/.5) = 9.6
    torch.testing.assert_close(returns, torch.tensor([2.825, 3.6, 3.0, 9.6, 10.0]))


def test_soft_returns_match_the_official_loop_on_long_episodes():
    g = torch.Generator().manual_seed(0)
    episodes = [(1, True), (37, False), (5, True), (100, True), (2, False), (64, True)]
    n = sum(length for length, _ in episodes)
    rewards, entropies = torch.randn(n, generator=g), torch.rand(n, generator=g) * 3 - 1
    ends = np.cumsum([length for length, _ in episodes])
    last = torch.zeros(n, dtype=torch.bool)
    last[ends - 1] = True
    tail = torch.zeros(n, dtype=torch.bool)
    tail[[end - 1 for end, (_, t) in zip(ends, episodes) if t]] = True
    returns = SoftImitation.soft_returns_to_go(rewards, entropies, last, tail, 0.99, 0.3, max_length=100)
    expected = reference_soft_returns(rewards.tolist(), entropies.tolist(), episodes, 0.99, 0.3)
    np.testing.assert_allclose(returns.numpy(), expected, rtol=1e-5, atol=1e-4)


def tiny_agent(dataset, **kwargs):
    return EDAC(dataset, seed=0, gamma=0.9, batch_size=4, pretrain="soft-imitate", pretrain_steps=4,
                policy_kwargs=dict(net_arch=[8], n_critics=2), **kwargs)


def test_table_column_is_filled_at_the_switch_with_the_actors_entropies(tiny):
    """Episode 0 terminates (no tail), episode 1 is truncated and episode 2 ends the dataset (tails)."""
    agent = tiny_agent(load_dataset(TINY_ID, device="cpu"), reward_scale=2.0, ent_coef=0.3)
    agent.learn(0)
    assert (agent.replay.column("soft_returns_to_go") == 0).all()  # the placeholder
    agent.random.manual_seed(5)
    agent.pretraining.fill_soft_returns(agent)
    agent.random.manual_seed(5)
    entropies = -agent.actor(agent.replay.column("observations"))[1]
    rewards = 2.0 * np.array([1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 24, 25], dtype=float)  # reward_scale 2
    expected = reference_soft_returns(rewards, entropies.tolist(), [(4, False), (3, True), (5, True)], 0.9, 0.3)
    np.testing.assert_allclose(agent.replay.column("soft_returns_to_go").numpy(), expected, rtol=1e-5)


def test_a_transition_subset_takes_missing_entropies_from_the_next_kept_state(tiny):
    dataset = load_dataset(TINY_ID, fraction=0.5, seed=1, device="cpu")
    kept = dataset._source_index.tolist()
    agent = tiny_agent(dataset, ent_coef=0.3)
    agent.learn(0)
    layout = agent.pretraining.source
    # Expected stand-in row per source position, by the rule: next kept in the episode, else last kept before.
    expected = []
    for start, end in ((0, 4), (4, 7), (7, 12)):
        mine = [p for p in kept if start <= p < end]
        for j in range(start, end):
            later, earlier = [p for p in mine if p >= j], [p for p in mine if p < j]
            source = later[0] if later else (earlier[-1] if earlier else None)
            expected.append(-1 if source is None else kept.index(source))
    assert layout["rows"].tolist() == expected
    agent.random.manual_seed(5)
    agent.pretraining.fill_soft_returns(agent)
    agent.random.manual_seed(5)
    entropies = (-agent.actor(agent.replay.column("observations"))[1]).tolist()
    per_source = [entropies[row] if row >= 0 else 0.0 for row in expected]
    rewards = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 24, 25]
    full = reference_soft_returns(rewards, per_source, [(4, False), (3, True), (5, True)], 0.9, 0.3)
    np.testing.assert_allclose(agent.replay.column("soft_returns_to_go").numpy(), full[kept], rtol=1e-5)


# ---------------------------------------------------------------- the phases of soft-imitate


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def same(before, module):
    return all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_phases_switch_at_the_configured_steps(hopper):
    agent = EDAC(hopper, seed=0, batch_size=32, pretrain="soft-imitate", pretrain_steps=4,
                 pretrain_kwargs={"bc_fraction": 0.5}, policy_kwargs=SMALL)
    agent.learn(0)
    soft_returns = lambda: agent.replay.column("soft_returns_to_go")  # noqa: E731
    policy = agent.policy
    # Phase A (updates 1-2): temperature and BC actor only.
    for _ in range(2):
        actor, critic, target, log_alpha = (snapshot(agent.actor), snapshot(agent.critic),
                                            snapshot(policy.critic_target), policy.log_alpha.detach().clone())
        agent.train(gradient_steps=1, batch_size=32)
        assert not same(actor, agent.actor) and not torch.equal(log_alpha, policy.log_alpha)
        assert same(critic, agent.critic) and same(target, policy.critic_target)
        assert (soft_returns() == 0).all()
    # Phase B (updates 3-4): the column is filled once, critics and targets learn, actor and alpha frozen.
    for step in range(2):
        actor, critic, target, log_alpha = (snapshot(agent.actor), snapshot(agent.critic),
                                            snapshot(policy.critic_target), policy.log_alpha.detach().clone())
        filled = soft_returns().clone()
        agent.train(gradient_steps=1, batch_size=32)
        assert same(actor, agent.actor) and torch.equal(log_alpha, policy.log_alpha)
        assert not same(critic, agent.critic) and not same(target, policy.critic_target)
        assert (soft_returns() != 0).all()
        if step == 1:
            assert torch.equal(filled, soft_returns())  # computed once
    # Update 5: EDAC takes over (all parts move).
    actor, critic = snapshot(agent.actor), snapshot(agent.critic)
    agent.train(gradient_steps=1, batch_size=32)
    assert not same(actor, agent.actor) and not same(critic, agent.critic)
    counts = agent._stat_counts
    assert counts["pretrain_actor_loss"] == 2 and counts["pretrain_critic_loss"] == 2
    assert counts["actor_loss"] == 1 and counts["diversity_loss"] == 1


def test_bc_actor_loss_by_hand(hopper):
    agent = EDAC(hopper, seed=0, pretrain="soft-imitate", pretrain_steps=4, policy_kwargs=SMALL)
    set_constant_output(agent.actor.net, [[0.2, -0.1, 0.0] + [math.log(0.5)] * 3])  # mu, sigma 0.5
    batch = fixed_batch()
    _, log_prob = agent.actor(batch.observations)
    u = torch.atanh(batch.actions)
    mu = torch.tensor([0.2, -0.1, 0.0])
    log_prob_data = (-0.5 * ((u - mu) / 0.5) ** 2 - math.log(0.5) - 0.5 * math.log(2 * math.pi)
                     - torch.log(1 - batch.actions**2)).sum(1)
    loss, _ = agent.pretraining.actor_loss(agent, batch, log_prob, torch.tensor(0.3))
    assert loss.item() == pytest.approx((0.3 * log_prob - log_prob_data).mean().item(), rel=1e-4)


def test_soft_critic_loss_by_hand_and_td_mixing(hopper):
    agent = EDAC(hopper, seed=0, eta=0.5, pretrain="soft-imitate", pretrain_steps=4, policy_kwargs=SMALL)
    batch = fixed_batch()
    batch = batch.replace(soft_returns_to_go=torch.tensor([10.0, -1.0, 0.0, 2.0]))
    set_constant_output(agent.critic.net, [1.0, 2.0, 4.0])  # no action gradient: ES = 0
    loss, stats = agent.pretraining.critic_loss(agent, batch)
    diversity = stats["pretrain_critic_penalty"]
    g = np.array([10.0, -1.0, 0.0, 2.0])
    expected = np.mean([(c - g) ** 2 for c in (1.0, 2.0, 4.0)])  # mean over members and batch
    assert diversity.item() == 0.0 and loss.item() == pytest.approx(expected, rel=1e-6)
    # With random critics: MC + eta * ES; with lambda, each part divided by its detached value.
    fresh = EDAC(hopper, seed=0, eta=0.5, pretrain="soft-imitate", pretrain_steps=4, policy_kwargs=SMALL,
                 pretrain_kwargs={"td_weight": 0.25})
    q = fresh.critic(batch.observations, batch.actions)
    es = explicit_diversity(fresh.critic, batch.observations, batch.actions)
    fresh.random.manual_seed(3)
    loss, _ = fresh.pretraining.critic_loss(fresh, batch)
    assert loss.item() == pytest.approx(1.0 + 0.5 * es.item(), rel=1e-5)
    fresh.pretraining.td_weight = 0.0
    loss, _ = fresh.pretraining.critic_loss(fresh, batch)
    mc = (q - batch.soft_returns_to_go).pow(2).mean()
    assert loss.item() == pytest.approx((mc + 0.5 * es).item(), rel=1e-5)


def test_save_load_mid_pretraining_gives_identical_actions(hopper, tmp_path):
    agent = make_agent("edac-mc", hopper, seed=0, batch_size=32, pretrain_steps=6, policy_kwargs=SMALL)
    agent.learn(4)  # phase B has begun
    agent.save(tmp_path / "edac")
    loaded = EDAC.load(tmp_path / "edac", dataset=hopper)
    obs = hopper.observations[:16].numpy()
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.eta == 1.0 and loaded.critic.n_critics == 3 and loaded.critic.net.layer_norm
    assert isinstance(loaded.pretraining, SoftImitation) and loaded.pretrain_steps == 6
    torch.testing.assert_close(loaded.policy.log_alpha, agent.policy.log_alpha)
    # Resumed in phase B, the rebuilt table gets its soft returns again before the critic trains on them.
    loaded.learn(1)
    assert loaded.pretraining.returns_ready and (loaded.replay.column("soft_returns_to_go") != 0).all()


# ---------------------------------------------------------------- runs, settings, bad input


def test_short_offline_run_improves_and_finetunes(hopper):
    """Pretraining is mostly BC: 800 BC + 200 critic updates already beat the untrained actor."""
    agent = make_agent("edac-mc", hopper, seed=0, batch_size=64, pretrain_steps=1000,
                       pretrain_kwargs={"bc_fraction": 0.8}, policy_kwargs=dict(net_arch=[64, 64], n_critics=3))
    task = hopper.task
    start = task.normalized_score(evaluate_returns(agent_predict(agent), task.env_id, 3, seed=100)).mean()
    agent.learn(1000)
    end = task.normalized_score(evaluate_returns(agent_predict(agent), task.env_id, 3, seed=100)).mean()
    assert end > start + 10, (start, end)
    updates = agent._n_updates
    agent.finetune(150)  # EDAC online, its own stochastic policy explores
    assert agent.replay.online_size == 150 and agent._n_updates == updates + 150
    assert agent._stat_counts["actor_loss"] == 150


def test_hyperparameter_files(hopper):
    kwargs, run = load_hyperparams("edac", "zoo/hopper/medium-v0")
    assert kwargs["eta"] == 1.0 and kwargs["policy_kwargs"] == {"n_critics": 50} and run["n_timesteps"] == 3_000_000
    kwargs, _ = load_hyperparams("edac", "zoo/walker2d/medium-expert-v0")
    assert kwargs["eta"] == 5.0 and kwargs["policy_kwargs"] == {"n_critics": 10}
    kwargs, _ = load_hyperparams("edac-mc", "zoo/hopper/medium-replay-v0")
    assert kwargs["pretrain"] == "soft-imitate" and kwargs["pretrain_steps"] == 20_000
    assert kwargs["pretrain_kwargs"] == {"bc_fraction": 0.5, "td_weight": 0.0}
    agent = make_agent("edac-mc", hopper, **{**kwargs, "policy_kwargs": {**kwargs["policy_kwargs"], "net_arch": [8]}})
    assert agent.critic.n_critics == 50 and agent.critic.net.layer_norm and agent.normalize_observations


def test_bad_input_is_a_clear_error(hopper):
    with pytest.raises(ValueError, match="n_critics=1"):
        EDAC(hopper, policy_kwargs={"n_critics": 1})
    assert EDAC(hopper, eta=0.0, policy_kwargs={"n_critics": 1, "net_arch": [8]}).critic.n_critics == 1  # SAC-1
    with pytest.raises(ValueError, match="eta"):
        EDAC(hopper, eta=-1.0)
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"bc_fraction .* in \(0, 1\)"):
            EDAC(hopper, pretrain="soft-imitate", pretrain_steps=10, pretrain_kwargs={"bc_fraction": fraction})
    with pytest.raises(ValueError, match="not a SAC-family agent"):
        TD3(hopper, pretrain="soft-imitate", pretrain_steps=10)
    with pytest.raises(ValueError, match="TD3-family"):
        EDAC(hopper, pretrain="imitate", pretrain_steps=10)
