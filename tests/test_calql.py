"""CQL and Cal-QL: the conservative term, the calibration bound, the Lagrange multiplier and the max backup
by hand; Monte-Carlo returns offline and online; save/load; short offline and fine-tuning runs on Hopper."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from tests.conftest import TINY_ID
from tests.test_td3bc import fixed_batch, hopper, hopper_root, set_constant_output  # noqa: F401
from zoo import evaluate_returns, load_dataset, make_agent
from zoo.agents.losses import ensemble_mse
from zoo.agents.replay import Batch
from zoo.agents.cql import CQL, CalQL
from zoo.config import load_hyperparams
from zoo.evaluation import agent_predict
from zoo.registry import make_population

SMALL = dict(net_arch=[32, 32])


def log_sum_exp(values: np.ndarray, axis: int) -> np.ndarray:
    top = values.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(values - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def test_cql_regulariser_by_hand(hopper):
    agent = CQL(hopper, seed=0, gamma=0.9, cql_weight=2.0, n_actions=3, policy_kwargs=SMALL)
    policy = agent.policy
    set_constant_output(policy.critic.net, [1.0, 2.0])  # Q1 = 1, Q2 = 2 for every (s, a)
    set_constant_output(policy.critic_target.net, [3.0, 5.0])  # min target Q = 3
    set_constant_output(policy.actor.net, [[0.2, -0.1, 0.0, -0.5, -1.0, 0.3]])  # fixed mu and sigma
    batch, alpha = fixed_batch(), agent.alpha
    agent.random.manual_seed(1)  # the agent's own generator: the loss draws the same samples again
    samples = agent.sample_actions(batch)
    agent.random.manual_seed(1)
    loss, stats = agent.critic_loss(batch, alpha)
    assert samples.random.shape == samples.current.shape == samples.next.shape == (3, 4, 3)
    assert samples.backup.shape == (1, 4, 3)  # one backup sample without max_target_backup
    assert samples.random.abs().max() <= 1.0 and samples.random.std() > 0.3
    # TD part: y = r + 0.9 (1 - d) 3 (no entropy backup), both critics constant.
    y = batch.rewards.double().numpy() + 0.9 * (1 - batch.terminations.double().numpy()) * 3.0
    bellman = sum(np.mean((c - y) ** 2) for c in (1.0, 2.0))
    # Importance sampling: X = [c - log 0.5^3] * 3 + [c - log pi(a_nxt|s')] + [c - log pi(a_cur|s)], so
    # logsumexp(X) - c = log(3 * 2^3 + sum exp(-log pi)) for both critics.
    neg_log_probs = -torch.cat([samples.next_log_prob, samples.current_log_prob]).double().numpy()  # (6, 4)
    gap = np.mean(np.log(3 * 2.0**3 + np.exp(neg_log_probs).sum(0)))
    assert loss.item() == pytest.approx(bellman + 2.0 * 2 * gap, rel=1e-5)
    assert torch.equal(agent.critic(batch.observations, batch.actions), torch.tensor([[1.0] * 4, [2.0] * 4]))
    assert stats["q_mean"].item() == 1.5 and stats["cql_gap"].shape == (2,)
    np.testing.assert_allclose(stats["cql_gap"].numpy(), [gap, gap], rtol=1e-5)
    # Without importance sampling the 3K + 1 candidates are all equal: the gap is T log(3K + 1).
    agent.importance_sample = False
    loss, _ = agent.critic_loss(batch, alpha)
    assert loss.item() == pytest.approx(bellman + 2.0 * 2 * math.log(10), rel=1e-5)
    agent.cql_temp = 2.0
    assert agent.critic_loss(batch, alpha)[0].item() == pytest.approx(bellman + 2.0 * 2 * 2 * math.log(10), rel=1e-5)
    agent.cql_clip_diff_max = 0.5  # clip(logsumexp - Q) per transition
    assert agent.critic_loss(batch, alpha)[0].item() == pytest.approx(bellman + 2.0 * 2 * 0.5, rel=1e-5)


def test_sampled_log_densities_are_those_of_their_own_states(hopper):
    """Current actions are weighted by pi(.|s), next actions by pi(.|s') (drawn at s', evaluated at s)."""
    agent = CQL(hopper, seed=2, n_actions=4, max_target_backup=True, policy_kwargs=SMALL)
    batch = fixed_batch()
    samples = agent.sample_actions(batch)
    assert samples.backup.shape == (4, 4, 3)
    actor = agent.actor
    for actions, log_prob, states in (
        (samples.current, samples.current_log_prob, batch.observations),
        (samples.next, samples.next_log_prob, batch.next_observations),
        (samples.backup, samples.backup_log_prob, batch.next_observations),
    ):
        for k in range(4):
            torch.testing.assert_close(actor.log_prob(states, actions[k]), log_prob[k], rtol=1e-3, atol=1e-3)


def test_calql_bound_changes_exactly_the_policy_values_below_the_return(hopper):
    agent = CalQL(hopper, seed=0, n_actions=2, policy_kwargs=SMALL)
    g = torch.tensor([0.0, 10.0, -5.0])  # MC returns of three transitions
    batch = Batch(mc_returns=g)
    q_next = torch.tensor([[[1.0, 3.0, -9.0], [-2.0, 12.0, -4.0]], [[-1.0, 9.0, -5.5], [0.5, 11.0, 0.0]]])
    q_current = q_next.flip(1) - 0.25
    bounded_next, bounded_current, stats = agent.bound_policy_values(q_next, q_current, batch)
    assert stats["calql_bound_rate"].item() == pytest.approx((q_current < g).float().mean().item())
    for before, after in ((q_next, bounded_next), (q_current, bounded_current)):
        below = before < g
        assert torch.equal(after[below], g.expand_as(before)[below])  # replaced by G
        assert torch.equal(after[~below], before[~below])  # kept
        assert below.any() and (~below).any()
    # Through the whole gap: random-action and data Q-values (all below G here) are never bounded.
    q_data = torch.tensor([[-3.0, 1.0, -8.0], [-4.0, 2.0, -7.0]])
    q_random = torch.tensor([[[-1.0, 0.0, -6.0], [-2.0, 5.0, -9.0]], [[-3.0, 4.0, -6.5], [-0.5, 3.0, -7.5]]])
    log_p_next, log_p_current = torch.tensor([[0.5, -1.0, 0.2], [0.1, 0.3, -0.4]]), torch.zeros(2, 3)
    n = lambda t: t.double().numpy()
    random_term = n(q_random) + 3 * math.log(2.0)
    is_candidates = np.concatenate([random_term, n(bounded_next) - n(log_p_next), n(bounded_current)], axis=1)
    expected = (log_sum_exp(is_candidates, 1) - n(q_data)).mean(1)
    gap, _ = agent.conservative_gap(q_data, q_random, q_next, q_current, log_p_next, log_p_current, batch)
    np.testing.assert_allclose(gap.numpy(), expected, rtol=1e-5)
    agent.importance_sample = False  # the data Q then enters the logsumexp, still unbounded
    candidates = np.concatenate([n(q_random), n(q_data)[:, None], n(bounded_next), n(bounded_current)], axis=1)
    expected = (log_sum_exp(candidates, 1) - n(q_data)).mean(1)
    gap, _ = agent.conservative_gap(q_data, q_random, q_next, q_current, log_p_next, log_p_current, batch)
    np.testing.assert_allclose(gap.numpy(), expected, rtol=1e-5)


def test_lagrange_multiplier_loss_and_gradient_direction(hopper):
    agent = CQL(hopper, seed=0, cql_lagrange=True, cql_weight=5.0, cql_target_action_gap=0.8, n_actions=3,
                policy_kwargs=SMALL)
    policy = agent.policy
    assert agent.alpha_prime.item() == pytest.approx(math.e)  # log alpha' starts at 1
    assert "alpha_prime_optimizer" in policy.optimizer_names
    assert policy.alpha_prime_optimizer.param_groups[0]["lr"] == agent.learning_rate
    # L = -mean_i(alpha' w (gap_i - tau)); dL/dlog alpha' = L.
    loss, _ = agent.alpha_prime_loss(torch.tensor([2.0, 0.5]))
    assert loss.item() == pytest.approx(-math.e * 5.0 * 0.45, rel=1e-6)
    loss.backward()
    assert policy.log_alpha_prime.grad.item() == pytest.approx(loss.item(), rel=1e-6)
    policy.alpha_prime_optimizer.step()  # gap above tau: alpha' grows
    assert policy.log_alpha_prime.item() > 1.0
    policy.alpha_prime_optimizer.zero_grad(set_to_none=True)
    before = policy.log_alpha_prime.item()
    agent.alpha_prime_loss(torch.tensor([0.1, 0.3]))[0].backward()
    policy.alpha_prime_optimizer.step()  # gap below tau: alpha' shrinks
    assert policy.log_alpha_prime.item() < before
    # The critics see alpha' as a constant: c_i = alpha' w (gap_i - tau), no gradient reaches log alpha'.
    with torch.no_grad():
        policy.log_alpha_prime.fill_(1.0)
    policy.log_alpha_prime.grad = None
    set_constant_output(policy.critic.net, [1.0, 2.0])
    set_constant_output(policy.critic_target.net, [3.0, 5.0])
    agent.importance_sample = False
    batch = fixed_batch()
    loss, _ = agent.critic_loss(batch, agent.alpha)
    y = batch.rewards.double().numpy() + agent.gamma * (1 - batch.terminations.double().numpy()) * 3.0
    bellman = sum(np.mean((c - y) ** 2) for c in (1.0, 2.0))
    assert loss.item() == pytest.approx(bellman + 2 * math.e * 5.0 * (math.log(10) - 0.8), rel=1e-5)
    loss.backward()
    assert policy.log_alpha_prime.grad is None
    # A full update steps alpha' from the detached gaps: with near-zero Q the IS gap is >= log(3 * 2^3) > tau.
    fresh = CQL(hopper, seed=0, cql_lagrange=True, cql_target_action_gap=0.8, n_actions=3, batch_size=16,
                policy_kwargs=SMALL)
    fresh.learn(1)
    assert fresh.policy.log_alpha_prime.item() > 1.0


def test_max_target_backup_by_hand(hopper):
    agent = CQL(hopper, seed=0, max_target_backup=True, policy_kwargs=SMALL)
    target = agent.policy.critic_target.net
    # Q'_1(s, a) = a_0 and Q'_2(s, a) = 0.5 - a_0: one ReLU path carries a_0 + 10 (> 0) to the output.
    with torch.no_grad():
        for layer in target.layers:
            layer.weight.zero_()
            layer.bias.zero_()
        first, hidden, out = target.layers
        first.weight[:, 11, 0] = 1.0  # input 11 is a_0 (after the 11 observation dimensions)
        first.bias[:, 0, 0] = 10.0
        hidden.weight[:, 0, 0] = 1.0
        out.weight[:, 0, 0] = torch.tensor([1.0, -1.0])
        out.bias[:, 0, 0] = torch.tensor([-10.0, 10.5])
    a0 = torch.tensor([[-0.8, 0.6], [0.2, 0.1], [0.35, -0.3], [0.9, 0.2]])  # (K = 4, batch = 2)
    actions = torch.stack([a0, torch.zeros_like(a0), torch.zeros_like(a0)], dim=-1)
    log_prob = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]])
    obs = torch.randn(2, 11)
    min_q = np.minimum(a0.numpy(), 0.5 - a0.numpy())  # [[-.8, -.1], [.2, .1], [.15, -.3], [-.4, .2]]
    alpha = torch.tensor(0.5)
    value = agent.backup_value(obs, actions, log_prob, alpha)
    np.testing.assert_allclose(value.numpy(), min_q.max(0), atol=1e-6)  # [0.2, 0.2]
    agent.backup_entropy = True  # - alpha log pi at the maximising sample (k = 1 and k = 3)
    value = agent.backup_value(obs, actions, log_prob, alpha)
    np.testing.assert_allclose(value.numpy(), [0.2 - 0.5 * 0.3, 0.2 - 0.5 * 0.8], atol=1e-6)


@pytest.mark.parametrize("failure_reward", [None, 0.0])
def test_mc_returns_column_by_hand(write_tiny, make_episode, failure_reward):
    write_tiny(episodes=[
        make_episode(0, 4, terminated=True, rewards=[0, 0, 0, 0]),  # never succeeds
        make_episode(1, 3, truncated=True, rewards=[0, 1, 0]),
        make_episode(2, 3, rewards=[1, 1, 1]),
    ])
    dataset = load_dataset(TINY_ID, device="cpu")
    agent = CalQL(dataset, seed=0, gamma=0.5, reward_scale=10.0, reward_bias=-5.0, failure_reward=failure_reward,
                  policy_kwargs=SMALL)
    agent.learn(0)
    column = agent.replay.column("mc_returns")
    # Rewards become 10 r - 5; G_t = r_t + 0.5 G_{t+1} with G = 0 after each episode (no timeout tail).
    failed = [-10.0] * 4 if failure_reward == 0.0 else [-9.375, -8.75, -7.5, -5.0]  # -5 / (1 - 0.5) when all fail
    expected = failed + [-3.75, 2.5, -5.0] + [8.75, 7.5, 5.0]
    np.testing.assert_allclose(column.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(agent.replay.column("rewards").numpy()[4:7], [-5, 5, -5])


class Ledger(BaseCallback):
    """Records (stored, sampleable) online row counts after every env step."""

    def __init__(self):
        super().__init__()
        self.counts = []

    def _on_step(self) -> bool:
        self.counts.append((self.model.replay.online_size, self.model.replay.online_ready))
        return True


def test_online_returns_are_written_when_the_episode_ends(hopper):
    agent = CalQL(hopper, seed=0, gamma=0.9, reward_scale=2.0, reward_bias=0.5, failure_reward=-1.0, batch_size=32,
                  n_actions=2, policy_kwargs=SMALL)
    agent.learn(1)
    dones = []

    class Recorder(gym.Wrapper):
        def step(self, action):
            out = super().step(action)
            dones.append(out[2] or out[3])
            return out

    ledger = Ledger()
    agent.finetune(250, env=Recorder(gym.make("Hopper-v5")), callback=ledger)
    rewards = agent.replay.column("rewards", source="online").double().numpy()
    returns = agent.replay.column("mc_returns", source="online").numpy()
    ends = [i + 1 for i, done in enumerate(dones) if done]
    assert len(ends) >= 2 and ends[-1] < 250  # finished episodes, and an unfinished one at the end
    # Rows become sampleable exactly when their episode ends.
    for step, (size, ready) in enumerate(ledger.counts, start=1):
        assert size == step and ready == max([e for e in ends if e <= step], default=0)
    assert agent.replay.online_ready == ends[-1]
    start = 0
    for end in ends:
        expected, following = np.zeros(end - start), 0.0
        for t in range(end - 1, start - 1, -1):
            following = rewards[t] + 0.9 * following
            expected[t - start] = following
        np.testing.assert_allclose(returns[start:end], expected, rtol=1e-5)
        start = end
    assert (returns[ends[-1]:] == 0).all()  # the running episode has no returns yet ...
    # Mark its rows: none of them may be drawn.
    agent.replay.write_column("mc_returns", 1e6, rows=slice(ends[-1], None), source="online")
    agent.online_mixing_ratio = 0.0
    assert (agent.sample(512).mc_returns < 1e6).all()
    # The sparse rule online: an episode whose transformed rewards all equal 2 * (-1) + 0.5 = -1.5.
    replay = agent.replay
    online = lambda name: replay.column(name, source="online")  # noqa: E731
    replay.write_column("rewards", -1.5, rows=slice(0, 5), source="online")
    agent._on_online_episode_end(0, 5)
    np.testing.assert_allclose(online("mc_returns")[:5].numpy(), [-15.0] * 5, rtol=1e-6)
    replay.write_column("rewards", 1.0, rows=slice(2, 3), source="online")
    agent._on_online_episode_end(0, 5)
    # G_4 = -1.5, G_3 = -2.85, G_2 = 1 + 0.9 G_3, G_1 = -1.5 + 0.9 G_2, G_0 = -1.5 + 0.9 G_1
    np.testing.assert_allclose(
        online("mc_returns")[:5].numpy(), [-4.11765, -2.9085, -1.565, -2.85, -1.5], rtol=1e-5
    )
    # A long episode (the device scan runs log2(length) rounds) against a plain backward loop.
    replay.write_column("rewards", torch.randn(250, generator=torch.Generator().manual_seed(0)), source="online")
    agent._on_online_episode_end(0, 250)
    expected, following = np.zeros(250), 0.0
    for t in range(249, -1, -1):
        following = online("rewards")[t].item() + 0.9 * following
        expected[t] = following
    np.testing.assert_allclose(online("mc_returns")[:250].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_save_load_gives_identical_actions_and_multiplier(hopper, tmp_path):
    agent = CalQL(hopper, seed=3, cql_lagrange=True, cql_target_action_gap=0.8, failure_reward=0.0, batch_size=16,
                  n_actions=2, policy_kwargs=SMALL)
    agent.learn(4)
    assert agent.policy.log_alpha_prime.item() != 1.0
    agent.save(tmp_path / "calql")
    loaded = CalQL.load(tmp_path / "calql", dataset=hopper)
    obs = hopper.observations[:16].numpy()
    np.testing.assert_array_equal(agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert torch.equal(loaded.policy.log_alpha_prime, agent.policy.log_alpha_prime)
    assert loaded.policy.alpha_prime_optimizer.state_dict()["state"][0]["step"] == 4
    assert loaded.cql_lagrange and loaded.failure_reward == 0.0 and loaded.n_actions == 2
    assert loaded.policy.actor_optimizer.param_groups[0]["lr"] == 1e-4
    loaded.learn(2)
    assert loaded.num_timesteps == 2
    # Online-only fine-tuning without the dataset: the returns column is added to the online rows, and
    # updates start once the first episode has ended.
    online = CalQL.load(tmp_path / "calql")
    online.online_mixing_ratio = 0.0
    online.finetune(200, env=gym.make("Hopper-v5"))
    assert online.replay.width == 11 + 3 + 1 + 11 + 1 + 1 and "mc_returns" in online.replay.columns
    assert 0 < online.replay.online_ready and 4 < online._n_updates < 4 + 200


def test_short_offline_runs_and_finetune(hopper):
    task = hopper.task

    def score(agent):
        return float(np.mean(task.normalized_score(evaluate_returns(agent_predict(agent), task.env_id, 5, seed=100))))

    # CQL, small nets and fast learning rates: 1000 updates leave its (near-still) starting policy far behind
    # for most seeds (measured with the current code, seeds 0-5, start -> end: 4.2 -> 20.4, 7.3 -> 5.0,
    # 7.1 -> 20.2, 4.5 -> 30.3, 4.9 -> 2.5, 4.4 -> 18.3; two of six stay flat in so short a run).
    cql = CQL(hopper, seed=0, batch_size=64, learning_rate=1e-3, actor_learning_rate=1e-3, ent_coef="auto_0.05",
              max_target_backup=True, policy_kwargs=dict(net_arch=[64, 64]))
    start = score(cql)
    cql.learn(1000)
    assert score(cql) > start + 8, start
    # Cal-QL: on dense Hopper rewards G ~ 250 while Q starts at 0, so for the first thousands of updates
    # every policy Q is bounded up to G and the conservative term only lifts Q(s, a): the policy does not
    # improve in a short run (measured over seeds). What such a run must do is move Q(s, a) toward G.
    calql = CalQL(hopper, seed=0, batch_size=32, learning_rate=1e-3, n_actions=4, policy_kwargs=SMALL)
    calql.learn(0)
    obs, actions = calql.replay.column("observations"), calql.replay.column("actions")
    g = calql.replay.column("mc_returns")

    def distance():
        with torch.no_grad():
            return (calql.critic(obs, actions) - g).abs().mean().item()

    before = distance()
    calql.learn(300)
    assert distance() < before - 5, before
    assert calql._stat_sums["calql_bound_rate"].item() / calql._stat_counts["calql_bound_rate"] > 0.9
    # Fine-tuning: a few hundred env steps with the bound on; returns of finished episodes are written.
    calql.finetune(200)
    replay = calql.replay
    assert replay.online_size == 200 and 0 < replay.online_ready <= 200 and calql._n_updates == 300 + 200
    mc_returns = replay.column("mc_returns", source="online")
    assert all(torch.isfinite(replay.column(name, source="online")).all() for name in replay.columns)
    assert (mc_returns[: replay.online_ready] != 0).all()
    assert (mc_returns[replay.online_ready :] == 0).all()
    assert all(torch.isfinite(p).all() for p in calql.policy.parameters())


def test_defaults_registry_and_yaml(hopper):
    cql = make_agent("cql", hopper)
    assert type(cql) is CQL and cql.cql_weight == 10.0 and not cql.max_target_backup and not cql.backup_entropy
    assert cql.policy.net_arch == (256, 256, 256) and cql.policy.actor.learnable_log_std_scale
    assert [cql.policy.actor_optimizer.param_groups[0]["lr"], cql.policy.alpha_optimizer.param_groups[0]["lr"],
            cql.policy.critic_optimizer.param_groups[0]["lr"]] == [3e-5, 3e-5, 3e-4]
    calql = make_agent("calql", hopper, policy_kwargs=dict(net_arch=[64, 64]))
    assert type(calql) is CalQL and calql.cql_weight == 5.0 and calql.max_target_backup and not calql.cql_lagrange
    assert calql.policy.net_arch == (64, 64) and calql.policy.actor.learnable_log_std_scale  # defaults kept
    assert [calql.policy.actor_optimizer.param_groups[0]["lr"], calql.policy.alpha_optimizer.param_groups[0]["lr"],
            calql.policy.critic_optimizer.param_groups[0]["lr"]] == [1e-4, 1e-4, 3e-4]
    for algo in ("cql", "calql"):
        kwargs, run = load_hyperparams(algo, "zoo/hopper/medium-v0")
        assert run["n_timesteps"] == 1_000_000
        make_agent(algo, hopper, **kwargs)


def test_bad_settings_are_clear_errors(hopper):
    with pytest.raises(ValueError, match="n_actions"):
        CQL(hopper, n_actions=0)
    with pytest.raises(ValueError, match="cql_clip_diff_min"):
        CQL(hopper, cql_clip_diff_min=1.0, cql_clip_diff_max=-1.0)
    with pytest.raises(ValueError, match="cql_weight"):
        CalQL(hopper, cql_weight=-1.0)
    with pytest.raises(ValueError, match="cql_temp"):
        CQL(hopper, cql_temp=0.0)
    with pytest.raises(ValueError, match="failure_reward"):
        CalQL(hopper, failure_reward=float("nan"))


def test_a_population_member_with_cql_weight_zero_has_no_conservative_term_but_its_neighbour_has(hopper):
    """Per-member hyperparameters reach their member: in a Cal-QL population with w = (0, 5), member 0's
    critic loss is SAC-N's (the Bellman error against CQL's target, by hand) and member 1's adds
    5 sum_i gap_i; each equals the loss its ordinary agent (member(k)) computes on its own rows with the same
    draws, and the population's loss is their sum."""
    population = make_population(
        "calql", hopper, [0, 1], members=[{"cql_weight": 0.0}, {"cql_weight": 5.0}],
        batch_size=32, n_actions=4, policy_kwargs=SMALL,
    )
    assert torch.equal(population.cql_weight, torch.tensor([0.0, 5.0]))
    assert [m["cql_weight"] for m in population.member_hyperparameters] == [0.0, 5.0]
    population.learn(5)
    batch = population.sample(32)
    assert batch.observations.shape == (2, 32, 11) and batch.mc_returns.shape == (2, 32)
    states = population.random.get_state()  # each member's generator before the loss draws its samples
    loss, stats = population.critic_loss(batch, population.alpha)
    assert stats["cql_gap"].shape == (2, 2)
    member_losses = []
    for k, weight in enumerate([0.0, 5.0]):
        member = population.member(k)
        own = Batch({name: batch[name][k] for name in batch})
        member.random.set_state([states[k]])  # member k's stream, in the ordinary agent's own generator
        member_loss, member_stats = member.critic_loss(own, member.alpha)
        member.random.set_state([states[k]])
        samples = member.sample_actions(own)
        target = member.td_target(own, member.alpha, samples.backup, samples.backup_log_prob)
        sac_n = ensemble_mse(member.critic(own.observations, own.actions), target).item()
        gap = member_stats["cql_gap"]
        assert gap.min().item() > 1.0  # the conservative term is far from 0 where it is weighted
        torch.testing.assert_close(stats["cql_gap"][k], gap, rtol=1e-5, atol=1e-5)
        assert member_loss.item() == pytest.approx(sac_n + weight * gap.sum().item(), rel=1e-5)
        member_losses.append(member_loss.item())
    assert loss.item() == pytest.approx(sum(member_losses), rel=1e-5)


def test_population_members_with_their_own_gamma_bound_by_their_own_returns(hopper):
    """gamma per member: each member gets the MC-return column of its own gamma (the column an ordinary Cal-QL
    with that gamma computes), reads only that column, and trains as a population of one with its gamma."""
    kwargs = dict(batch_size=32, n_actions=3, policy_kwargs=SMALL)
    gammas = [0.9, 0.99]
    population = make_population("calql", hopper, [0, 1], members=[{"gamma": g} for g in gammas], **kwargs)
    population.learn(6)
    columns = population.replay.column("mc_returns")
    assert columns.shape == (len(hopper), 2) and population.sample(8).mc_returns.shape == (2, 8, 2)

    def difference(a, b):
        sa, sb = a.policy.state_dict(), b.policy.state_dict()
        return max((sa[name] - sb[name]).abs().max().item() for name in sa)

    for k, gamma in enumerate(gammas):
        ordinary = CalQL(hopper, seed=0, gamma=gamma, policy_kwargs=SMALL)
        ordinary.learn(0)
        torch.testing.assert_close(columns[:, k], ordinary.replay.column("mc_returns"), rtol=0, atol=0)
        alone = make_population("calql", hopper, [k], gamma=gamma, **kwargs)
        alone.learn(6)
        assert difference(population.member(k), alone.member(0)) <= 1e-6
    assert (columns[:, 0] - columns[:, 1]).abs().max() > 10.0  # the two gammas give far-apart returns
