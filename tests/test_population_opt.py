"""OPT and OPT-SPOT populations fine-tune online (issue 11): member k of a population equals a population of
one with seed k through every online phase (2a collection, 2b meta-pretraining of Q_on, 3 density ratio,
prioritised replay and Q_mix), per-member settings reach their member, the replay's priorities are per
member, and structural settings must agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_population import dataset, max_difference, optimizer_difference  # noqa: F401 (fixture)
from zoo.errors import ConfigError
from zoo.registry import make_agent, make_population

SMALL = dict(batch_size=32, policy_kwargs=dict(net_arch=[32, 32], density_net_arch=[16, 16]))
# Phase 2a for 12 env steps, phase 2b (6 meta-updates) at env step 12, then phase 3 with UTD 2 and kappa
# moving over 10 env steps: 30 env steps reach every phase and the end of the kappa ramp.
ONLINE = dict(n_tau=12, n_pretrain=6, kappa_steps=10, online_utd_ratio=2)
OPT_SETTINGS = {**SMALL, **ONLINE}
SPOT_SETTINGS = {
    **ONLINE,
    "batch_size": 32,
    "vae_steps": 4,
    "actor_init_w": 1e-3,
    "critic_init_w": 3e-3,
    "policy_kwargs": dict(net_arch=[32, 32], density_net_arch=[16, 16], vae_net_arch=[16, 16]),
}
OFFLINE_STEPS, ENV_STEPS = 8, 30


def fine_tuned(key: str, dataset, seeds, settings, **per_member):
    population = make_population(key, dataset, seeds, **settings, **per_member)
    population.learn(OFFLINE_STEPS)
    population.finetune(ENV_STEPS)
    return population


def assert_member_is_alone(member, alone) -> None:
    """Weights (Q_on and the density net included) to 1e-6, Adam moments relatively (test_population's)."""
    assert max_difference(member.policy, alone.policy) <= 1e-6
    for name in member.policy.optimizer_names:
        assert optimizer_difference(member, alone, name) <= 1e-6, name


@pytest.mark.parametrize(
    "key, settings", [("opt", OPT_SETTINGS), ("opt-spot", SPOT_SETTINGS)], ids=["opt", "opt-spot"]
)
def test_member_k_fine_tunes_as_a_population_of_one_with_seed_k(dataset, key, settings):
    """K = 3 members through offline learning and all online phases equal populations of one with their
    seeds: weights of actor, Q_off, Q_on, density net and all targets, Adam moments, online rows and
    priorities."""
    seeds = [3, 5, 8]
    population = fine_tuned(key, dataset, seeds, settings)
    component = population.online_pretraining
    assert component.pretrained_at == ONLINE["n_tau"] and component.n_pretrain_updates == ONLINE["n_pretrain"]
    phase_3_steps = ENV_STEPS - ONLINE["n_tau"] + 1
    assert population.n_updates == OFFLINE_STEPS + phase_3_steps * ONLINE["online_utd_ratio"]
    replay = population.replay
    assert replay.priorities.shape == (3, replay.n_offline + ENV_STEPS)
    for k, seed in enumerate(seeds):
        alone = fine_tuned(key, dataset, [seed], settings)
        assert_member_is_alone(population.member(k), alone.member(0))
        np.testing.assert_allclose(
            replay.column("rewards", source="online", member=k).cpu(),
            alone.replay.column("rewards", source="online", member=0).cpu(),
            atol=1e-5,
        )
        # member k's priorities over offline ∪ its own online rows, from its own density net and batches
        torch.testing.assert_close(replay.priorities[k], alone.replay.priorities[0], rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(replay.max_priority[k], alone.replay.max_priority[0], rtol=1e-5, atol=0.0)
    # The members are different agents, with different priorities (their own density nets and rows).
    assert max_difference(population.member(0).policy.density, population.member(1).policy.density) > 1e-3
    assert not torch.allclose(replay.priorities[0], replay.priorities[1])


@pytest.mark.parametrize(
    "key, settings", [("opt", OPT_SETTINGS), ("opt-spot", SPOT_SETTINGS)], ids=["opt", "opt-spot"]
)
def test_an_ordinary_agent_fine_tunes_as_member_k(dataset, key, settings):
    """`zoo train --seed k` and member k of `zoo train --seeds ...` fine-tune alike: Q_on and the density net
    are re-drawn from the agent's own generator, as member k draws them from its own."""
    population = fine_tuned(key, dataset, [3, 5], settings)
    ordinary = make_agent(key, dataset, seed=5, **settings)
    ordinary.learn(OFFLINE_STEPS)
    ordinary.finetune(ENV_STEPS)
    assert_member_is_alone(population.member(1), ordinary)


@pytest.mark.parametrize(
    "key, setting, values",
    [
        ("opt", "kappa_end", [0.2, 0.9]),
        ("opt", "inner_lr", [1e-2, 3e-4]),
        ("opt", "kappa_start", [0.0, 0.6]),
        ("opt", "temperature", [1.0, 5.0]),
        ("opt", "online_gamma", [0.9, 0.99]),
        ("opt", "density_learning_rate", [1e-3, 3e-4]),
        ("opt-spot", "lambd_end", [0.2, 0.8]),  # SPOT's online lambda cooling, per member
    ],
)
def test_per_member_online_settings_reach_their_member(dataset, key, setting, values):
    """Two members whose online float setting differs train as two populations of one with those values,
    and not as one with its neighbour's value."""
    settings = OPT_SETTINGS if key == "opt" else SPOT_SETTINGS
    population = fine_tuned(key, dataset, [0, 1], settings, members=[{setting: v} for v in values])
    assert [m[setting] for m in population.member_hyperparameters] == values
    for k, value in enumerate(values):
        member = population.member(k)
        assert getattr(member, setting) == value
        alone = fine_tuned(key, dataset, [k], {**settings, setting: value})
        assert_member_is_alone(member, alone.member(0))
        swapped = fine_tuned(key, dataset, [k], {**settings, setting: values[1 - k]})
        assert max_difference(member.policy, swapped.member(0).policy) > 1e-4


def test_kappa_per_member_mixes_each_members_critics(dataset):
    """The actor of member k climbs (1 - kappa_k) Q_off1 + kappa_k Q_on1 with its own kappa: checked by hand
    on constant critics at the end of the ramp (kappa = kappa_end)."""
    from tests.test_td3bc import set_constant_output

    members = [{"kappa_end": 0.2}, {"kappa_end": 0.9}]
    population = fine_tuned("opt", dataset, [0, 1], OPT_SETTINGS, members=members)
    component = population.online_pretraining
    torch.testing.assert_close(component.kappa, torch.tensor([0.2, 0.9], dtype=torch.float64))
    policy = population.policy
    set_constant_output(policy.critic.net, [4.0] * 4)  # Q_off = 4 for both members' critics
    set_constant_output(policy.online_critic.net, [10.0] * 4)  # Q_on = 10
    batch = population.sample(8)
    q = population.actor_q(batch.observations, population.actor(batch.observations))
    torch.testing.assert_close(q, torch.tensor([[0.8 * 4 + 0.2 * 10] * 8, [0.1 * 4 + 0.9 * 10] * 8]))


def test_online_structure_must_agree_within_a_population(dataset):
    for setting, values in (("n_tau", [10, 20]), ("n_pretrain", [5, 6]), ("kappa_steps", [0, 10]),
                            ("reset_optimizers_online", [True, False])):
        with pytest.raises(ConfigError, match=f"differ in '{setting}'"):
            make_population("opt", dataset, [0, 1], members=[{setting: v} for v in values], **SMALL)


def test_a_population_fine_tunes_with_per_member_priorities(dataset):
    """The replay keeps one row of priorities per member: new online rows enter at that member's running
    maximum, and a prioritised draw of member k lands only on rows with priority in member k's row."""
    population = make_population("opt", dataset, [0, 1], **{**OPT_SETTINGS, "n_tau": 20, "n_pretrain": 0})
    population.learn(2)
    population.finetune(5)  # phase 2a only: all online rows collected, priorities at the initial maximum 1
    replay = population.replay
    n_off = replay.n_offline
    assert replay.n_prioritized == [5, 5]
    assert torch.equal(replay.priorities[:, : n_off + 5], torch.ones(2, n_off + 5, dtype=torch.float64))
    everything = torch.arange(n_off + replay.online_capacity).expand(2, -1)
    replay.set_priorities(everything, torch.zeros(2, everything.shape[1]))
    # member 0: an offline row and its online row 3; member 1: only its online row 1
    replay.set_priorities(torch.tensor([[7, n_off + 3], [n_off + 1, n_off + 1]]),
                          torch.tensor([[1.0, 3.0], [2.0, 2.0]]))
    assert replay.max_priority.tolist() == [3.0, 2.0]  # each member's own running maximum
    indices, batch = replay.sample_prioritized(400)
    assert set(indices[0].tolist()) == {7, n_off + 3} and set(indices[1].tolist()) == {n_off + 1}
    assert (indices[0] == 7).sum().item() == pytest.approx(100, abs=1)  # equal-mass segments: exact shares
    online = [replay.column("observations", source="online", member=k) for k in range(2)]
    offline = replay.stored("offline").observations
    torch.testing.assert_close(batch.observations[1], online[1][1].expand(400, -1))
    expected = torch.where((indices[0] == 7).unsqueeze(-1), offline[7], online[0][3])
    torch.testing.assert_close(batch.observations[0], expected)
    assert not torch.equal(online[0][1], online[1][1])  # the members' rows are their own env steps


def test_the_meta_objective_is_each_members_own():
    """A population's meta-objective: per member L_off, L_on at its own inner step (its own inner_lr) and its
    own w; the gradient in member k's slices is the meta-gradient of member k's critic alone (float64)."""
    from zoo.agents.opt import meta_critic_loss
    from zoo.agents.replay import Batch
    from zoo.nn import EnsembleQ

    torch.manual_seed(0)
    population = EnsembleQ(11, 3, 2, (8, 8), n_members=2).double()
    inner_lr = torch.tensor([0.05, 0.01], dtype=torch.float64)

    def batch(n, shift):
        rows = Batch(observations=torch.randn(2, n, 11, dtype=torch.float64),
                     actions=torch.rand(2, n, 3, dtype=torch.float64) * 2 - 1)
        return rows, torch.randn(2, n, dtype=torch.float64) + shift

    (offline, y_off), (online, y_on) = batch(16, 0.0), batch(12, 3.0)
    y_on[1] -= 6.0  # member 1's online loss differs in size from member 0's: their weights differ
    params = dict(population.named_parameters())
    objective, loss_off, loss_on, weight = meta_critic_loss(
        population, params, offline, y_off, online, y_on, inner_lr
    )
    assert loss_off.shape == loss_on.shape == weight.shape == (2,)
    grads = torch.autograd.grad(objective, list(params.values()))
    for k in range(2):
        alone = EnsembleQ(11, 3, 2, (8, 8)).double()
        with torch.no_grad():
            for p, stacked in zip(alone.parameters(), params.values()):
                p.copy_(stacked.view(2, *p.shape)[k])
        mine = dict(alone.named_parameters())
        member = [Batch(observations=b.observations[k], actions=b.actions[k]) for b in (offline, online)]
        result = meta_critic_loss(alone, mine, member[0], y_off[k], member[1], y_on[k], float(inner_lr[k]))
        torch.testing.assert_close(torch.stack(result[1:]), torch.stack([loss_off[k], loss_on[k], weight[k]]))
        expected = torch.autograd.grad(result[0], list(mine.values()))
        for g, e in zip(grads, expected):
            torch.testing.assert_close(g.view(2, *e.shape)[k], e, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(weight[0], weight[1])


def test_density_loss_and_priorities_per_member():
    """Off2On's loss of a population is the sum of its members' losses; priorities normalise each member's rows
    by its own offline batch with its own temperature."""
    from zoo.agents.opt import balanced_priorities, density_ratio_loss

    w_off = torch.tensor([[1.0, 32.0], [2.0, 4.0]])
    w_on = torch.tensor([[1.0, 0.5], [3.0, 1.0]])
    together = density_ratio_loss(w_off, w_on)
    assert together.item() == pytest.approx(sum(density_ratio_loss(w_off[k], w_on[k]).item() for k in range(2)))
    w = torch.tensor([[1.0, 32.0, 0.0], [4.0, 16.0, 1e20]])
    temperature = torch.tensor([5.0, 2.0], dtype=torch.float64)
    priorities = balanced_priorities(w, w_off, temperature)
    for k in range(2):
        torch.testing.assert_close(priorities[k], balanced_priorities(w[k], w_off[k], float(temperature[k])))
    # member 0 (T = 5): w^(1/5) / mean(1, 2); member 1 (T = 2): w^(1/2) / mean(sqrt 2, 2), clipped to 1e3
    expected = [[1 / 1.5, 2 / 1.5, 1e-3], [2 / 1.7071068, 4 / 1.7071068, 1e3]]
    np.testing.assert_allclose(priorities.numpy(), expected, rtol=1e-6)
