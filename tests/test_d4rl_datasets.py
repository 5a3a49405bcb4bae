"""D4RL-style datasets built locally (zoo.datagen.d4rl), the vendored behaviour checkpoints, their training.

Every dataset is a real Minari dataset collected in MuJoCo and written to the per-test root of
conftest.py, at small sizes (a few episodes' worth).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from zoo.cli import main
from zoo.data import D4RL_REFERENCE_RETURNS, load_dataset, local_dataset_ids, read_dataset
from zoo.datagen import d4rl
from zoo.datagen.behavior import SACActor, vendored_behavior
from zoo.datagen.behavior_training import read_progress, train_behavior
from zoo.datagen.d4rl import (
    ENVS,
    SEGMENT_STEPS,
    behavior_set,
    d4rl_dataset_ids,
    make_d4rl_dataset,
    parse_dataset_id,
    read_manifest,
    recipe,
)
from zoo.datagen.generate import GENERATOR_VERSION

ENV_IDS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}
FIELDS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")
ASSETS = Path(d4rl.__file__).parents[1] / "assets" / "behavior"


@pytest.fixture
def make():
    """make_d4rl_dataset with test-sized defaults (2 envs), returning the dataset loaded on the CPU."""

    def build(dataset_id: str, steps: int, seed: int = 0, n_envs: int = 2, **kwargs):
        make_d4rl_dataset(dataset_id, steps=steps, seed=seed, n_envs=n_envs, **kwargs)
        return load_dataset(dataset_id, device="cpu")

    return build


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def episodes_of(data) -> list[np.ndarray]:
    """Row indices of each episode, in order."""
    index = data.episode_index.numpy()
    return [np.flatnonzero(index == e) for e in np.unique(index)]


def assert_whole_episodes_aligned(data) -> None:
    """T+1 alignment: s'[t] == s[t+1] inside each episode; each episode ends with one end flag."""
    for rows in episodes_of(data):
        assert np.all(np.diff(rows) == 1)
        obs, next_obs = data.observations[rows], data.next_observations[rows]
        assert torch.equal(next_obs[:-1], obs[1:])
        ends = (data.terminations[rows] | data.truncations[rows]).numpy()
        assert ends[-1] and not ends[:-1].any()
        assert not (data.terminations[rows] & data.truncations[rows]).any()


def tanh_gaussian_log_prob(actor: SACActor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Mean log-density of the actions under the actor's squashed Gaussian (SB3's SAC policy)."""
    with torch.no_grad():
        latent = actor.latent_pi(obs)
        mean, log_std = actor.mu(latent), actor.log_std(latent).clamp(-20, 2)
        a = actions.clamp(-1 + 1e-6, 1 - 1e-6)
        u = torch.atanh(a)
        log_prob = torch.distributions.Normal(mean, log_std.exp()).log_prob(u) - torch.log1p(-a.pow(2) + 1e-6)
    return log_prob.sum(-1).mean()


# ----------------------------------------------------------------------------------------------------------
# Ids, recipes, vendored checkpoints
# ----------------------------------------------------------------------------------------------------------


def test_ids_and_default_recipes():
    ids = d4rl_dataset_ids()
    assert len(ids) == 15 and len(set(ids)) == 15
    assert "zoo/hopper/medium-replay-v0" in ids and "zoo/walker2d/medium-expert-v0" in ids
    for dataset_id in ids:
        env, quality = parse_dataset_id(dataset_id)
        assert dataset_id == f"zoo/{env}/{quality}-v0"
    for env in ENVS:
        behavior = behavior_set(env)
        assert [(p.checkpoint, p.steps, p.seed) for p in recipe(env, "random")] == [(None, 1_000_000, 0)]
        assert [(p.checkpoint, p.steps) for p in recipe(env, "medium", seed=3)] == [
            (behavior.medium, 1_000_000)
        ]
        assert [(p.checkpoint, p.steps) for p in recipe(env, "expert")] == [(behavior.expert, 1_000_000)]
        # medium-expert: D4RL's 1M + 1M, both halves with the dataset's seed.
        me = recipe(env, "medium-expert", seed=5)
        assert [(p.checkpoint, p.steps, p.seed) for p in me] == [
            (behavior.medium, 1_000_000, 5),
            (behavior.expert, 1_000_000, 5),
        ]
        assert [p.steps for p in recipe(env, "medium-expert", steps=7)] == [3, 4]
        # medium-replay: random for 10k, then checkpoints 10k, 20k, ... before medium, 10k each.
        mr = recipe(env, "medium-replay", seed=2)
        segments = behavior.medium.step // SEGMENT_STEPS
        assert len(mr) == segments
        assert mr[0].checkpoint is None
        assert [p.checkpoint.step for p in mr[1:]] == list(
            range(SEGMENT_STEPS, behavior.medium.step, SEGMENT_STEPS)
        )
        assert all(p.steps == SEGMENT_STEPS for p in mr)
        assert sum(p.steps for p in mr) == behavior.medium.step  # the medium step count, not 1M
        assert [p.seed for p in mr] == [2 + j * d4rl.PART_SEED_STRIDE for j in range(segments)]
        assert all(p.n_envs == 1 for p in mr)  # one stream per segment, as the training
        assert all(p.n_envs is None for p in (*me, *recipe(env, "random")))  # the dataset's n_envs
        # --steps N shares N out equally (the first N % segments get one more).
        scaled = [p.steps for p in recipe(env, "medium-replay", steps=10 * segments + 3)]
        assert scaled == [11, 11, 11] + [10] * (segments - 3) and sum(scaled) == 10 * segments + 3
    assert sum(p.steps for p in recipe("hopper", "medium-replay")) == 130_000


def test_manifest_and_vendored_checkpoints():
    manifest = read_manifest()
    assert sorted(manifest["envs"]) == sorted(ENVS)
    vendored = {p.name for p in ASSETS.glob("*.pt")}
    listed = set()
    for env, entry in manifest["envs"].items():
        assert entry["env_id"] == ENV_IDS[env]
        checks = {c["step"]: c for c in entry["checkpoints"]}
        behavior = behavior_set(env)
        medium, expert = behavior.medium, behavior.expert
        assert (medium.file, expert.file) == (entry["medium"], entry["expert"])
        # The choice follows the rule on the re-measured returns: expert the best, medium nearest a third.
        measured = {s: c["return_measured"] for s, c in checks.items()}
        assert expert.step == max(measured, key=measured.get)
        target = measured[expert.step] / 3
        assert medium.step == min(
            (s for s in measured if s < expert.step), key=lambda s: abs(measured[s] - target)
        )
        assert abs(medium.measured_return - target) < 0.2 * target
        # Exactly the files the recipes need are vendored: replay segments, medium, expert.
        needed = {*range(SEGMENT_STEPS, medium.step, SEGMENT_STEPS), medium.step, expert.step}
        files = {c["file"] for c in entry["checkpoints"] if c["file"]}
        assert files == {f"{env}_sac_actor_{s:07d}.pt" for s in needed}
        listed |= files
        with gym.make(ENV_IDS[env]) as e:
            for c in behavior.checkpoints:
                assert (
                    c.step == checks[c.step]["step"]
                    and c.progress_return == checks[c.step]["return_progress_csv"]
                )
                assert checks[c.step]["episodes"] >= 20
                SACActor.from_state_dict(vendored_behavior(c.file), e)  # loads and fits its env
        assert medium.stochastic_return is not None and expert.stochastic_return > medium.stochastic_return
    assert vendored == listed
    assert "hopper_sac_actor_0130000.pt" in vendored  # the quickstart's actor stays
    assert not list(ASSETS.glob("*.zip"))
    assert sum(p.stat().st_size for p in ASSETS.iterdir()) < 15e6


@pytest.mark.parametrize(
    "dataset_id, message",
    [
        ("zoo/ant/medium-v0", "Unknown env 'ant'"),
        ("zoo/hopper/good-v0", "Unknown quality 'good'"),
        ("zoo/hopper/medium-v2", "not a D4RL-style zoo id"),
        ("hopper-medium-v2", "not a D4RL-style zoo id"),
    ],
)
def test_unknown_ids_name_the_valid_ones(dataset_id, message, minari_root_per_test):
    with pytest.raises(ValueError, match=message) as info:
        make_d4rl_dataset(dataset_id, steps=100)
    text = str(info.value)
    assert "hopper, halfcheetah, walker2d" in text
    assert "random, medium, medium-replay, expert, medium-expert" in text
    assert tree(minari_root_per_test) == []


@pytest.mark.parametrize("steps", [0, -5, 2.5, True])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        make_d4rl_dataset("zoo/hopper/random-v0", steps=steps)
    with pytest.raises(ValueError, match="segments; steps must be at least that"):
        make_d4rl_dataset("zoo/hopper/medium-replay-v0", steps=5)


# ----------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset_id", ["zoo/hopper/medium-v0", "zoo/halfcheetah/expert-v0", "zoo/walker2d/random-v0"]
)
def test_round_trip(dataset_id, make):
    env, quality = parse_dataset_id(dataset_id)
    data = make(dataset_id, steps=1000, seed=0)
    lengths = [len(rows) for rows in episodes_of(data)]
    # Whole episodes until at least 1000 transitions: without the last one there are fewer.
    assert len(data) == sum(lengths) >= 1000 > sum(lengths) - lengths[-1]
    if env == "halfcheetah":
        assert lengths == [1000]  # never terminates: one 1000-step episode
    with gym.make(ENV_IDS[env]) as e:
        assert data.observation_space == e.observation_space and data.action_space == e.action_space
        assert data.observations.shape == (len(data), e.observation_space.shape[0])
        assert data.actions.shape == (len(data), e.action_space.shape[0])
        # Episode k of the part starts from reset(seed=seed + k); dropped running episodes leave gaps.
        starts = torch.from_numpy(
            np.stack([e.reset(seed=k)[0] for k in range(len(lengths) + 2)]).astype(np.float32)
        )
    assert data.actions.abs().max().item() <= 1.0
    assert_whole_episodes_aligned(data)
    for rows in episodes_of(data):
        assert (starts == data.observations[rows[0]]).all(dim=1).any()

    ref_min, ref_max = D4RL_REFERENCE_RETURNS[env]
    assert data.task.env_id == ENV_IDS[env]
    assert (data.task.ref_min_score, data.task.ref_max_score) == (ref_min, ref_max)
    assert data.metadata["ref_min_score"] == pytest.approx(ref_min) and data.metadata[
        "ref_max_score"
    ] == pytest.approx(ref_max)
    assert data.metadata["zoo_generator_version"] == GENERATOR_VERSION
    rec = json.loads(data.metadata["zoo_recipe"])
    assert (rec["name"], rec["env"], rec["quality"], rec["seed"], rec["steps_requested"]) == (
        f"d4rl/{quality}",
        env,
        quality,
        0,
        1000,
    )
    assert rec["parts"][0]["episodes"] == [0, len(lengths)] and rec["parts"][0]["transitions"] == len(data)
    assert rec["parts"][0]["mean_return"] == pytest.approx(data.source_episode_returns.mean(), rel=1e-5)
    behavior = json.loads(data.metadata["zoo_behavior"])
    if quality == "random":
        assert behavior == [] and rec["parts"][0]["policy"] == "uniform-random"
    else:
        c = getattr(behavior_set(env), quality)
        assert behavior == [c.record()]
        assert behavior[0]["checkpoint"] == f"{env}_sac_actor_{c.step:07d}.pt"
        assert behavior[0]["training_step"] == c.step and behavior[0]["return_measured"] == c.measured_return
        assert rec["parts"][0]["policy"] == c.file and rec["parts"][0]["deterministic"] is False


def test_same_seed_same_data_other_seed_other_data(make):
    first = make("zoo/hopper/medium-v0", steps=800, seed=0)
    again = make("zoo/hopper/medium-v0", steps=800, seed=0, overwrite=True)
    for field in (*FIELDS, "episode_index"):
        assert torch.equal(getattr(first, field), getattr(again, field))
    other = make("zoo/hopper/medium-v0", steps=800, seed=1, overwrite=True)
    assert not torch.equal(other.observations[:5], first.observations[:5])
    assert not torch.equal(other.actions[:5], first.actions[:5])
    # Random actions, too, are a function of the seed.
    r0 = make("zoo/hopper/random-v0", steps=300, seed=0)
    r0_again = make("zoo/hopper/random-v0", steps=300, seed=0, overwrite=True)
    r1 = make("zoo/hopper/random-v0", steps=300, seed=1, overwrite=True)
    assert torch.equal(r0.actions, r0_again.actions) and torch.equal(r0.observations, r0_again.observations)
    assert not torch.equal(r0.actions[:5], r1.actions[:5])


def test_qualities_order_and_medium_expert_holds_both_halves(make):
    random = make("zoo/hopper/random-v0", steps=2000)
    medium = make("zoo/hopper/medium-v0", steps=2000)
    expert = make("zoo/hopper/expert-v0", steps=2000)
    mixed = make("zoo/hopper/medium-expert-v0", steps=4000)

    returns = {
        name: d.source_episode_returns.mean()
        for name, d in [("random", random), ("medium", medium), ("expert", expert)]
    }
    assert returns["random"] < returns["medium"] < returns["expert"]
    scores = {name: random.task.normalized_score(r) for name, r in returns.items()}
    assert scores["random"] < 5 and 15 < scores["medium"] < 60 and scores["expert"] > 80
    # medium-expert = medium-v0 then expert-v0 with the same seed and half the steps each.
    n = len(medium)
    assert len(mixed) == n + len(expert)
    for field in FIELDS:
        assert torch.equal(getattr(mixed, field)[:n], getattr(medium, field))
        assert torch.equal(getattr(mixed, field)[n:], getattr(expert, field))
    assert mixed.episode_index[n].item() == medium.episode_index[-1].item() + 1
    rec = json.loads(mixed.metadata["zoo_recipe"])
    hopper = behavior_set("hopper")
    assert [p["policy"] for p in rec["parts"]] == [hopper.medium.file, hopper.expert.file]
    assert [p["steps"] for p in rec["parts"]] == [2000, 2000]
    assert [p["transitions"] for p in rec["parts"]] == [n, len(expert)]
    assert [p["mean_return"] for p in rec["parts"]] == pytest.approx(
        [returns["medium"], returns["expert"]], rel=1e-5
    )
    assert json.loads(mixed.metadata["zoo_behavior"]) == [hopper.medium.record(), hopper.expert.record()]


def test_medium_replay_replays_the_training_in_order(make):
    hopper = behavior_set("hopper")
    segments = hopper.medium.step // SEGMENT_STEPS  # 13: random + checkpoints 10k ... 120k
    data = make("zoo/hopper/medium-replay-v0", steps=300 * segments)
    rec = json.loads(data.metadata["zoo_recipe"])
    parts = rec["parts"]
    replayed = hopper.replay_checkpoints()
    assert [p["policy"] for p in parts] == ["uniform-random"] + [c.file for c in replayed]
    assert [p["training_step"] for p in parts] == [None] + list(
        range(SEGMENT_STEPS, hopper.medium.step, SEGMENT_STEPS)
    )
    assert [p["steps"] for p in parts] == [300] * segments
    spans = [p["episodes"] for p in parts]
    assert spans[0][0] == 0 and spans[-1][1] == int(data.episode_index.max()) + 1
    assert all(
        a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(spans)
    )  # contiguous, non-empty, in order
    assert len(data) == sum(p["transitions"] for p in parts) and all(p["transitions"] >= 300 for p in parts)
    assert json.loads(data.metadata["zoo_behavior"]) == [c.record() for c in replayed]
    # One env per segment: it stops at the first episode reaching its share, nothing dropped.
    lengths = np.bincount(data.episode_index.numpy())
    assert [p["n_envs"] for p in parts] == [1] * segments
    assert all(p["transitions"] - lengths[p["episodes"][1] - 1] < 300 for p in parts)
    assert_whole_episodes_aligned(data)

    # Which policy took each part's actions? Compare the mean log-density under each checkpoint and under
    # the uniform density on [-1, 1]^3 (log 1/8): each part is best explained by its own policy. The
    # narrowest margins (random vs the untrained 10k actor, both broad) are ~0.15 nats, ~5 standard errors.
    index = data.episode_index
    with gym.make("Hopper-v5") as env:
        actors = [SACActor.from_state_dict(c.path, env) for c in replayed]
    uniform = float(np.log(1 / 8))
    for j, (start, end) in enumerate(spans):
        rows = (index >= start) & (index < end)
        obs, actions = data.observations[rows], data.actions[rows]
        scores = [uniform] + [tanh_gaussian_log_prob(a, obs, actions).item() for a in actors]
        assert int(np.argmax(scores)) == j, (j, np.round(scores, 1))
    # The first part is uniform random: flat histogram, mean 0, variance 1/3.
    first = data.actions[(index >= spans[0][0]) & (index < spans[0][1])].numpy()
    assert abs(first.mean()) < 0.05 and abs(first.var() - 1 / 3) < 0.04
    hist = np.histogram(first, bins=4, range=(-1, 1))[0] / first.size
    assert np.all(np.abs(hist - 0.25) < 0.04)


# ----------------------------------------------------------------------------------------------------------
# Failures leave nothing behind
# ----------------------------------------------------------------------------------------------------------


def failing_after(monkeypatch, calls: int):
    """Make the collection raise on call number `calls` + 1 (the earlier ones run for real)."""
    real = d4rl.collect_episodes
    count = {"n": 0}

    def collect(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise RuntimeError("simulated crash during collection")
        return real(*args, **kwargs)

    monkeypatch.setattr(d4rl, "collect_episodes", collect)
    return count


@pytest.mark.parametrize(
    "dataset_id, calls", [("zoo/hopper/medium-expert-v0", 1), ("zoo/hopper/medium-replay-v0", 3)]
)
def test_failure_midway_leaves_no_dataset(dataset_id, calls, monkeypatch, minari_root_per_test):
    count = failing_after(monkeypatch, calls)
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_d4rl_dataset(dataset_id, steps=400 if "expert" in dataset_id else 13 * 30, n_envs=2)
    assert count["n"] == calls + 1  # it did fail midway, after real collection
    assert tree(minari_root_per_test) == []  # no dataset, no namespace folder, no .zoo-staging-*
    assert local_dataset_ids() == []


def test_failed_overwrite_keeps_the_old_dataset(make, monkeypatch, minari_root_per_test):
    old = make("zoo/hopper/random-v0", steps=200)
    before = tree(minari_root_per_test)
    failing_after(monkeypatch, 0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        make_d4rl_dataset("zoo/hopper/random-v0", steps=300, seed=1, overwrite=True)
    assert tree(minari_root_per_test) == before
    assert not [p for p in minari_root_per_test.rglob(".*") if ".zoo-cache" not in p.parts]
    assert torch.equal(load_dataset("zoo/hopper/random-v0", device="cpu").actions, old.actions)


def test_existing_dataset_is_refused_before_collecting(make, monkeypatch):
    make("zoo/hopper/random-v0", steps=100)
    count = failing_after(monkeypatch, 0)
    with pytest.raises(FileExistsError, match="'zoo/hopper/random-v0' already exists.*overwrite=True"):
        make_d4rl_dataset("zoo/hopper/random-v0", steps=100)
    assert count["n"] == 0


def test_checkpoint_of_another_env_is_refused(monkeypatch, minari_root_per_test):
    hopper, cheetah = behavior_set("hopper"), behavior_set("halfcheetah")
    wrong = dataclasses.replace(hopper, medium=cheetah.medium)
    monkeypatch.setattr(d4rl, "behavior_set", lambda env: wrong)
    with pytest.raises(
        ValueError, match="expects observations of size 17 and actions of size 6.*Hopper-v5 has 11 and 3"
    ):
        make_d4rl_dataset("zoo/hopper/medium-v0", steps=100)
    assert tree(minari_root_per_test) == []


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def test_cli_make_and_list(capsys):
    assert (
        main(["datasets", "make", "zoo/walker2d/random-v0", "--steps", "300", "--seed", "2", "--n-envs", "2"])
        == 0
    )
    out = capsys.readouterr().out
    assert "zoo/walker2d/random-v0" in out and "written to" in out
    flat = read_dataset("zoo/walker2d/random-v0")
    assert len(flat.rewards) >= 300 and json.loads(flat.metadata["zoo_recipe"])["seed"] == 2

    assert main(["datasets", "make", "zoo/walker2d/random-v0", "--steps", "300"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["datasets", "make", "zoo/ant/random-v0"]) == 2
    assert "Unknown env 'ant'" in capsys.readouterr().err

    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    listed, not_built = out.split("not built yet")
    assert "zoo/walker2d/random-v0" in listed and "zoo/walker2d/random-v0" not in not_built
    assert all(i in not_built for i in d4rl_dataset_ids() if i != "zoo/walker2d/random-v0")


# ----------------------------------------------------------------------------------------------------------
# Training behaviour policies
# ----------------------------------------------------------------------------------------------------------


def test_train_behavior_checkpoints_and_resumes(tmp_path):
    from stable_baselines3 import SAC

    out = tmp_path / "hopper"
    train_behavior("hopper", out, 120, learning_starts=100, checkpoint_every=60, eval_episodes=2)
    assert sorted(p.name for p in out.iterdir()) == [
        "actor_0000000.pt",
        "actor_0000060.pt",
        "actor_0000120.pt",
        "last_model.zip",
        "progress.csv",
    ]
    rows = read_progress(out)
    assert [r["step"] for r in rows] == [60, 120]
    assert (out / "progress.csv").read_text().splitlines()[0] == "step,eval_mean,eval_std,wall_s"
    states = {s: torch.load(out / f"actor_{s:07d}.pt", weights_only=True) for s in (0, 60, 120)}
    assert set(states[0]) == {
        f"{m}.{p}" for m in ("latent_pi.0", "latent_pi.2", "mu", "log_std") for p in ("weight", "bias")
    }
    # No gradient step before learning_starts; some after it.
    assert all(torch.equal(states[0][k], states[60][k]) for k in states[0])
    assert not torch.equal(states[0]["mu.weight"], states[120]["mu.weight"])

    # progress.csv's evaluation: the saved actor, deterministic, on reset seeds 10000 and 10001.
    with gym.make("Hopper-v5") as env:
        actor = SACActor.from_state_dict(out / "actor_0000120.pt", env)
    from zoo.evaluation import evaluate_returns

    returns = evaluate_returns(lambda o: actor.act(o, deterministic=True), "Hopper-v5", 2, seed=10_000)
    assert rows[1]["eval_mean"] == pytest.approx(returns.mean(), abs=0.051)

    # Resume to 180 steps: the model continues at 120 and the folder gains one checkpoint.
    train_behavior("hopper", out, 180, learning_starts=100, checkpoint_every=60, eval_episodes=2)
    assert [r["step"] for r in read_progress(out)] == [60, 120, 180]
    assert read_progress(out)[:2] == rows
    model = SAC.load(out / "last_model.zip", device="cpu")
    assert model.num_timesteps == 180 and model.learning_starts == 100
    final = torch.load(out / "actor_0000180.pt", weights_only=True)
    assert all(torch.equal(final[k], v) for k, v in model.policy.actor.state_dict().items())
    # Nothing left to do at the target.
    train_behavior("hopper", out, 180, learning_starts=100, checkpoint_every=60, eval_episodes=2)
    assert [r["step"] for r in read_progress(out)] == [60, 120, 180]
    with pytest.raises(ValueError, match="Unknown env 'ant'"):
        train_behavior("ant", tmp_path / "ant", 10)


def test_cli_train_behavior_saves_a_resumable_model(tmp_path, capsys):
    from stable_baselines3 import SAC

    out = tmp_path / "behavior"
    assert main(["datasets", "train-behavior", "Hopper-v5", "--steps", "40", "--out", str(out)]) == 0
    assert "Hopper-v5" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["actor_0000000.pt", "last_model.zip", "progress.csv"]
    assert read_progress(out) == []  # no checkpoint before 10k steps
    model = SAC.load(out / "last_model.zip", device="cpu")
    assert model.num_timesteps == 40 and model.learning_starts == 10_000 and model.seed == 0
