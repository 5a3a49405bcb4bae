"""OPT: meta-gradient against finite differences, kappa schedule and Q_mix, phase switches at the configured
env steps, balanced replay (density loss, priorities, sampling), save/load, a short real fine-tuning run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from tests.test_td3bc import fixed_batch, hopper, hopper_root, set_constant_output  # noqa: F401
from zoo import TD3BC, evaluate_returns, make_agent
from zoo.agents.replay import Batch
from zoo.agents.opt import OPT, OPTSPOT, balanced_priorities, density_ratio_loss, meta_critic_loss
from zoo.config import load_hyperparams
from zoo.evaluation import agent_predict
from zoo.nn import EnsembleQ
from zoo.nn.density import DensityRatio


SMALL = dict(batch_size=32, policy_kwargs=dict(net_arch=[32, 32], density_net_arch=[32, 32]))


def small_opt(dataset, **kwargs) -> OPT:
    return OPT(dataset, seed=0, **{**SMALL, **kwargs})


# ---------------------------------------------------------------------------------------------- losses


def test_meta_gradient_matches_finite_differences():
    """d/dpsi [L_off(psi) + w L_on(psi - a grad L_off(psi))] (w held fixed), second-order term included."""
    torch.manual_seed(0)
    critic = EnsembleQ(11, 3, 2, (8, 8)).double()
    names = [name for name, _ in critic.named_parameters()]
    shapes = [p.shape for p in critic.parameters()]
    psi0 = torch.cat([p.detach().reshape(-1) for p in critic.parameters()])

    def as_params(flat):
        out, i = {}, 0
        for name, shape in zip(names, shapes):
            out[name] = flat[i : i + shape.numel()].view(shape)
            i += shape.numel()
        return out

    def batch(n):
        return Batch(
            observations=torch.randn(n, 11, dtype=torch.float64),
            actions=torch.rand(n, 3, dtype=torch.float64) * 2 - 1,
        )

    offline, online = batch(16), batch(12)
    y_off, y_on = torch.randn(16, dtype=torch.float64), torch.randn(12, dtype=torch.float64) + 3.0
    inner_lr = 0.05  # large enough that the second-order term shows

    psi = psi0.clone().requires_grad_(True)
    objective, loss_off, loss_on, weight = meta_critic_loss(
        critic, as_params(psi), offline, y_off, online, y_on, inner_lr
    )
    (meta_grad,) = torch.autograd.grad(objective, psi)
    assert weight.item() == pytest.approx(min(loss_off.item(), loss_on.item()) / loss_on.item(), rel=1e-9)
    assert weight.item() < 1.0  # the online loss is the larger one here: it is scaled down to L_off
    w = weight.item()

    def td(flat, b, y):
        return (
            (functional_call(critic, as_params(flat), (b.observations, b.actions)) - y)
            .pow(2)
            .mean(dim=1)
            .sum()
        )

    def meta_objective(flat):
        flat = flat.detach().requires_grad_(True)
        l_off = td(flat, offline, y_off)
        (g,) = torch.autograd.grad(l_off, flat)
        return (l_off + w * td(flat - inner_lr * g, online, y_on)).item()

    # Central differences along random directions v: (F(psi + e v) - F(psi - e v)) / 2e = grad F . v.
    directions = torch.randn(
        24, psi0.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    eps = 1e-6
    fd = torch.tensor(
        [(meta_objective(psi0 + eps * v) - meta_objective(psi0 - eps * v)) / (2 * eps) for v in directions],
        dtype=torch.float64,
    )
    torch.testing.assert_close(directions @ meta_grad, fd, rtol=1e-6, atol=1e-8)

    # The first-order shortcut (no Hessian term) is measurably off: the test sees the second order.
    flat = psi0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(td(flat, offline, y_off), flat)
    inner = (psi0 - inner_lr * g).requires_grad_(True)
    (g_on,) = torch.autograd.grad(td(inner, online, y_on), inner)
    first_order = directions @ (g + w * g_on)
    assert (first_order - fd).abs().max() > 1e3 * (directions @ meta_grad - fd).abs().max()


def test_density_ratio_loss_by_hand():
    w_off, w_on = torch.tensor([1.0, 3.0]), torch.tensor([1.0, 0.5])
    # offline: -log(2/2) = 0, -log(2/4) = log 2; online: log(2/2) = 0, log(1/1.5)
    expected = (math.log(2.0) - math.log(1.0 / 1.5)) / 2
    assert density_ratio_loss(w_off, w_on).item() == pytest.approx(expected, rel=1e-5)
    net = DensityRatio(11, 3, (16, 16))
    w0 = net(torch.randn(64, 11), torch.rand(64, 3) * 2 - 1)
    assert w0.shape == (64,) and torch.all((w0 - 1.0).abs() < 0.1)  # Off2On's init: w ≈ 1 at the start
    set_constant_output(net.net, [-2.0])
    assert torch.equal(net(torch.randn(5, 11), torch.randn(5, 3)), torch.zeros(5))  # ReLU output: w >= 0


def test_priority_formula_by_hand():
    w_off = torch.tensor([1.0, 32.0])  # w^(1/5): 1, 2 -> normaliser 1.5
    w = torch.tensor([0.0, 1.0, 32.0, 1e20])
    expected = [1e-3, 1 / 1.5, 2 / 1.5, 1e3]  # 0 and 1e4 / 1.5 are clipped to [1e-3, 1e3]
    np.testing.assert_allclose(balanced_priorities(w, w_off, 5.0).numpy(), expected, rtol=1e-6)


# ---------------------------------------------------------------------------------------------- kappa, Q_mix


def test_kappa_schedule(hopper):
    agent = small_opt(hopper, n_tau=100, kappa_start=0.1, kappa_end=0.9, kappa_steps=1000)
    assert [agent.online_pretraining.kappa_at(t) for t in (100, 350, 600, 1100, 5000)] == pytest.approx(
        [0.1, 0.3, 0.5, 0.9, 0.9]
    )
    random = small_opt(hopper, n_tau=100, kappa_start=1.0, kappa_end=1.0, kappa_steps=0)
    assert [random.online_pretraining.kappa_at(t) for t in (100, 10_000)] == [1.0, 1.0]
    assert small_opt(hopper, kappa_start=0.2, kappa_end=0.7, kappa_steps=0).online_pretraining.kappa_at(25_000) == 0.7


def test_actor_climbs_the_kappa_mix(hopper):
    agent = small_opt(hopper, alpha=2.5)
    policy = agent.policy
    set_constant_output(policy.critic.net, [4.0, -7.0])  # Q_off1 = 4
    set_constant_output(policy.online_critic.net, [10.0, 20.0])  # Q_on1 = 10
    set_constant_output(policy.actor.net, [0.5, -0.25, 0.0])
    batch = fixed_batch()
    obs, pi = batch.observations, agent.actor(batch.observations)
    # Offline (phase 1): the base's Q_off1 and TD3+BC's loss.
    assert torch.equal(agent.actor_q(obs, pi), torch.full((4,), 4.0))
    bc = np.mean((np.tanh([0.5, -0.25, 0.0])[None, :] - batch.actions.numpy()) ** 2)
    assert agent.actor_loss(batch)[0].item() == pytest.approx(-2.5 + bc, rel=1e-6)
    # Phase 3: (1 - kappa) Q_off1 + kappa Q_on1, and TD3's -mean Q_mix without a BC term.
    agent.online_pretraining.finetuning, agent.online_pretraining.kappa = True, 0.25
    torch.testing.assert_close(agent.actor_q(obs, pi), torch.full((4,), 0.75 * 4.0 + 0.25 * 10.0))
    assert agent.actor_objective(batch)[0].item() == pytest.approx(-5.5, rel=1e-6)


# ---------------------------------------------------------------------------------------------- phases


def test_offline_phase_is_the_base_algorithm_unchanged(hopper):
    opt = small_opt(hopper)  # constructing an agent seeds the global RNG: build and train one at a time
    opt.learn(30)
    td3bc = TD3BC(hopper, seed=0, **{**SMALL, "policy_kwargs": dict(net_arch=[32, 32])})
    td3bc.learn(30)
    for a, b in zip(opt.actor.parameters(), td3bc.actor.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(opt.critic.parameters(), td3bc.critic.parameters()):
        assert torch.equal(a, b)


def test_no_update_before_n_tau_then_pretraining_exactly_at_n_tau(hopper):
    agent = small_opt(hopper, n_tau=40, n_pretrain=7, online_utd_ratio=2, kappa_steps=10)
    agent.learn(10)
    updates_offline = agent._n_updates
    policy = agent.policy
    nets = [
        policy.actor,
        policy.critic,
        policy.online_critic,
        policy.density,
        policy.actor_target,
        policy.critic_target,
    ]
    start = [[p.detach().clone() for p in net.parameters()] for net in nets]
    seen = []

    def record(*_):
        step = agent.num_timesteps
        unchanged = all(
            torch.equal(a, b) for net, ps in zip(nets, start) for a, b in zip(net.parameters(), ps)
        )
        seen.append(
            (
                step,
                unchanged,
                agent._n_updates - updates_offline,
                agent.online_pretraining.n_pretrain_updates,
                agent.online_pretraining.finetuning,
            )
        )
        return True

    agent.finetune(50, callback=record)
    assert [s[0] for s in seen] == list(range(1, 51))
    # Phase 2a: env steps 1..39, nothing moves, no update of any kind.
    assert all(unchanged and n == 0 and pre == 0 and not fine for _, unchanged, n, pre, fine in seen[:39])
    # Env step 40 = n_tau: Q_on pre-trained for n_pretrain updates, then the first UTD fine-tuning updates.
    step, unchanged, n, pre, fine = seen[39]
    assert (step, unchanged, n, pre, fine) == (40, False, 2, 7, True)
    assert agent.online_pretraining.pretrained_at == 40
    assert seen[-1][2:4] == (2 * 11, 7)  # 11 phase-3 env steps x UTD 2; no second pretraining
    # Phase 3 moved actor, both critics, the density net and every target.
    for net, ps in zip(nets, start):
        assert not all(torch.equal(a, b) for a, b in zip(net.parameters(), ps))
    # The meta-update leaves plain gradients behind (no graph kept alive in .grad).
    assert all(p.grad is None or p.grad.grad_fn is None for p in policy.online_critic.parameters())
    assert agent.online_pretraining.kappa == pytest.approx(0.3 + (50 - 40) / 10 * 0.6)


# ---------------------------------------------------------------------------------------------- replay


def test_priorities_new_rows_and_updates(hopper):
    agent = small_opt(hopper, n_tau=20, n_pretrain=2, online_utd_ratio=1)
    agent.learn(2)
    snapshots = {}

    def record(*_):
        if agent.num_timesteps in (19, 30):
            snapshots[agent.num_timesteps] = (agent.replay.priorities, agent.replay.max_priority)
        return agent.num_timesteps < 30  # stop after 30 of 40 env steps: room for one more row

    agent.finetune(40, callback=record)
    replay = agent.replay
    n_off = replay.n_offline
    priorities = replay.priorities
    assert priorities.shape == (n_off + 40,) and replay.online_size == 30
    # Before any update: offline rows at 1, the 19 online rows so far at the max priority (1), the rest empty.
    early, _ = snapshots[19]
    assert torch.all(early[: n_off + 19] == 1.0) and torch.all(early[n_off + 19 :] == 0.0)
    # After phase-3 updates: the running max bounds every priority, each inside [1e-3, 1e3].
    late, late_max = snapshots[30]
    assert 1.0 <= late_max.item() and late[: n_off + 30].max() <= late_max
    assert not torch.equal(late[:n_off], early[:n_off])  # sampled offline rows were re-prioritised
    assert torch.all(late[: n_off + 30] >= 1e-3) and torch.all(late[: n_off + 30] <= 1e3)
    # A new online row gets the current max priority.
    replay.set_priorities(torch.tensor([0]), torch.tensor([1e3]))  # the running max becomes 1e3 (the clip)
    first = replay.stored("online")
    replay.append({name: first[name][0].numpy() for name in replay.columns})
    replay.release()
    replay.prioritize_new_rows()
    assert replay.priorities[n_off + 30].item() == 1e3 and replay.n_prioritized == 31

    # Updated priorities follow w^(1/T) / mean(w_off^(1/T)) on a fixed batch; the max follows them.
    indices = torch.tensor([0, 5, n_off + 2])
    batch = replay.gather(indices)
    with torch.no_grad():
        w = agent.policy.density(batch.observations, batch.actions).numpy().astype(np.float64)
    w_off = torch.tensor([0.5, 2.0, 4.0])
    expected = np.clip(w**0.2 / np.mean(w_off.numpy().astype(np.float64) ** 0.2), 1e-3, 1e3)
    max_before = replay.max_priority.item()  # 1e3: every priority is clipped to at most that
    agent.online_pretraining.update_priorities(agent, indices, batch, w_off)
    np.testing.assert_allclose(replay.priorities[indices].numpy(), expected, rtol=1e-5)
    assert replay.max_priority.item() == pytest.approx(max(max_before, expected.max()), rel=1e-6)
    replay.set_priorities(torch.tensor([1]), torch.tensor([2e3]))  # a larger priority raises the max
    assert replay.max_priority.item() == 2e3


def test_prioritised_sampling_follows_the_priorities(hopper):
    agent = small_opt(hopper, n_tau=5, n_pretrain=0)
    agent.finetune(5)
    replay = agent.replay
    n_off = replay.n_offline
    everything = torch.arange(n_off + replay.online_capacity)
    replay.set_priorities(everything, torch.zeros(len(everything)))
    replay.set_priorities(torch.tensor([7, n_off + 3]), torch.tensor([1.0, 3.0]))  # an offline, an online row
    indices, batch = replay.sample_prioritized(4000)
    assert set(indices.tolist()) == {7, n_off + 3}
    assert (indices == 7).sum().item() == pytest.approx(1000, abs=1)  # equal-mass segments: exact shares
    offline, online = replay.stored("offline"), replay.stored("online")
    for name in ("observations", "rewards"):
        expected = torch.where((indices == 7).view(-1, *[1] * (online[name].dim() - 1)), offline[name][7], online[name][3])
        torch.testing.assert_close(batch[name], expected)


# ---------------------------------------------------------------------------------------------- checkpoint, run


def test_save_load_gives_identical_actions(hopper, tmp_path):
    agent = small_opt(hopper, n_tau=20, n_pretrain=3, online_utd_ratio=1)
    agent.learn(5)
    agent.finetune(30)
    obs = hopper.observations[:16].numpy()
    before, _ = agent.predict(obs, deterministic=True)
    agent.save(tmp_path / "opt.zip")
    loaded = OPT.load(tmp_path / "opt.zip", dataset=hopper)
    after, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(before, after)
    for name in ("online_critic", "online_critic_target", "density"):
        for a, b in zip(getattr(agent.policy, name).parameters(), getattr(loaded.policy, name).parameters()):
            assert torch.equal(a, b)
    assert (
        loaded.policy.density_optimizer.state_dict()["state"].keys()
        == agent.policy.density_optimizer.state_dict()["state"].keys()
    )
    assert (loaded.n_tau, loaded.n_pretrain, loaded.kappa_end, loaded.temperature) == (20, 3, 0.9, 5.0)
    loaded.finetune(25)  # a loaded agent fine-tunes again: a new collection, a new Q_on
    assert loaded.online_pretraining.pretrained_at == 20


def test_short_finetuning_run_on_hopper(hopper):
    """Offline TD3+BC, then OPT online on the real Hopper (small n_tau / n_pretrain, UTD 1).

    The frozen phases keep the offline policy's score exactly, the meta-objective's offline TD loss falls
    over the pretraining, and phase 3 runs with finite losses. (No score floor after phase 3: at this scale,
    1.5k offline steps on 10k transitions, TD3's BC-free actor step collapses the policy within ~20 updates for
    any kappa, kappa = 0 included, i.e. plain TD3 fine-tuning does the same; measured, see the OPT report.)
    """
    task = hopper.task
    agent = OPT(
        hopper,
        seed=1,
        n_tau=400,
        n_pretrain=100,
        online_utd_ratio=1,
        kappa_steps=300,
        batch_size=64,
        policy_kwargs=dict(net_arch=[64, 64], density_net_arch=[64, 64]),
    )
    agent.learn(1500)

    def score() -> float:
        return float(
            np.mean(task.normalized_score(evaluate_returns(agent_predict(agent), task.env_id, 3, seed=100)))
        )

    offline_score = score()
    scores, pretrain_losses = {}, []
    record = agent.record

    def spy(**stats):
        if "pretrain_offline_loss" in stats:
            pretrain_losses.append(stats["pretrain_offline_loss"].item())
        record(**stats)

    agent.record = spy

    def callback(*_):
        if agent.num_timesteps == agent.n_tau - 1:
            scores["collected"] = score()
        return True

    agent.finetune(700, callback=callback, log_interval=0)
    assert scores["collected"] == offline_score  # phase 2a: the offline policy, untouched
    assert len(pretrain_losses) == 100
    assert np.mean(pretrain_losses[-20:]) < 0.5 * np.mean(pretrain_losses[:5])
    stats = {name: (total / agent._stat_counts[name]).item() for name, total in agent._stat_sums.items()}
    for name in (
        "critic_loss",
        "online_critic_loss",
        "density_loss",
        "actor_loss",
        "q_mean",
        "online_q_mean",
    ):
        assert math.isfinite(stats[name]), (name, stats)
    expected_kappa = np.mean([agent.online_pretraining.kappa_at(t) for t in range(400, 701)])
    assert stats["kappa"] == pytest.approx(expected_kappa)
    assert agent._n_updates == 1500 + 301
    assert torch.isfinite(agent.replay.priorities).all() and agent.ep_info_buffer


# ---------------------------------------------------------------------------------------------- settings


def test_bad_settings_are_clear_errors(hopper, tmp_path):
    for kwargs, match in [
        (dict(kappa_start=1.5), r"kappa_start .* in \[0, 1\]"),
        (dict(kappa_end=-0.1), r"kappa_end .* in \[0, 1\]"),
        (dict(kappa_steps=-1), "kappa_steps must be a whole number >= 0"),
        (dict(n_tau=0), "n_tau must be a whole number >= 1"),
        (dict(n_pretrain=-5), "n_pretrain must be a whole number >= 0"),
        (dict(n_tau=2.5), "n_tau"),
        (dict(temperature=0.0), "temperature"),
        (dict(inner_lr=-1e-3), "inner_lr"),
        (dict(online_gamma=1.5), "online_gamma"),
    ]:
        with pytest.raises(ValueError, match=match):
            OPT(hopper, **kwargs)
    agent = small_opt(hopper)
    agent.save(tmp_path / "a.zip")
    with pytest.raises(ValueError, match="give the agent its dataset"):
        OPT.load(tmp_path / "a.zip").finetune(10)


def test_registry_and_hyperparams(hopper):
    agent = make_agent("opt", hopper, seed=0, **SMALL)
    assert isinstance(agent, OPT) and agent.online_utd_ratio == 5
    kwargs, _ = load_hyperparams("opt", "zoo/hopper/random-v0")
    assert (kwargs["kappa_start"], kwargs["kappa_end"], kwargs["kappa_steps"]) == (1.0, 1.0, 0)
    kwargs, _ = load_hyperparams("opt", "zoo/walker2d/medium-v0")
    assert (kwargs["kappa_start"], kwargs["kappa_end"], kwargs["kappa_steps"]) == (0.3, 0.9, 150_000)
    kwargs, _ = load_hyperparams("opt", "zoo/halfcheetah/medium-replay-v0")
    assert (kwargs["kappa_start"], kwargs["kappa_end"], kwargs["kappa_steps"]) == (0.1, 0.9, 150_000)
    assert kwargs["online_utd_ratio"] == 5 and kwargs["n_tau"] == 25_000 and kwargs["n_pretrain"] == 50_000


# ---------------------------------------------------------------------------------------------- SPOT base


def small_opt_spot(dataset, **kwargs) -> OPTSPOT:
    return OPTSPOT(
        dataset,
        seed=0,
        vae_steps=20,
        batch_size=32,
        actor_init_w=1e-3,
        critic_init_w=3e-3,
        policy_kwargs=dict(net_arch=[32, 32], density_net_arch=[32, 32], vae_net_arch=[32, 32]),
        **kwargs,
    )


def test_opt_spot_phases_lambda_cooling_and_q_mix(hopper, tmp_path):
    agent = small_opt_spot(hopper, n_tau=15, n_pretrain=3, kappa_start=0.1, kappa_steps=10, actor_dropout=0.0)
    assert agent.online_utd_ratio == 1 and agent.policy.optimizer_names[-2:] == (
        "online_critic_optimizer",
        "density_optimizer",
    )
    agent.learn(40)  # 20 VAE steps, then 20 SPOT steps
    agent.finetune(25)
    assert (agent.online_pretraining.pretrained_at, agent.online_pretraining.n_pretrain_updates, agent._n_updates) == (15, 3, 40 + 11)
    # SPOT's lambda cooling counts the phase-3 updates only (t = 11 of T = 25 env steps x UTD 1).
    assert agent.current_lambda() == pytest.approx(agent.lambd * max(agent.lambd_end, 1 - 11 / 25))
    # A new Q_on starts like SPOT's critics: output layer from U(±critic_init_w), hidden layers by default.
    agent.online_pretraining.reset_networks(agent)
    *hidden, head = agent.policy.online_critic.net.layers
    assert head.weight.abs().max() <= 3e-3 and head.bias.abs().max() <= 3e-3
    assert hidden[0].weight.abs().max() > 0.05
    # The actor keeps SPOT's normalised loss, on Q_mix: -mean Q_mix / mean|Q_mix| + lambda_t n(s).
    set_constant_output(agent.policy.critic.net, [4.0, 1.0])
    set_constant_output(agent.policy.online_critic.net, [-20.0, 1.0])
    agent.online_pretraining.kappa = 0.5  # Q_mix = 0.5 * 4 - 0.5 * 20 = -8: the normalised Q term is +1
    batch = fixed_batch()
    agent.random.manual_seed(3)  # the agent's own generator
    loss, stats = agent.actor_loss(batch)
    agent.random.manual_seed(3)
    penalty = agent.density_loss(batch.observations, agent.actor(batch.observations)).mean()
    assert loss.item() == pytest.approx(1.0 + agent.current_lambda() * penalty.item(), rel=1e-5)
    assert stats["neg_log_beta"].item() == pytest.approx(penalty.item(), rel=1e-5)
    # Save -> load -> identical actions.
    obs = hopper.observations[:16].numpy()
    before, _ = agent.predict(obs, deterministic=True)
    agent.save(tmp_path / "opt-spot.zip")
    loaded = OPTSPOT.load(tmp_path / "opt-spot.zip", dataset=hopper)
    np.testing.assert_array_equal(before, loaded.predict(obs, deterministic=True)[0])
    for a, b in zip(agent.policy.parameters(), loaded.policy.parameters()):
        assert torch.equal(a, b)


def test_opt_spot_registry_and_hyperparams(hopper):
    assert isinstance(make_agent("opt-spot", hopper, seed=0, vae_steps=1), OPTSPOT)
    assert isinstance(make_agent("opt", hopper, base="spot", seed=0, vae_steps=1), OPTSPOT)
    kwargs, run = load_hyperparams("opt-spot", "D4RL/antmaze/large-diverse-v1")
    assert (kwargs["kappa_start"], kwargs["kappa_end"], kwargs["kappa_steps"]) == (0.1, 0.9, 200_000)
    assert (kwargs["lambd"], kwargs["lambd_end"], kwargs["online_gamma"], kwargs["reward_bias"]) == (
        0.025,
        0.2,
        0.995,
        -1.0,
    )
    assert run["n_eval_episodes"] == 100 and run["n_finetune_timesteps"] == 300_000
    kwargs, _ = load_hyperparams("opt-spot", "D4RL/door/cloned-v2")
    assert (kwargs["kappa_steps"], kwargs["lambd"], kwargs["lambd_end"]) == (250_000, 1.0, 0.5)
    assert kwargs["policy_kwargs"]["critic_layer_norm"] and "online_gamma" not in kwargs
