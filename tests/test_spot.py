"""SPOT: the VAE's losses by hand, the actor loss, the VAE phase, lambda cooling, save/load, real runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.test_td3bc import fixed_batch, hopper, hopper_root, set_constant_output  # noqa: F401
from zoo import SPOT, evaluate_returns, make_agent
from zoo.agents.spot import DropoutActor
from zoo.config import load_hyperparams
from zoo.evaluation import EvalCallback, agent_predict
from zoo.nn import VAE

SMALL = dict(policy_kwargs=dict(net_arch=[32, 32], vae_net_arch=[32, 32]), batch_size=64)


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def same(before, module):
    return all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def constant_vae(vae: VAE, mean, log_std, decoded):
    """Zero every weight; the encoder then outputs (mean, log_std) and the decoder tanh(decoded) everywhere."""
    set_constant_output(vae.encoder, [*mean, *log_std])
    set_constant_output(vae.decoder, decoded)


# ---------------------------------------------------------------------------------------------- VAE


def test_vae_elbo_loss_by_hand():
    vae = VAE(obs_dim=2, act_dim=3, hidden=(4, 4), latent_dim=2)
    # log sigma 0.2 stays, -7 is clamped to -4 (SPOT's clamp); the decoder ignores z, so no sample matters.
    constant_vae(vae, mean=[0.5, -1.0], log_std=[0.2, -7.0], decoded=[0.3, -0.2, 0.0])
    obs = torch.tensor([[1.0, 2.0], [-3.0, 0.5]])
    actions = torch.tensor([[0.1, 0.2, -0.3], [0.9, -0.9, 0.0]])
    _, log_std = vae.encode(obs, actions)
    torch.testing.assert_close(log_std, torch.tensor([[0.2, -4.0]] * 2))
    recon = np.tanh([0.3, -0.2, 0.0])
    mse = ((recon[None] - actions.numpy()) ** 2).mean(1)
    kl = np.mean([-0.5 * (1 + 2 * ls - m**2 - math.exp(2 * ls)) for m, ls in ((0.5, 0.2), (-1.0, -4.0))])
    for samples in (1, 4):
        loss = vae.elbo_loss(obs, actions, beta=0.5, num_samples=samples)
        np.testing.assert_allclose(loss.detach().numpy(), mse + 0.5 * kl, rtol=1e-6)
    # The upper clamp: log sigma 20 -> 15.
    constant_vae(vae, mean=[0.0, 0.0], log_std=[20.0, 3.0], decoded=[0.0, 0.0, 0.0])
    torch.testing.assert_close(vae.encode(obs, actions)[1], torch.tensor([[15.0, 3.0]] * 2))


def test_vae_losses_match_a_plain_computation_with_random_weights():
    torch.manual_seed(3)
    vae = VAE(obs_dim=2, act_dim=3, hidden=(5, 5), latent_dim=4)
    obs, actions = torch.randn(6, 2), torch.rand(6, 3) * 2 - 1
    beta, L = 0.5, 3

    def mlp(net, x):
        *hidden, last = net.layers
        for layer in hidden:
            x = F.relu(x @ layer.weight[0] + layer.bias[0, 0])
        return x @ last.weight[0] + last.bias[0, 0]

    with torch.no_grad():
        torch.manual_seed(11)
        eps = torch.randn(L, 6, 4)  # the one draw the losses make
        out = mlp(vae.encoder, torch.cat([obs, actions], 1))
        mu, log_sigma = out[:, :4], out[:, 4:].clamp(-4, 15)
        sigma = log_sigma.exp()
        z = mu + sigma * eps
        recon = torch.tanh(mlp(vae.decoder, torch.cat([obs.expand(L, 6, 2), z], -1)))
        kl = -0.5 * (1 + torch.log(sigma.pow(2)) - mu.pow(2) - sigma.pow(2)).mean(-1)  # thuml/SPOT's form
        elbo = ((recon - actions) ** 2).mean(dim=(0, 2)) + beta * kl
        normal = torch.distributions.Normal
        log_w = (
            normal(recon, math.sqrt(beta / 4)).log_prob(actions).sum(-1)
            + normal(0.0, 1.0).log_prob(z).sum(-1)
            - normal(mu, sigma).log_prob(z).sum(-1)
        )
        iwae = -(log_w.logsumexp(0) - math.log(L))
        torch.manual_seed(11)
        torch.testing.assert_close(vae.elbo_loss(obs, actions, beta, L), elbo)
        torch.manual_seed(11)
        torch.testing.assert_close(vae.iwae_loss(obs, actions, beta, L), iwae)


# ---------------------------------------------------------------------------------------------- losses


def test_actor_loss_by_hand(hopper):
    agent = SPOT(hopper, seed=0, lambd=0.3, beta=0.5, vae_steps=0, **SMALL)
    policy = agent.policy
    assert not any(p.requires_grad for p in policy.vae.parameters())  # vae_steps=0: frozen from the start
    set_constant_output(policy.actor.net, [0.5, -0.25, 0.0])  # pi(s) = tanh(bias); dropout of zeros is zero
    constant_vae(policy.vae, mean=[0.1, 0.2, -0.3, 0.0, 0.5, 1.0], log_std=[0.0, -1.0, 0.5, 0.2, 0.0, -0.5],
                 decoded=[0.2, 0.0, -0.4])
    pi = np.tanh([0.5, -0.25, 0.0])
    mean = np.array([0.1, 0.2, -0.3, 0.0, 0.5, 1.0])
    log_std = np.array([0.0, -1.0, 0.5, 0.2, 0.0, -0.5])
    n = np.mean((np.tanh([0.2, 0.0, -0.4]) - pi) ** 2) + 0.5 * np.mean(
        -0.5 * (1 + 2 * log_std - mean**2 - np.exp(2 * log_std))
    )
    batch = fixed_batch()
    set_constant_output(policy.critic.net, [4.0, -7.0])  # the actor climbs Q1 only
    assert agent.actor_loss(batch)[0].item() == pytest.approx(-1.0 + 0.3 * n, rel=1e-6)  # -4 / |4| + lambda n
    set_constant_output(policy.critic.net, [-3.0, 9.0])
    assert agent.actor_loss(batch)[0].item() == pytest.approx(1.0 + 0.3 * n, rel=1e-6)
    agent.normalize_q = False  # the official --without_Q_norm
    assert agent.actor_loss(batch)[0].item() == pytest.approx(3.0 + 0.3 * n, rel=1e-6)
    # The penalty's gradient reaches the actor through the frozen VAE and stays off the VAE.
    agent.actor_loss(batch)[0].backward()
    assert all(p.grad is None for p in policy.vae.parameters())
    assert policy.actor.net.layers[-1].bias.grad.abs().sum() > 0


def test_vae_phase_ends_at_exactly_vae_steps(hopper):
    agent = SPOT(hopper, seed=0, vae_steps=3, policy_delay=2, **SMALL)
    policy = agent.policy
    vae_calls, td3_calls, vae_batches = [], [], []
    vae_update, rl_update, vae_loss = agent.vae_update, agent.rl_update, agent.vae_loss
    agent.vae_update = lambda b: (vae_calls.append(agent._n_updates), vae_update(b))
    agent.rl_update = lambda b: (td3_calls.append(agent._n_updates), rl_update(b))
    agent.vae_loss = lambda b: (vae_batches.append(b), vae_loss(b))[1]
    vae0, actor0, critic0 = snapshot(policy.vae), snapshot(policy.actor), snapshot(policy.critic)
    targets0 = snapshot(policy.actor_target) + snapshot(policy.critic_target)
    assert all(p.requires_grad for p in policy.vae.parameters())
    agent.learn(3)
    assert vae_calls == [1, 2, 3] and td3_calls == [] and agent.pretrain_until == 3
    assert not same(vae0, policy.vae)
    assert same(actor0, policy.actor) and same(critic0, policy.critic)
    assert same(targets0, torch.nn.ModuleList([policy.actor_target, policy.critic_target]))
    assert not any(p.requires_grad for p in policy.vae.parameters())  # frozen after its last step
    # The VAE trained on the normalised states the actor sees (rows of the normalised table).
    assert (vae_batches[0].observations[:1] == agent.replay.column("observations")).all(1).any()
    # Then SPOT's updates: critics every step, the actor on even steps; the VAE no longer moves.
    vae1 = snapshot(policy.vae)
    agent.learn(2, reset_num_timesteps=False)
    assert vae_calls == [1, 2, 3] and td3_calls == [4, 5]
    assert same(vae1, policy.vae)
    assert not same(actor0, policy.actor) and not same(critic0, policy.critic)


def test_a_pretraining_recipe_runs_between_the_vae_phase_and_spot(hopper):
    agent = SPOT(hopper, seed=0, vae_steps=3, pretrain="imitate", pretrain_steps=2, **SMALL)
    calls = {"vae": [], "pretrain": [], "td3": []}
    vae_update, rl_update, pretrain_update = agent.vae_update, agent.rl_update, agent.pretraining.update
    agent.vae_update = lambda b: (calls["vae"].append(agent._n_updates), vae_update(b))
    agent.rl_update = lambda b: (calls["td3"].append(agent._n_updates), rl_update(b))
    agent.pretraining.update = lambda a, b: (calls["pretrain"].append(a._n_updates), pretrain_update(a, b))
    agent.learn(7)
    assert agent.pretrain_until == 5
    assert calls == {"vae": [1, 2, 3], "pretrain": [4, 5], "td3": [6, 7]}


def test_lambda_is_constant_offline_and_cools_during_finetune(hopper):
    agent = SPOT(hopper, seed=0, lambd=0.4, lambd_end=0.2, vae_steps=10, online_utd_ratio=2, **SMALL)
    agent.learn(20)
    assert agent.current_lambda() == 0.4
    seen = {}
    agent.finetune(100, callback=lambda *_: seen.update({agent.num_timesteps: agent.current_lambda()}) or True)
    # t = 2k online updates after env step k, T = 100 env steps x UTD 2 = 200: lambda max(0.2, 1 - t/200).
    assert seen[10] == pytest.approx(0.4 * 0.9) and seen[50] == pytest.approx(0.4 * 0.5)
    assert seen[80] == pytest.approx(0.4 * 0.2) and seen[90] == pytest.approx(0.4 * 0.2)  # the floor
    assert seen[100] == pytest.approx(0.4 * 0.2)
    # The actor loss carries the cooled weight: Q > 0 everywhere and n(s) = 1 give -1 + lambda_t.
    set_constant_output(agent.critic.net, [2.0, 2.0])
    agent.density_loss = lambda obs, actions: torch.ones(len(obs))
    assert agent.actor_loss(fixed_batch())[0].item() == pytest.approx(-1.0 + 0.08)
    # Offline again, lambda is constant; without cooling it is constant online too.
    agent.learn(2)
    assert agent.current_lambda() == 0.4
    flat = SPOT(hopper, seed=0, lambd=0.4, lambd_cool=False, vae_steps=2, **SMALL)
    flat.learn(4)
    flat.finetune(20)
    assert flat.current_lambda() == 0.4


def test_finetune_before_the_vae_is_trained_is_a_clear_error(hopper):
    agent = SPOT(hopper, seed=0, vae_steps=50, **SMALL)
    agent.learn(10)
    with pytest.raises(ValueError, match="needs the VAE trained first"):
        agent.finetune(5)


# ---------------------------------------------------------------------------------------------- options


def test_actor_dropout_and_head_init_options(hopper):
    agent = SPOT(hopper, seed=0, actor_dropout=0.5, actor_init_w=1e-3, critic_init_w=3e-3, vae_steps=2, **SMALL)
    policy = agent.policy
    assert isinstance(policy.actor, DropoutActor) and isinstance(policy.actor_target, DropoutActor)
    assert agent.actor is policy.actor and agent._actor_params[0] is policy.actor.net.layers[0].weight
    # Head init: output layers within U(+-w), targets equal to their networks.
    for net, w in ((policy.actor.net, 1e-3), (policy.critic.net, 3e-3)):
        last = net.layers[-1]
        assert last.weight.abs().max() <= w and last.bias.abs().max() <= w and last.weight.abs().max() > 0
    for target, online in ((policy.actor_target, policy.actor), (policy.critic_target, policy.critic)):
        assert all(torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters()))
    # Dropout in training mode only; eval mode is the plain deterministic actor with the same weights.
    obs = fixed_batch().observations
    policy.set_training_mode(True)
    assert not torch.equal(policy.actor(obs), policy.actor(obs))
    policy.set_training_mode(False)
    x = obs
    for layer in policy.actor.net.layers[:-1]:
        x = F.relu(x @ layer.weight[0] + layer.bias[0, 0])
    last = policy.actor.net.layers[-1]
    torch.testing.assert_close(policy.actor(obs), torch.tanh(x @ last.weight[0] + last.bias[0, 0]))
    assert list(policy.actor.state_dict()) == [f"net.layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    # predict() (an evaluation callback's) switches to eval mode; learn's next gradient step switches
    # dropout back on.
    agent.learn(1)
    agent.predict(obs.numpy(), deterministic=True)
    assert not policy.actor.training
    modes = []
    agent.learn(1, reset_num_timesteps=False, callback=lambda *_: modes.append(policy.actor.training) or True)
    assert modes == [True]
    assert policy.actor_target.training  # the official target actor keeps its dropout


def test_learning_rates_of_actor_critic_and_vae(hopper):
    def lr(optimizer):
        return optimizer.param_groups[0]["lr"]

    agent = SPOT(hopper, seed=0, actor_learning_rate=1e-4, vae_learning_rate=2e-3, vae_steps=2, **SMALL)
    policy = agent.policy
    assert (lr(policy.actor_optimizer), lr(policy.critic_optimizer), lr(policy.vae_optimizer)) == (1e-4, 3e-4, 2e-3)
    scheduled = SPOT(hopper, seed=0, learning_rate=lambda progress: 1e-3 * progress, vae_steps=2, **SMALL)
    scheduled.learn(10)
    policy = scheduled.policy
    assert lr(policy.critic_optimizer) == pytest.approx(1e-4) and lr(policy.actor_optimizer) == pytest.approx(1e-4)
    assert lr(policy.vae_optimizer) == 1e-3  # the schedule leaves the VAE's rate alone
    fixed = SPOT(hopper, seed=0, learning_rate=lambda progress: 1e-3 * progress, actor_learning_rate=1e-4,
                 vae_steps=2, **SMALL)
    fixed.learn(10)
    assert lr(fixed.policy.actor_optimizer) == 1e-4 and lr(fixed.policy.critic_optimizer) == pytest.approx(1e-4)


# ---------------------------------------------------------------------------------------------- save / load


def test_save_load_gives_identical_actions_and_vae(hopper, tmp_path):
    agent = SPOT(hopper, seed=0, lambd=0.25, vae_steps=5, **SMALL)
    agent.learn(12)
    obs = hopper.observations[:16].numpy()
    before, _ = agent.predict(obs, deterministic=True)
    agent.save(tmp_path / "spot.zip")
    loaded = SPOT.load(tmp_path / "spot.zip")
    after, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(before, after)
    assert (loaded.lambd, loaded.vae_steps, loaded.actor_dropout) == (0.25, 5, 0.1)
    assert isinstance(loaded.policy.actor, DropoutActor)
    assert not any(p.requires_grad for p in loaded.policy.vae.parameters())
    batch, outputs = fixed_batch(), []
    for vae in (agent.policy.vae, loaded.policy.vae):
        vae.random.manual_seed(0)  # each agent's own generator
        outputs.append((vae.encode(batch.observations, batch.actions), vae.elbo_loss(batch.observations, batch.actions, 0.5)))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    saved_state = agent.policy.vae_optimizer.state_dict()["state"]
    loaded_state = loaded.policy.vae_optimizer.state_dict()["state"]
    torch.testing.assert_close(saved_state[0]["exp_avg"], loaded_state[0]["exp_avg"])
    # Saved in the middle of the VAE phase: it resumes there and freezes at vae_steps.
    mid = SPOT(hopper, seed=0, vae_steps=8, **SMALL)
    mid.learn(4)
    mid.save(tmp_path / "mid.zip")
    resumed = SPOT.load(tmp_path / "mid.zip", dataset=hopper)
    assert all(p.requires_grad for p in resumed.policy.vae.parameters())
    resumed.learn(6, reset_num_timesteps=False)
    assert resumed._n_updates == 10 and not any(p.requires_grad for p in resumed.policy.vae.parameters())


# ---------------------------------------------------------------------------------------------- real runs


def test_offline_run_improves_on_its_starting_score(hopper):
    """VAE 300 steps then 2200 SPOT steps with small networks; lambda 1 (a firm support constraint) lets a
    run this short learn: hopper's official 0.1 needs the full budget."""
    task = hopper.task
    agent = SPOT(hopper, seed=0, lambd=1.0, vae_steps=300, batch_size=128,
                 policy_kwargs=dict(net_arch=[64, 64], vae_net_arch=[64, 64]))
    start = float(np.mean(task.normalized_score(evaluate_returns(agent_predict(agent), task.env_id, 5, seed=100))))
    agent.learn(2500)
    score = float(np.mean(task.normalized_score(evaluate_returns(agent_predict(agent), task.env_id, 5, seed=100))))
    assert score > start + 10, (start, score)


def test_short_finetune_runs(hopper):
    agent = make_agent("spot", hopper, seed=0, vae_steps=20, lambd=1.0, **SMALL)
    agent.learn(40)
    vae = snapshot(agent.policy.vae)
    callback = EvalCallback(eval_freq=150, n_eval_episodes=2)
    agent.finetune(300, callback=callback)
    assert [e.step for e in callback.evaluations] == [150, 300]
    assert agent.replay.online_size == 300 and agent._n_updates == 340
    assert same(vae, agent.policy.vae)
    assert agent.current_lambda() == pytest.approx(0.2)
    assert all(np.isfinite(e.normalized_score) for e in callback.evaluations)


# ---------------------------------------------------------------------------------------------- config, errors


def test_shipped_yaml_maps_the_official_lambdas():
    for dataset_id, lambd in (
        ("zoo/hopper/medium-v0", 0.1),
        ("zoo/hopper/medium-replay-v0", 0.1),
        ("zoo/hopper/medium-expert-v0", 0.2),
        ("zoo/walker2d/medium-v0", 0.2),
        ("zoo/walker2d/medium-expert-v0", 0.5),
        ("zoo/halfcheetah/medium-replay-v0", 0.05),
        ("zoo/halfcheetah/medium-expert-v0", 1.0),
    ):
        kwargs, run = load_hyperparams("spot", dataset_id)
        assert kwargs["lambd"] == lambd, dataset_id
    assert kwargs["vae_steps"] == 100_000 and kwargs["beta"] == 0.5 and run["n_timesteps"] == 1_100_000
    assert kwargs["policy_kwargs"]["vae_net_arch"] == [750, 750]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(vae_steps=-1), "vae_steps must be a whole number >= 0"),
        (dict(vae_steps=2.5), "vae_steps must be a whole number >= 0"),
        (dict(lambd_end=1.5), r"lambd_end .* in \[0, 1\]"),
        (dict(lambd=-0.1), "lambd must be a number >= 0"),
        (dict(num_samples=0), "num_samples"),
        (dict(actor_dropout=1.0), "actor_dropout"),
        (dict(actor_init_w=0.0), "actor_init_w"),
        (dict(iwae=True, beta=0.0), "beta"),
        (dict(vae_learning_rate=0.0), "vae_learning_rate"),
        (dict(actor_learning_rate=-1e-4), "actor_learning_rate"),
    ],
)
def test_bad_settings_are_clear_errors(hopper, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SPOT(hopper, **kwargs)


def test_bad_vae_latent_is_a_clear_error():
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(3, 2, latent_dim=0)
