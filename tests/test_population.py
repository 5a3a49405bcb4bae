"""Populations (zoo.agents.population): member k of K trains as a population of one with seed k, per-member
hyperparameters reach their member, members export as ordinary agents, structural differences are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.data import Episode, load_dataset, write_dataset
from zoo.errors import ConfigError
from zoo.nn import VAE
from zoo.nn.members import MemberRandom
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
        for key in sa:  # relative above 1: second moments of Monte-Carlo critics reach 1e2 and more
            a, b = sa[key].float(), sb[key].float()
            worst = max(worst, ((a - b).abs() / b.abs().clamp(min=1.0)).max().item())
    return worst


@pytest.mark.parametrize(
    "key, settings, steps",
    [
        ("td3bc", {}, 30),
        ("calql", {"policy_kwargs": dict(net_arch=[32, 32], actor_net_arch=[32, 32])}, 12),
        ("td3bc-mc", {"pretrain_steps": 10, "policy_kwargs": dict(net_arch=[32, 32], actor_net_arch=[32, 32])}, 24),
        ("psqn", {"pretrain_steps": 8}, 20),
        ("psqn", {"pretrain_steps": 8, "pretrain_kwargs": {"freeze_backbone": True}}, 20),
        ("spot", {"vae_steps": 6, "policy_kwargs": dict(net_arch=[32, 32], vae_net_arch=[16, 16])}, 20),
        ("opt", {}, 20),
        ("opt-spot", {"vae_steps": 6, "policy_kwargs": dict(net_arch=[32, 32], vae_net_arch=[16, 16])}, 20),
        # soft-imitate: 4 BC updates, the soft returns at the switch, 4 critic updates, then 2 EDAC updates.
        # gamma 0.5 keeps the returns (and the critics' Adam moments) near 10, where fp32's rounding of the
        # batched and the single-member matmuls stays below 1e-6 (at gamma 0.99 they reach 400).
        ("edac-mc", {"gamma": 0.5, "pretrain_steps": 8, "policy_kwargs": dict(net_arch=[32, 32], n_critics=3)}, 10),
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


# ---------------------------------------------------------------------------------------------- recipes, SPOT

MC_SETTINGS = {**SMALL, "pretrain_steps": 10, "policy_kwargs": dict(net_arch=[32, 32], actor_net_arch=[32, 32])}
SPOT_SETTINGS = {**SMALL, "vae_steps": 6, "policy_kwargs": dict(net_arch=[32, 32], vae_net_arch=[16, 16])}


def test_a_recipe_option_per_member_reaches_its_member(dataset):
    """imitate's td_weight differs per member: the recipe holds the (P,) values, each member trains as a
    population of one with its own value would, and not as one with its neighbour's value."""
    weights = [0.25, 0.75]
    population = make_population(
        "td3bc-mc", dataset, [0, 1], members=[{"pretrain_kwargs": {"td_weight": w}} for w in weights], **MC_SETTINGS
    )
    assert torch.equal(population.pretraining.td_weight.cpu(), torch.tensor(weights))
    assert [m["pretrain_kwargs"] for m in population.member_hyperparameters] == [{"td_weight": w} for w in weights]
    population.learn(12)  # 10 mixed Monte-Carlo/TD pretraining updates, then TD3+BC
    for k, w in enumerate(weights):
        member = population.member(k)
        assert member.pretraining.td_weight == w
        alone = make_population("td3bc-mc", dataset, [k], pretrain_kwargs={"td_weight": w}, **MC_SETTINGS)
        alone.learn(12)
        assert max_difference(member.policy, alone.member(0).policy) <= 1e-6
        swapped = make_population(
            "td3bc-mc", dataset, [k], pretrain_kwargs={"td_weight": weights[1 - k]}, **MC_SETTINGS
        )
        swapped.learn(12)
        assert max_difference(member.critic, swapped.member(0).critic) > 1e-4


def test_soft_imitate_options_and_soft_returns_per_member(dataset):
    """edac-mc: td_weight per member reaches its member, and each member's soft returns come from its own
    actor and temperature (one column per member), as a population of one computes them."""
    settings = {**SMALL, "gamma": 0.5, "pretrain_steps": 8, "policy_kwargs": dict(net_arch=[32, 32], n_critics=3)}
    weights = [0.25, 0.75]
    population = make_population(
        "edac-mc", dataset, [0, 1], members=[{"pretrain_kwargs": {"td_weight": w}} for w in weights], **settings
    )
    population.learn(8)  # 4 BC updates, the soft returns, 4 critic updates
    columns = population.replay.column("soft_returns_to_go")
    assert columns.shape == (len(dataset), 2) and not torch.allclose(columns[:, 0], columns[:, 1])
    for k, w in enumerate(weights):
        alone = make_population("edac-mc", dataset, [k], pretrain_kwargs={"td_weight": w}, **settings)
        alone.learn(8)
        torch.testing.assert_close(columns[:, k], alone.replay.column("soft_returns_to_go"), rtol=1e-6, atol=1e-6)
        assert max_difference(population.member(k).policy, alone.member(0).policy) <= 1e-6


def test_members_with_their_own_gamma_get_their_own_monte_carlo_returns(dataset):
    """imitate's returns-to-go depend on gamma: members whose gamma differs each read their own column."""
    gammas = [0.9, 0.99]
    population = make_population("td3bc-mc", dataset, [0, 1], members=[{"gamma": g} for g in gammas], **MC_SETTINGS)
    population.learn(12)
    columns = population.replay.column("returns_to_go")
    assert columns.shape == (len(dataset), 2)
    for k, gamma in enumerate(gammas):
        torch.testing.assert_close(columns[:, k], dataset.returns_to_go(gamma, timeout_tail=True))
        alone = make_population("td3bc-mc", dataset, [k], gamma=gamma, **MC_SETTINGS)
        alone.learn(12)
        assert max_difference(population.member(k).policy, alone.member(0).policy) <= 1e-6


def test_a_recipe_choice_and_phase_settings_must_agree(dataset):
    """td_weight 0 is the plain MC loss (no TD term, no target noise drawn) and td_weight > 0 the normalised
    mix: members must all mix or none; soft-imitate's bc_fraction places the phase switch."""
    with pytest.raises(ConfigError, match="differ in 'td_weight_is_zero'"):
        make_population(
            "td3bc-mc", dataset, [0, 1], members=[{}, {"pretrain_kwargs": {"td_weight": 0.5}}], **MC_SETTINGS
        )
    with pytest.raises(ConfigError, match="differ in 'bc_fraction'"):
        make_population(
            "edac-mc", dataset, [0, 1], pretrain_steps=10,
            members=[{"pretrain_kwargs": {"bc_fraction": 0.5}}, {"pretrain_kwargs": {"bc_fraction": 0.3}}],
            **SMALL,
        )
    with pytest.raises(ConfigError, match="differ in .freeze_backbone."):
        make_population(
            "psqn", dataset, [0, 1], members=[{}, {"pretrain_kwargs": {"freeze_backbone": True}}], **SMALL
        )


def test_spot_lambda_per_member_reaches_its_member(dataset):
    """SPOT's lambda per member: with lambda = 0 a member's actor ignores the VAE's density penalty while its
    neighbour (lambda = 1) pays it; each member equals a population of one with its own lambda."""
    lambdas = [0.0, 1.0]
    population = make_population("spot", dataset, [0, 1], members=[{"lambd": v} for v in lambdas], **SPOT_SETTINGS)
    assert torch.equal(population.lambd.cpu(), torch.tensor(lambdas))
    population.learn(12)  # 6 VAE updates, then SPOT-TD3 (3 actor steps)
    for k, lambd in enumerate(lambdas):
        alone = make_population("spot", dataset, [k], lambd=lambd, **SPOT_SETTINGS)
        alone.learn(12)
        assert max_difference(population.member(k).policy, alone.member(0).policy) <= 1e-6
    # Scaling the (frozen) VAE's decoder changes member 1's actor gradient, not member 0's.
    population.policy.set_training_mode(False)  # no dropout: the two gradients see the same masks
    batch = population.sample(32)
    grads = []
    for scale in (1.0, 3.0):
        with torch.no_grad():
            for p in population.policy.vae.decoder.parameters():
                p.mul_(scale)
        population.policy.actor_optimizer.zero_grad()
        loss, _ = population.actor_loss(batch)
        loss.backward()
        grads.append([p.grad.clone() for p in population.actor.parameters()])
    member0_same = all(torch.allclose(a.view(2, -1)[0], b.view(2, -1)[0]) for a, b in zip(*grads))
    member1_same = all(torch.allclose(a.view(2, -1)[1], b.view(2, -1)[1]) for a, b in zip(*grads))
    assert member0_same and not member1_same


def test_a_population_vae_is_each_members_vae(dataset):
    """The batched VAE's member k computes what member k's own VAE computes on its rows, with member k's
    latent noise (its own generator): elbo and IWAE against the members taken out as ordinary agents."""
    population = make_population("spot", dataset, [0, 1], **SPOT_SETTINGS)
    population.learn(3)
    batch = population.sample(8)
    beta = torch.tensor([0.5, 2.0])
    vae = population.policy.vae
    for loss in ("elbo_loss", "iwae_loss"):
        states = population.random.get_state()
        together = getattr(vae, loss)(batch.observations, batch.actions, beta, 3)
        assert together.shape == (2, 8)
        for k in range(2):
            member_vae = VAE(11, 3, (16, 16), n_members=1)
            member_vae.load_state_dict(population.member(k).policy.vae.state_dict())
            member_vae.random = MemberRandom([0])
            member_vae.random.set_state([states[k]])  # member k's generator as the batched call found it
            rows = slice(k, k + 1)
            alone = getattr(member_vae, loss)(batch.observations[rows], batch.actions[rows], beta[rows], 3)
            torch.testing.assert_close(together[k], alone[0], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(together[0], together[1])


def test_members_with_their_own_learning_rates_train_as_alone(dataset):
    """Learning rates differ per member (MemberAdam's scaled step): each member still trains as a population
    of one with its rate, to float rounding."""
    rates = [1e-3, 3e-4, 3e-5]
    population = make_population(
        "td3bc", dataset, [0, 1, 2], members=[{"learning_rate": r} for r in rates], **SMALL
    )
    population.learn(20)
    for k, rate in enumerate(rates):
        alone = make_population("td3bc", dataset, [k], learning_rate=rate, **SMALL)
        alone.learn(20)
        assert max_difference(population.member(k).policy, alone.member(0).policy) <= 1e-6
        assert population.member(k).policy.critic_optimizer.param_groups[0]["lr"] == rate
    assert population.member_hyperparameters[2]["learning_rate"] == 3e-5


def test_members_with_their_own_learning_rate_schedules_train_as_alone(dataset):
    """SB3 learning-rate schedules (progress remaining, 1 -> 0) per member, mixed with a fixed rate: each
    member's optimizers follow its own schedule, so member k trains as the ordinary agent with seed k and that
    schedule does, and ends at its own rate."""
    schedules = [lambda progress: 1e-3 * progress, 3e-4, lambda progress: 1e-4 + 1e-4 * progress]
    population = make_population(
        "td3bc", dataset, [0, 1, 2], members=[{"learning_rate": s} for s in schedules], **SMALL
    )
    population.learn(20)
    progress = population._current_progress_remaining  # 0 after the last step; the rates set before it
    assert progress == 0.0
    rates = population.policy.critic_optimizer.member_lr.tolist()
    assert rates == pytest.approx([1e-3 * 1 / 20, 3e-4, 1e-4 + 1e-4 * 1 / 20], rel=1e-6)
    for k, schedule in enumerate(schedules):
        alone = make_agent("td3bc", dataset, seed=k, learning_rate=schedule, **SMALL)
        alone.learn(20)
        assert max_difference(population.member(k).policy, alone.policy) <= 1e-6
        assert alone.policy.critic_optimizer.param_groups[0]["lr"] == pytest.approx(rates[k], rel=1e-6)
    fixed = make_population("td3bc", dataset, [1], learning_rate=3e-4, **SMALL).learn(20)  # seed 1, fixed rate
    assert max_difference(population.member(1).policy, fixed.member(0).policy) <= 1e-6


@pytest.mark.parametrize(
    "key, settings",
    [
        ("td3bc", {}),
        # Cal-QL's online rows wait for their episode's end (Monte-Carlo returns): per-member readiness.
        ("calql", {"policy_kwargs": dict(net_arch=[32, 32], actor_net_arch=[32, 32])}),
    ],
)
def test_members_fine_tune_online_side_by_side_as_alone(dataset, key, settings):
    """finetune runs every member's Hopper-v5 side by side (one batched policy call per step): member k's
    env steps, online rows, mixed batches and updates are those of a population of one with seed k."""
    kwargs = {**SMALL, **settings, "online_mixing_ratio": 0.5}
    seeds = [3, 5]
    population = make_population(key, dataset, seeds, **kwargs)
    population.learn(4)
    population.finetune(60)
    for k, seed in enumerate(seeds):
        alone = make_population(key, dataset, [seed], **kwargs)
        alone.learn(4)
        alone.finetune(60)
        assert max_difference(population.member(k).policy, alone.member(0).policy) <= 1e-6
        mine = population.replay.column("rewards", source="online", member=k)
        theirs = alone.replay.column("rewards", source="online", member=0)
        np.testing.assert_allclose(mine.cpu(), theirs.cpu(), atol=1e-5)  # the same env steps, to float rounding
        if key == "calql":  # finished episodes got their Monte-Carlo returns
            returns = population.replay.column("mc_returns", source="online", member=k)
            assert population.replay.member_ready(k) > 0 and returns[: population.replay.member_ready(k)].abs().sum() > 0
    other = population.replay.column("rewards", source="online", member=1)
    assert not torch.equal(population.replay.column("rewards", source="online", member=0), other)


@pytest.mark.parametrize(
    "key, settings, steps",
    [
        ("td3bc", {}, 30),
        ("calql", {"policy_kwargs": dict(net_arch=[32, 32], actor_net_arch=[32, 32])}, 12),
        ("spot", {"vae_steps": 6, "policy_kwargs": dict(net_arch=[32, 32], vae_net_arch=[16, 16])}, 20),
    ],
)
def test_an_ordinary_agent_with_seed_k_trains_as_member_k(dataset, key, settings, steps):
    """`zoo train --seed k` and member k of `zoo train --seeds ...` are the same run: an ordinary agent draws
    from its own generator exactly what member k of a population draws, and steps as it does."""
    kwargs = {**SMALL, **settings}
    population = make_population(key, dataset, SEEDS, **kwargs)
    population.learn(steps)
    for k, seed in enumerate(SEEDS[:2]):
        ordinary = make_agent(key, dataset, seed=seed, **kwargs)
        ordinary.learn(steps)
        assert max_difference(population.member(k).policy, ordinary.policy) <= 1e-6
    # The exported member goes on with member k's stream: one more update each gives the same weights.
    member, ordinary = population.member(0), make_agent(key, dataset, seed=SEEDS[0], **kwargs)
    ordinary.learn(steps)
    member.learn(3, reset_num_timesteps=False)
    ordinary.learn(3, reset_num_timesteps=False)
    assert max_difference(member.policy, ordinary.policy) <= 1e-6
