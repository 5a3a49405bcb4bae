"""ExoRL datasets: dm_control env, the episode layout and its alignment, relabelling, Minari import,
corrupt/missing files, and the URLB explorers' losses and intrinsic rewards against hand computations."""

from __future__ import annotations

import copy
import json
import math
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch

from zoo.data import load_dataset, read_dataset, task_for
from zoo.datagen.exorl import (
    EpisodeReplay,
    ExoRLEpisodeError,
    ExplorerConfig,
    collect,
    episode_files,
    import_exorl,
    read_collect_info,
    read_episode,
    relabel_rewards,
)
from zoo.datagen.exorl.explorers import DDPGExplorer, ICMReward, NStepBatch, RNDReward, SMMReward
from zoo.envs import dmc_env_id, make_dmc_env

LENGTH = 30  # steps per episode in the collected test folders (dm_control's own limit is 1000)
TINY = {"hidden_dim": 32, "batch_size": 16, "num_seed_frames": 20, "rnd_rep_dim": 8}


@pytest.fixture(scope="module")
def random_root(tmp_path_factory):
    """3 episodes of 30 uniform-random steps on walker, written with the *walk* reward."""
    root = tmp_path_factory.mktemp("exorl")
    collect("walker", "random", root, steps=3 * LENGTH, seed=0, task="walk", episode_length=LENGTH)
    return root


@pytest.fixture(scope="module")
def explorer_roots(tmp_path_factory):
    """Each DDPG explorer, tiny config: 2 episodes, updates from step 30 on (URLB's default task: stand)."""
    root = tmp_path_factory.mktemp("explorers")
    for explorer in ("rnd", "icm", "smm"):
        collect("walker", explorer, root, steps=2 * LENGTH, seed=1, config=TINY, episode_length=LENGTH)
    return root


def stored(root, explorer="random"):
    return [dict(np.load(path)) for path in episode_files(root, "walker", explorer)]


# ---------------------------------------------------------------------------------------------------
# Environment


def test_env_observation_layout_actions_and_time_limit():
    env = gym.make("zoo/dmc-walker-walk-v0")
    obs, _ = env.reset(seed=5)
    physics = env.unwrapped.physics
    # dm_control's walker observation order: orientations (xx, xz of the 7 bodies), torso height, qvel.
    expected = np.concatenate(
        [
            physics.named.data.xmat[1:, ["xx", "xz"]].ravel(),
            [physics.named.data.xpos["torso", "z"]],
            physics.data.qvel,
        ]
    ).astype(np.float32)
    assert obs.dtype == np.float32 and obs.shape == (24,)
    np.testing.assert_array_equal(obs, expected)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (6,), np.float32)
    np.testing.assert_array_equal(env.reset(seed=5)[0], obs)  # seeded resets repeat
    assert not np.array_equal(env.reset(seed=6)[0], obs)
    env.step(np.full(6, 0.5, np.float32))
    np.testing.assert_allclose(physics.data.ctrl, 0.5)  # walker's ctrlrange is [-1, 1]: identity scaling
    steps, terminated, truncated = 1, False, False
    while not (terminated or truncated):
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert 0.0 <= reward <= 1.0
        steps += 1
    assert (steps, terminated, truncated) == (1000, False, True)  # the time limit is a truncation
    env.close()


def test_make_dmc_env_short_episodes_and_ids():
    env = make_dmc_env("walker", "run", seed=0, episode_length=7)
    assert dmc_env_id("walker", "run") == "zoo/dmc-walker-run-v0" and "zoo/dmc-walker-run-v0" in gym.registry
    env.reset()
    flags = [env.step(np.zeros(6))[2:4] for _ in range(7)]
    assert flags == [(False, False)] * 6 + [(False, True)]
    with pytest.raises(ValueError, match="episode_length"):
        make_dmc_env("walker", "run", episode_length=1001)


def test_unknown_task_and_domain_are_clear_errors(random_root):
    with pytest.raises(ValueError, match=r"'jump' is not a task .*'walker'.*stand, walk, run"):
        import_exorl(random_root, "walker", "random", "jump")
    with pytest.raises(ValueError, match=r"'walkerr' is not a dm_control suite domain.*walker"):
        make_dmc_env("walkerr", "walk")


# ---------------------------------------------------------------------------------------------------
# Episode files: layout, alignment, relabelling


def test_collected_files_follow_the_exorl_layout(random_root):
    paths = episode_files(random_root, "walker", "random")
    assert [p.name for p in paths] == [f"episode_{i:06d}_{LENGTH}.npz" for i in range(3)]
    for episode in stored(random_root):
        assert {k: (v.shape, v.dtype) for k, v in episode.items()} == {
            "observation": ((LENGTH + 1, 24), np.float32),
            "action": ((LENGTH + 1, 6), np.float32),
            "reward": ((LENGTH + 1, 1), np.float32),
            "discount": ((LENGTH + 1, 1), np.float32),
            "physics": ((LENGTH + 1, 18), np.float64),  # qpos 9 ‖ qvel 9 ‖ act 0
        }
        # Row 0 is the dummy reset row.
        assert not episode["action"][0].any() and episode["reward"][0, 0] == 0.0
        assert np.all(episode["discount"] == 1.0)
    info = read_collect_info(random_root / "walker" / "random")
    assert info["status"] == "complete" and info["steps"] == 3 * LENGTH and info["pretraining_task"] == "walk"


def test_row_i_is_action_i_applied_at_observation_i_minus_1(random_root):
    """Restore physics[i-1], apply action[i]: the env gives observation[i], reward[i] and physics[i]."""
    episode = stored(random_root)[1]
    env = make_dmc_env("walker", "walk")
    env.reset()
    for i in range(1, LENGTH + 1):
        with env.physics.reset_context():
            env.physics.set_state(episode["physics"][i - 1])
        obs, reward, *_ = env.step(episode["action"][i])
        np.testing.assert_allclose(obs, episode["observation"][i], atol=1e-6)
        np.testing.assert_allclose(reward, episode["reward"][i, 0], atol=1e-6)
        np.testing.assert_allclose(env.physics_state(), episode["physics"][i], atol=1e-9)
    # And the stored observation is the one dm_control computes for the stored physics state.
    with env.physics.reset_context():
        env.physics.set_state(episode["physics"][0])
    np.testing.assert_array_equal(
        episode["observation"][0],
        np.concatenate([v.ravel() for v in env.dm_task.get_observation(env.physics).values()]).astype(
            np.float32
        ),
    )


def test_relabelled_rewards_equal_the_collection_rewards(random_root, explorer_roots):
    walk, stand = make_dmc_env("walker", "walk"), make_dmc_env("walker", "stand")
    for episode in stored(random_root):  # collected with the walk reward
        relabelled = relabel_rewards(walk, episode["physics"])
        np.testing.assert_array_equal(relabelled[1:].astype(np.float32), episode["reward"][1:, 0])
        assert not np.allclose(relabel_rewards(stand, episode["physics"])[1:], relabelled[1:])
    for episode in stored(explorer_roots, "rnd"):  # URLB's pretraining task for walker: stand
        np.testing.assert_array_equal(
            relabel_rewards(stand, episode["physics"])[1:].astype(np.float32), episode["reward"][1:, 0]
        )


# ---------------------------------------------------------------------------------------------------
# Minari import


def test_import_aligns_transitions_and_records_metadata(random_root):
    path = import_exorl(random_root, "walker", "random", "walk")
    assert path.name == "random-v0" and path.parent.name == "walker-walk"
    flat = read_dataset("zoo/exorl/walker-walk/random-v0")
    episodes = stored(random_root)
    np.testing.assert_array_equal(
        flat.observations, np.concatenate([e["observation"][:-1] for e in episodes])
    )
    np.testing.assert_array_equal(
        flat.next_observations, np.concatenate([e["observation"][1:] for e in episodes])
    )
    np.testing.assert_array_equal(flat.actions, np.concatenate([e["action"][1:] for e in episodes]))
    np.testing.assert_array_equal(flat.rewards, np.concatenate([e["reward"][1:, 0] for e in episodes]))
    np.testing.assert_array_equal(flat.episode_ends, [LENGTH, 2 * LENGTH, 3 * LENGTH])
    assert not flat.terminations.any()
    np.testing.assert_array_equal(np.flatnonzero(flat.truncations), flat.episode_ends - 1)

    meta = flat.metadata
    assert meta["exorl_explorer"] == "random" and meta["exorl_relabel_task"] == "walk"
    assert meta["exorl_domain"] == "walker" and meta["exorl_source"] == str(
        (random_root / "walker" / "random").resolve()
    )
    assert json.loads(meta["exorl_collect"])["steps"] == 3 * LENGTH
    task = task_for("zoo/exorl/walker-walk/random-v0", meta)
    assert (task.env_id, task.ref_min_score, task.ref_max_score) == ("zoo/dmc-walker-walk-v0", 0.0, 1000.0)
    with gym.make(task.env_id) as env:
        assert env.observation_space.shape == flat.observations.shape[1:]


def test_import_relabels_for_another_task(random_root):
    import_exorl(random_root, "walker", "random", "run")
    flat = read_dataset("zoo/exorl/walker-run/random-v0")
    run = make_dmc_env("walker", "run")
    expected = np.concatenate([relabel_rewards(run, e["physics"])[1:] for e in stored(random_root)])
    np.testing.assert_allclose(flat.rewards, expected, rtol=1e-6)
    assert flat.metadata["exorl_relabel_task"] == "run"


def test_trajectory_fractions_keep_whole_first_episodes(random_root):
    import_exorl(random_root, "walker", "random", "walk")
    episodes = stored(random_root)
    one = load_dataset("zoo/exorl/walker-walk/random-v0", fraction=1 / 3, subset="trajectories", device="cpu")
    two = load_dataset("zoo/exorl/walker-walk/random-v0", fraction=0.5, subset="trajectories", device="cpu")
    assert len(one) == LENGTH and len(two) == 2 * LENGTH
    np.testing.assert_array_equal(one.observations.numpy(), episodes[0]["observation"][:-1])
    np.testing.assert_array_equal(two.next_observations.numpy()[LENGTH:], episodes[1]["observation"][1:])
    assert one.episode_index.unique().tolist() == [0] and two.episode_index.unique().tolist() == [0, 1]


def test_explorer_datasets_record_their_config(explorer_roots):
    import_exorl(explorer_roots, "walker", "smm", "stand")
    meta = read_dataset("zoo/exorl/walker-stand/smm-v0").metadata
    config = json.loads(meta["exorl_config"])
    assert (config["hidden_dim"], config["batch_size"], config["nstep"]) == (32, 16, 3)
    assert meta["exorl_config_name"] == "custom"
    collect_info = json.loads(meta["exorl_collect"])
    assert collect_info["steps"] == 2 * LENGTH and collect_info["updates"] == (2 * LENGTH - LENGTH) // 2
    # SMM stores its one-hot skill per row, constant within an episode.
    for episode in stored(explorer_roots, "smm"):
        assert episode["z"].shape == (LENGTH + 1, 4) and np.all(episode["z"] == episode["z"][0])
        assert episode["z"][0].sum() == 1.0


# ---------------------------------------------------------------------------------------------------
# Missing and corrupt files


@pytest.fixture
def damaged_root(random_root, tmp_path):
    root = tmp_path / "damaged"
    shutil.copytree(random_root / "walker", root / "walker")
    return root


def test_truncated_file_stops_the_import_naming_it(damaged_root):
    bad = damaged_root / "walker" / "random" / "buffer" / "episode_000001_30.npz"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(ExoRLEpisodeError, match="episode_000001_30.npz") as info:
        import_exorl(damaged_root, "walker", "random", "walk")
    assert info.value.path == bad
    assert not (damaged_root / "minari").exists()


def test_skip_mode_leaves_corrupt_files_out_with_a_warning(damaged_root):
    buffer = damaged_root / "walker" / "random" / "buffer"
    (buffer / "episode_000001_30.npz").write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="episode_000001_30.npz"):
        import_exorl(damaged_root, "walker", "random", "walk", on_error="skip")
    flat = read_dataset("zoo/exorl/walker-walk/random-v0")
    episodes = [dict(np.load(buffer / f"episode_00000{i}_30.npz")) for i in (0, 2)]
    np.testing.assert_array_equal(
        flat.observations, np.concatenate([e["observation"][:-1] for e in episodes])
    )
    assert json.loads(flat.metadata["exorl_skipped_files"]) == ["episode_000001_30.npz"]


def test_inconsistent_episode_is_reported(damaged_root):
    path = damaged_root / "walker" / "random" / "buffer" / "episode_000002_30.npz"
    episode = dict(np.load(path))
    episode["action"] = episode["action"][:-1]
    np.savez_compressed(path, **episode)
    with pytest.raises(
        ExoRLEpisodeError, match=r"episode_000002_30.npz: keys have different numbers of rows"
    ):
        import_exorl(damaged_root, "walker", "random", "walk")
    with pytest.raises(ExoRLEpisodeError, match="width 24, the environment expects 17"):
        read_episode(damaged_root / "walker" / "random" / "buffer" / "episode_000000_30.npz", obs_dim=17)


def test_missing_episode_index_is_reported(damaged_root):
    (damaged_root / "walker" / "random" / "buffer" / "episode_000001_30.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 episode indices are missing .*: 1"):
        import_exorl(damaged_root, "walker", "random", "walk")
    with pytest.warns(UserWarning, match="missing"):
        import_exorl(damaged_root, "walker", "random", "walk", on_error="skip")
    assert read_dataset("zoo/exorl/walker-walk/random-v0").episode_ends.tolist() == [LENGTH, 2 * LENGTH]
    with pytest.raises(FileNotFoundError, match="Explorers found under .*: random"):
        import_exorl(damaged_root, "walker", "rnd", "walk")


def test_collect_refuses_to_overwrite(random_root):
    with pytest.raises(FileExistsError, match="already holds 3 episode files"):
        collect("walker", "random", random_root, steps=LENGTH, episode_length=LENGTH)
    message = "Unknown explorer 'proto'; the explorers are: rnd, icm, smm, random"
    with pytest.raises(ValueError, match=message):
        collect("walker", "proto", random_root, steps=LENGTH)
    assert not (random_root / "walker" / "proto").exists()


# ---------------------------------------------------------------------------------------------------
# Explorers: hand computations on fixed batches (float64 numpy from the modules' own weights)


def _np(t):
    return t.detach().double().numpy()


def _linear(x, layer):
    return x @ _np(layer.weight).T + _np(layer.bias)


def _mlp(x, seq):
    """Linear layers of an nn.Sequential with ReLU between (every module not Linear is a ReLU here)."""
    layers = [m for m in seq if isinstance(m, torch.nn.Linear)]
    for i, layer in enumerate(layers):
        x = _linear(x, layer)
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def _fixed_batch(obs_dim=24, action_dim=6, size=64, meta_dim=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(size, obs_dim, generator=g) * 3.0
    meta = None
    if meta_dim:
        meta = torch.nn.functional.one_hot(torch.randint(meta_dim, (size,), generator=g), meta_dim).float()
    return NStepBatch(
        obs=obs,
        action=torch.rand(size, action_dim, generator=g) * 2 - 1,
        reward=torch.zeros(size, 1),
        discount=torch.full((size, 1), 0.99**3),
        next_obs=obs + torch.randn(size, obs_dim, generator=g),
        meta=meta,
    )


def _rnd_error(rnd, obs):
    mean, var = obs.mean(0), obs.var(0)  # BatchNorm1d in training mode: biased batch variance
    x = np.clip((obs - mean) / np.sqrt(var + 1e-5), -5.0, 5.0)
    return ((_mlp(x, rnd.target) - _mlp(x, rnd.predictor)) ** 2).mean(axis=1)


def test_rnd_reward_is_prediction_error_over_running_std():
    torch.manual_seed(0)
    cfg = ExplorerConfig(hidden_dim=32, rnd_rep_dim=16, lr=1e-3)
    module = RNDReward(24, 6, cfg, torch.device("cpu"))
    batches = [_fixed_batch(seed=1), _fixed_batch(seed=2, size=48)]
    M, S, n = 0.0, 1.0, 1e-4  # URLB's RMS start
    for batch in batches:
        before = copy.deepcopy(module.rnd)
        reward, metrics = module.update(batch)
        obs = _np(batch.obs)
        # The loss is the mean error of the predictor before its step ...
        np.testing.assert_allclose(float(metrics["rnd_loss"]), _rnd_error(before, obs).mean(), rtol=1e-5)
        # ... the reward uses the updated predictor (so it differs from the pre-step error) ...
        error = _rnd_error(module.rnd, obs)
        assert not np.allclose(error, _rnd_error(before, obs), rtol=1e-3)
        # ... divided by the square root of the running variance (no mean subtraction).
        B = len(error)
        delta = error.mean() - M
        M, S = M + delta * B / (n + B), (S * n + error.var(ddof=1) * B + delta**2 * n * B / (n + B)) / (n + B)
        n += B
        np.testing.assert_allclose(_np(reward)[:, 0], error / (math.sqrt(S) + 1e-8), rtol=1e-4)
    # The frozen target never moves.
    assert all(not p.requires_grad for p in module.rnd.target.parameters())


def test_icm_reward_is_log_one_plus_forward_error():
    torch.manual_seed(0)
    module = ICMReward(24, 6, ExplorerConfig(hidden_dim=32, lr=1e-3), torch.device("cpu"))
    batch = _fixed_batch(seed=3)
    before = copy.deepcopy(module.icm)
    reward, metrics = module.update(batch)
    s, a, s2 = _np(batch.obs), _np(batch.action), _np(batch.next_obs)

    def errors(icm):
        forward = np.linalg.norm(s2 - _mlp(np.concatenate([s, a], 1), icm.forward_net), axis=1)
        backward = np.linalg.norm(a - np.tanh(_mlp(np.concatenate([s, s2], 1), icm.backward_net)), axis=1)
        return forward, backward

    forward, backward = errors(before)
    np.testing.assert_allclose(float(metrics["icm_loss"]), forward.mean() + backward.mean(), rtol=1e-5)
    forward_after, _ = errors(module.icm)  # the reward comes after the ICM step
    np.testing.assert_allclose(_np(reward)[:, 0], np.log1p(forward_after), rtol=1e-5)
    assert not np.allclose(forward_after, forward, rtol=1e-3)


def test_smm_reward_is_vae_error_plus_log_z_plus_discriminator_ce():
    torch.manual_seed(0)
    module = SMMReward(24, 6, ExplorerConfig(hidden_dim=32), torch.device("cpu"))
    batch = _fixed_batch(seed=4, meta_dim=4)
    epsilon = torch.randn(64, 128, generator=torch.Generator().manual_seed(9))
    vae, discriminator = copy.deepcopy(module.vae), copy.deepcopy(module.z_pred_net)
    reward, metrics = module.update(batch, epsilon=epsilon)

    x = np.concatenate([_np(batch.obs), _np(batch.meta)], axis=1)
    features = np.maximum(_linear(np.maximum(_linear(x, vae.enc[0]), 0), vae.enc[2]), 0)
    mu, logvar = _linear(features, vae.enc_mu), _linear(features, vae.enc_logvar)
    x_hat = _mlp(mu + _np(epsilon) * np.exp(0.5 * logvar), vae.dec)
    h_s_z = ((x - x_hat) ** 2).sum(axis=1)
    kl = (-0.5 * (1 + logvar - mu**2 - np.exp(logvar)).sum(axis=1)).mean()
    np.testing.assert_allclose(float(metrics["vae_loss"]), 0.5 * kl + ((x - x_hat) ** 2).mean(), rtol=1e-5)

    logits = _mlp(_np(batch.obs), discriminator)
    z = _np(batch.meta).argmax(axis=1)
    top = logits.max(axis=1)
    ce = top + np.log(np.exp(logits - top[:, None]).sum(axis=1)) - logits[np.arange(len(z)), z]
    np.testing.assert_allclose(float(metrics["pred_loss"]), ce.mean(), rtol=1e-5)
    # URLB's sign: + CE (= -log d(z|s)), with the errors of the networks before their steps.
    np.testing.assert_allclose(_np(reward)[:, 0], h_s_z + math.log(4) + ce, rtol=1e-5)


def test_ddpg_critic_target_and_soft_update():
    torch.manual_seed(0)
    cfg = ExplorerConfig(hidden_dim=32, stddev=0.0)  # no noise: the target action is clamp(μ(s'))
    agent = DDPGExplorer(24, 6, ICMReward(24, 6, cfg, torch.device("cpu")), cfg, torch.device("cpu"))
    with torch.no_grad():  # make the target critic differ from the online one
        for p in agent.critic_target.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = _fixed_batch(seed=5)
    reward = torch.rand(64, 1, generator=torch.Generator().manual_seed(6))

    def trunk(net, x):  # Linear -> LayerNorm (eps 1e-5, affine) -> Tanh
        h = _linear(x, net.trunk[0])
        h = (h - h.mean(1, keepdims=True)) / np.sqrt(h.var(1, keepdims=True) + 1e-5)
        return np.tanh(h * _np(net.trunk[1].weight) + _np(net.trunk[1].bias))

    def actor(net, s):
        return np.tanh(_mlp(trunk(net, s), net.policy))

    def critic(net, s, a):
        h = trunk(net, np.concatenate([s, a], 1))
        return _mlp(h, net.Q1)[:, 0], _mlp(h, net.Q2)[:, 0]

    s, a, s2 = _np(batch.obs), _np(batch.action), _np(batch.next_obs)
    next_action = np.clip(actor(agent.actor, s2), -1 + 1e-6, 1 - 1e-6)
    target = _np(reward)[:, 0] + 0.99**3 * np.minimum(*critic(agent.critic_target, s2, next_action))
    q1, q2 = critic(agent.critic, s, a)
    expected = ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()
    loss = agent.critic_loss(batch.obs, batch.action, reward, batch.discount, batch.next_obs)
    np.testing.assert_allclose(float(loss.detach()), expected, rtol=1e-5)

    old_target = [p.clone() for p in agent.critic_target.parameters()]
    agent.update(batch)
    for new, old, online in zip(agent.critic_target.parameters(), old_target, agent.critic.parameters()):
        torch.testing.assert_close(new, 0.99 * old + 0.01 * online)


def test_nstep_replay_sampling_matches_urlb():
    """Rows hold their own index (+100 per episode): every sampled field can be checked by hand."""
    gamma, n = 0.9, 3
    replay = EpisodeReplay(4, 6, obs_dim=2, action_dim=1, meta_dim=1, device=torch.device("cpu"))
    rows = np.arange(7, dtype=np.float32)
    replay.add(np.stack([rows, rows], 1), rows[:, None], rows, np.ones(7), rows[:, None] + 0.5)  # 6 steps
    short = np.arange(5, dtype=np.float32) + 100  # 4 steps, terminated at the last
    discount = np.array([1, 1, 1, 1, 0], np.float32)
    replay.add(np.stack([short, short], 1), short[:, None], short, discount, short[:, None] + 0.5)
    torch.manual_seed(0)
    batch = replay.sample(2000, n, gamma)
    idx = batch.action[:, 0].numpy()
    long = idx < 100
    assert set(idx[long]) == {1, 2, 3, 4} and set(idx[~long]) == {101, 102}  # idx ~ U{1..L-n+1}
    np.testing.assert_array_equal(batch.obs[:, 0].numpy(), idx - 1)
    np.testing.assert_array_equal(batch.meta[:, 0].numpy(), idx - 0.5)
    np.testing.assert_array_equal(batch.next_obs[:, 0].numpy(), idx + n - 1)
    # r = R[i] + γ D[i] R[i+1] + γ² D[i] D[i+1] R[i+2]: the short episode's terminal row 104 (discount 0)
    # still adds its own reward, and its discount zeroes the bootstrap.
    expected_reward = idx + gamma * (idx + 1) + gamma**2 * (idx + 2)
    np.testing.assert_allclose(batch.reward[:, 0].numpy(), expected_reward, rtol=1e-6)
    expected_discount = np.where(idx == 102, 0.0, gamma**3)
    np.testing.assert_allclose(batch.discount[:, 0].numpy(), expected_discount, rtol=1e-6)


def test_every_explorer_learns_during_collection(explorer_roots):
    for explorer in ("rnd", "icm", "smm"):
        info = read_collect_info(explorer_roots / "walker" / explorer)
        assert info["config"]["hidden_dim"] == 32 and info["updates"] == 15
        assert (
            np.isfinite(info["mean_metrics"]["critic_loss"]) and info["mean_metrics"]["intrinsic_reward"] > 0
        )
        episodes = stored(explorer_roots, explorer)
        actions = np.concatenate([e["action"][1:] for e in episodes])
        assert actions.shape == (2 * LENGTH, 6) and np.all(np.abs(actions) < 1.0)
