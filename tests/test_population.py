"""Populations (zoo.agents.population): member k of K trains as a population of one with seed k, per-member
hyperparameters reach their member, members export as ordinary agents, structural differences are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.data import Episode, load_dataset, write_dataset
from zoo.errors import ConfigError
from zoo.registry import make_agent, make_population

DATASET = "zoo/hopper/population-v0"
SEEDS = [3, 5, 8, 13]
SMALL = dict(batch_size=32, policy_kwargs=dict(net_arch=[32, 32]))


def random_episodes(n_episodes: int = 6, steps: int = 40, seed: int = 0) -> list[Episode]:
    """Hopper-shaped episodes (obs 11, actions 3 in [-1, 1]) of random values; the last one terminates."""
    rng = np.random.default_rng(seed)
    episodes = []
    for e in range(n_episodes):
        terminations = np.zeros(steps, dtype=bool)
        terminations[-1] = e == n_episodes - 1
        episodes.append(
            Episode(
                rng.normal(size=(steps + 1, 11)),
                rng.uniform(-1, 1, size=(steps, 3)),
                rng.normal(size=steps),
                terminations,
                np.zeros(steps, dtype=bool),
                seed=e,
            )
        )
    return episodes


@pytest.fixture
def dataset():
    write_dataset(DATASET, random_episodes(), env_id="Hopper-v5")
    return load_dataset(DATASET, device="cpu")


def max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[n] - sb[n]).abs().max().item() for n in sa)


def optimizer_difference(a, b, name: str) -> float:
    oa, ob = getattr(a.policy, name), getattr(b.policy, name)
    worst = 0.0
    for pa, pb in zip(oa.param_groups[0]["params"], ob.param_groups[0]["params"]):
        sa, sb = oa.state.get(pa, {}), ob.state.get(pb, {})
        assert sa.keys() == sb.keys()
        for key in sa:
            worst = max(worst, (sa[key].float() - sb[key].float()).abs().max().item())
    return worst


@pytest.mark.parametrize(
    "key, settings, steps",
    [
        ("td3bc", {}, 30),
        ("calql", {"policy_kwargs": dict(net_arch=[32, 32], actor_net_arch=[32, 32])}, 12),
        ("td3bc-mc", {"pretrain_steps": 10, "policy_kwargs": dict(net_arch=[32, 32], actor_net_arch=[32, 32])}, 24),
        # CQL with the Lagrange multiplier, the max backup and the entropy backup: every per-member path.
        (
            "cql",
            {"cql_lagrange": True, "cql_target_action_gap": 0.8, "max_target_backup": True, "backup_entropy": True,
             "n_actions": 4, "policy_kwargs": dict(net_arch=[32, 32])},
            12,
        ),
        ("edac", {"policy_kwargs": dict(net_arch=[32, 32], n_critics=3)}, 12),
    ],
)
def test_member_k_trains_as_a_population_of_one_with_seed_k(dataset, key, settings, steps):
    """Weights and Adam moments of member k of K = 4 after `steps` updates equal those of a population of one
    with seed k (fp32, CPU): member k's randomness, batches, losses and optimizer never see the others."""
    kwargs = {**SMALL, **settings}
    population = make_population(key, dataset, SEEDS, **kwargs)
    population.learn(steps)
    for k, seed in enumerate(SEEDS):
        alone = make_population(key, dataset, [seed], **kwargs)
        alone.learn(steps)
        member, single = population.member(k), alone.member(0)
        assert max_difference(member.policy, single.policy) <= 1e-6
        for name in member.policy.optimizer_names:
            assert optimizer_difference(member, single, name) <= 1e-6
    # The members really are different agents (their own seeds and batches).
    assert max_difference(population.member(0).policy, population.member(1).policy) > 1e-3


def test_a_population_starts_from_each_seeds_ordinary_initialisation(dataset):
    """Before training, member k's weights are exactly those of an ordinary agent built with seed k."""
    population = make_population("td3bc", dataset, SEEDS, **SMALL)
    for k, seed in enumerate(SEEDS):
        ordinary = make_agent("td3bc", dataset, seed=seed, **SMALL)
        assert max_difference(population.member(k).policy, ordinary.policy) == 0.0


def test_a_member_with_alpha_zero_is_plain_td3_while_its_neighbour_is_td3bc(dataset):
    """Per-member hyperparameters reach their member: with alpha = 0 the actor loss is pure behaviour
    cloning... of nothing but the Q term's weight 0, i.e. member 0's actor follows MSE(pi, a) only, while
    member 1 (alpha 2.5) also climbs Q. Checked against ordinary agents with those settings."""
    population = make_population(
        "td3bc", dataset, [0, 1], members=[{"alpha": 0.0}, {"alpha": 2.5}], **SMALL
    )
    assert torch.equal(population.alpha.cpu(), torch.tensor([0.0, 2.5]))
    assert [m["alpha"] for m in population.member_hyperparameters] == [0.0, 2.5]
    population.learn(20)
    for k, alpha in enumerate([0.0, 2.5]):
        alone = make_population("td3bc", dataset, [k], alpha=alpha, **SMALL)
        alone.learn(20)
        assert max_difference(population.member(k).policy, alone.member(0).policy) <= 1e-6
        assert population.member(k).alpha == alpha
    # With alpha = 0 the actor's gradient ignores Q: changing the critic leaves member 0's actor loss
    # gradient unchanged, but not member 1's.
    batch = population.sample(32)
    grads = []
    for scale in (1.0, 3.0):
        with torch.no_grad():
            for p in population.critic.parameters():
                p.mul_(scale)
        population.policy.actor_optimizer.zero_grad()
        loss, _ = population.actor_loss(batch)
        loss.backward()
        grads.append([p.grad.clone() for p in population.actor.parameters()])
    member0_same = all(torch.allclose(a.view(2, -1)[0], b.view(2, -1)[0]) for a, b in zip(*grads))
    member1_same = all(torch.allclose(a.view(2, -1)[1], b.view(2, -1)[1]) for a, b in zip(*grads))
    assert member0_same and not member1_same


def test_members_export_as_ordinary_agents_and_act_as_in_the_population(dataset, tmp_path):
    from zoo.checkpoint import load_checkpoint, save_checkpoint

    population = make_population("td3bc", dataset, SEEDS, **SMALL)
    population.learn(10)
    observations = np.random.default_rng(0).normal(size=(len(SEEDS), 5, 11)).astype(np.float32)
    together = population.predict_members(observations)
    assert together.shape == (len(SEEDS), 5, 3)
    for k, seed in enumerate(SEEDS):
        member = population.member(k)
        assert member.seed == seed and not member.is_population and member.n_updates == 10
        alone, _ = member.predict(observations[k], deterministic=True)
        np.testing.assert_allclose(alone, together[k], atol=1e-6)
        save_checkpoint(member, tmp_path / f"seed{seed}", key="td3bc")
        loaded = load_checkpoint(tmp_path / f"seed{seed}", dataset=dataset)
        np.testing.assert_allclose(loaded.predict(observations[k], deterministic=True)[0], together[k], atol=1e-6)


def test_structural_differences_are_refused_in_one_line(dataset):
    with pytest.raises(ConfigError, match="differ in 'policy_delay'"):
        make_population("td3bc", dataset, [0, 1], members=[{"policy_delay": 2}, {"policy_delay": 3}], **SMALL)
    with pytest.raises(ConfigError, match="policy_kwargs.net_arch"):
        make_population(
            "td3bc", dataset, [0, 1], members=[{}, {"policy_kwargs": {"net_arch": [16, 16]}}], **SMALL
        )
    with pytest.raises(ConfigError, match="seeds of a population must differ"):
        make_population("td3bc", dataset, [0, 0], **SMALL)
