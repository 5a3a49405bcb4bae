"""zoo/data: Minari round trips, alignment, returns-to-go, fractions, bad input, tasks, behaviour policies.

Every dataset here is a real Minari dataset written to the per-test root of conftest.py. The hand-made
episodes encode their position: observation[t] = 100 * episode + t, reward[t] = 10 * episode + t + 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch

from zoo.data import (
    D4RL_REFERENCE_RETURNS,
    DatasetNotFoundError,
    Episode,
    Task,
    discounted_returns_to_go,
    discounted_suffix_sums,
    load_dataset,
    local_dataset_ids,
    minari_root,
    read_dataset,
    task_for,
    write_dataset,
)
from zoo.datagen.behavior import SACActor, collect_episodes, sac_policy, vendored_behavior
from zoo.datagen.generate import GENERATOR_VERSION, make_behavior_dataset

GAMMA = 0.9
HOPPER_ACTOR = "hopper_sac_actor_0130000.pt"
FIELDS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")
TINY_REWARDS = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 24, 25]

# Hand-computed G_t = r_t + 0.9 G_{t+1} for the tiny dataset (rewards 1..4 | 11..13 | 21..25).
PLAIN_RTG = [
    [8.146, 7.94, 6.6, 4.0],  # episode 0, terminated: 4; 3 + 3.6; 2 + 5.94; 1 + 7.146
    [32.33, 23.7, 13.0],  # episode 1, truncated: 13; 12 + 11.7; 11 + 21.33
    [93.3285, 80.365, 64.85, 46.5, 25.0],  # episode 2, not terminated: 25; 24 + 22.5; 23 + 41.85; ...
]
# timeout_tail: the last reward of a non-terminated episode becomes r_T / (1 - 0.9) = 10 r_T.
TAIL_RTG = [
    PLAIN_RTG[0],  # terminated: unchanged
    [127.1, 129.0, 130.0],  # 130; 12 + 117; 11 + 116.1
    [240.951, 244.39, 247.1, 249.0, 250.0],  # 250; 24 + 225; 23 + 224.1; 22 + 222.39; 21 + 219.951
]


def flat(per_episode):
    return np.concatenate([np.asarray(x, dtype=np.float64) for x in per_episode])


def source_index(dataset, tiny) -> np.ndarray:
    """The transition index in the full tiny dataset of each row, read off the encoded observations."""
    code = dataset.observations[:, 0].numpy().astype(np.int64)
    episode, step = code // 100, code % 100
    return tiny.episode_starts[episode] + step


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ----------------------------------------------------------------------------------------------------------
# Writing and alignment
# ----------------------------------------------------------------------------------------------------------


def test_write_dataset_stores_minari_episodes_with_final_observation(tiny, minari_root_per_test):
    assert minari_root() == minari_root_per_test
    assert (minari_root_per_test / "zoo" / "hopper" / "tiny-v0" / "data").is_dir()
    assert local_dataset_ids() == ["zoo/hopper/tiny-v0"]
    stored = list(minari.load_dataset(tiny.dataset_id).iterate_episodes())
    assert [len(ep.actions) for ep in stored] == [4, 3, 5]
    for e, ep in enumerate(stored):
        steps = len(ep.actions)
        assert ep.observations.shape == (steps + 1, 11)  # T + 1 observations: the final one is kept
        assert ep.actions.shape == (steps, 3)
        np.testing.assert_array_equal(ep.observations[:, 4], 100 * e + np.arange(steps + 1))
        np.testing.assert_array_equal(ep.rewards, 10 * e + np.arange(steps) + 1)
    assert [bool(ep.terminations[-1]) for ep in stored] == [True, False, False]
    assert [bool(ep.truncations[-1]) for ep in stored] == [False, True, False]


def test_read_dataset_flattens_in_episode_order(tiny):
    flat_eps = read_dataset(tiny.dataset_id)
    np.testing.assert_array_equal(flat_eps.episode_ends, [4, 7, 12])
    np.testing.assert_array_equal(flat_eps.episode_starts, [0, 4, 7])
    np.testing.assert_allclose(flat_eps.episode_returns, [10.0, 36.0, 115.0])
    assert flat_eps.observations.dtype == np.float32 and flat_eps.observations.shape == (12, 11)
    assert flat_eps.metadata["total_episodes"] == 3 and flat_eps.metadata["total_steps"] == 12


def test_load_dataset_aligns_transitions(tiny):
    data = load_dataset(tiny.dataset_id, device="cpu")
    assert len(data) == 12 == tiny.n_transitions
    assert data.device == torch.device("cpu")
    assert (data.observation_dim, data.action_dim) == (11, 3)
    assert data.observation_space.shape == (11,) and data.action_space.shape == (3,)
    assert data.observations.dtype == torch.float32 and data.terminations.dtype == torch.bool
    assert data.episode_index.dtype == torch.long

    # Row i is (s_t, a_t, r_t, s_{t+1}) of one episode; nothing leaks across episode boundaries.
    expected_obs = [100 * e + t for e, n in enumerate([4, 3, 5]) for t in range(n)]
    assert data.observations[:, 0].tolist() == expected_obs
    assert data.next_observations[:, 0].tolist() == [x + 1 for x in expected_obs]
    assert torch.equal(data.observations, data.observations[:, :1].expand(12, 11))  # same in every dimension
    assert torch.equal(data.next_observations, data.next_observations[:, :1].expand(12, 11))
    assert data.next_observations[3, 0].item() == 4.0  # final observation of episode 0, not episode 1's first
    assert data.next_observations[6, 0].item() == 103.0
    assert data.rewards.tolist() == TINY_REWARDS
    expected_actions = np.concatenate([ep.actions for ep in tiny.episodes]).astype(np.float32)
    assert torch.equal(data.actions, torch.from_numpy(expected_actions))
    assert data.actions[5].tolist() == pytest.approx([0.1, 0.1, -0.1])  # episode 1, step 1
    assert data.episode_index.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]

    # Terminations and truncations are separate, each only on the last step of its own episode.
    assert torch.nonzero(data.terminations).flatten().tolist() == [3]
    assert torch.nonzero(data.truncations).flatten().tolist() == [6]
    np.testing.assert_allclose(data.source_episode_returns, [10.0, 36.0, 115.0])


def test_load_dataset_task_from_metadata(write_tiny):
    write_tiny("zoo/hopper/refs-v0", ref_min_score=5.0, ref_max_score=25.0)
    data = load_dataset("zoo/hopper/refs-v0", device="cpu")
    assert data.task == Task("Hopper-v5", 5.0, 25.0)  # the dataset's own references beat D4RL's hopper ones
    assert data.task.normalized_score(15.0) == pytest.approx(50.0)
    default = write_tiny()
    assert load_dataset(default.dataset_id, device="cpu").task == Task("Hopper-v5", -20.272305, 3234.3)


# ----------------------------------------------------------------------------------------------------------
# Returns-to-go
# ----------------------------------------------------------------------------------------------------------


def test_discounted_returns_to_go_by_hand():
    rewards = flat([[1, 2, 3, 4], [11, 12, 13], [21, 22, 23, 24, 25]])
    ends = np.array([4, 7, 12])
    terminations = np.zeros(12, dtype=bool)
    terminations[3] = True
    np.testing.assert_allclose(discounted_returns_to_go(rewards, ends, terminations, GAMMA), flat(PLAIN_RTG))
    np.testing.assert_allclose(
        discounted_returns_to_go(rewards, ends, terminations, GAMMA, timeout_tail=True), flat(TAIL_RTG)
    )
    # gamma = 0: G_t = r_t; gamma = 1 without tail rules: plain undiscounted suffix sums.
    np.testing.assert_allclose(discounted_returns_to_go(rewards, ends, terminations, 0.0), rewards)
    np.testing.assert_allclose(
        discounted_returns_to_go(rewards, ends, terminations, 1.0),
        flat([[10, 9, 7, 4], [36, 25, 13], [115, 94, 72, 49, 25]]),
    )


def test_returns_of_transformed_rewards_and_the_device_scan():
    rewards = flat([[1, 2, 3, 4], [0, 0, 0], [21, 22, 23, 24, 25]])
    ends = np.array([4, 7, 12])
    terminations = np.zeros(12, dtype=bool)
    scaled = discounted_returns_to_go(rewards, ends, terminations, GAMMA, reward_scale=10.0, reward_bias=-5.0)
    np.testing.assert_allclose(scaled, discounted_returns_to_go(rewards * 10.0 - 5.0, ends, terminations, GAMMA))
    # The failure rule looks at the stored rewards and gives the transformed failure value: (10 * 0 - 5) / (1 - gamma).
    failed = discounted_returns_to_go(
        rewards, ends, terminations, GAMMA, failure_reward=0.0, reward_scale=10.0, reward_bias=-5.0
    )
    np.testing.assert_allclose(failed[4:7], -5.0 / (1 - GAMMA))
    np.testing.assert_allclose(failed[:4], scaled[:4])
    last = torch.zeros(12, dtype=torch.bool)
    last[ends - 1] = True
    on_device = discounted_suffix_sums(torch.as_tensor(rewards, dtype=torch.float64), last, GAMMA)
    np.testing.assert_allclose(on_device.numpy(), discounted_returns_to_go(rewards, ends, terminations, GAMMA))


def test_dataset_returns_to_go_plain_and_timeout_tail(tiny):
    data = load_dataset(tiny.dataset_id, device="cpu")
    plain = data.returns_to_go(GAMMA)
    assert plain.dtype == torch.float32 and plain.shape == (12,)
    np.testing.assert_allclose(plain.numpy(), flat(PLAIN_RTG), rtol=1e-6)
    tail = data.returns_to_go(GAMMA, timeout_tail=True)
    np.testing.assert_allclose(tail.numpy(), flat(TAIL_RTG), rtol=1e-6)
    # The terminated episode 0 is the same either way; truncated and unfinished ones are not.
    assert torch.equal(tail[:4], plain[:4])
    assert (tail[4:] > plain[4:]).all()


def test_failure_reward_rule(write_tiny, make_episode):
    episodes = [
        make_episode(0, 3, terminated=True, rewards=[-1, -1, -1]),  # never succeeded
        make_episode(1, 3, truncated=True, rewards=[-1, 0, -1]),  # one different reward
        make_episode(2, 2, rewards=[-1, -1]),  # never succeeded, not terminated
    ]
    write_tiny("zoo/hopper/sparse-v0", episodes)
    data = load_dataset("zoo/hopper/sparse-v0", device="cpu")
    # -1 / (1 - 0.9) = -10 everywhere in a failed episode; the plain sum otherwise: -1; 0 - 0.9; -1 - 0.81.
    expected = [-10.0, -10.0, -10.0, -1.81, -0.9, -1.0, -10.0, -10.0]
    np.testing.assert_allclose(data.returns_to_go(GAMMA, failure_reward=-1.0).numpy(), expected, rtol=1e-6)
    # With the timeout tail as well: failed episodes keep -10, episode 1's last reward becomes -10.
    expected_tail = [-10.0, -10.0, -10.0, -9.1, -9.0, -10.0, -10.0, -10.0]
    np.testing.assert_allclose(
        data.returns_to_go(GAMMA, timeout_tail=True, failure_reward=-1.0).numpy(), expected_tail, rtol=1e-6
    )
    # Without the rule those episodes are plain discounted sums: -1 - 0.9 - 0.81 = -2.71.
    np.testing.assert_allclose(
        data.returns_to_go(GAMMA).numpy(), [-2.71, -1.9, -1.0, -1.81, -0.9, -1.0, -1.9, -1.0], rtol=1e-6
    )
    # The same numbers from the plain function on float64 rewards.
    rewards = flat([[-1, -1, -1], [-1, 0, -1], [-1, -1]])
    got = discounted_returns_to_go(rewards, [3, 6, 8], np.eye(8, dtype=bool)[2], GAMMA, failure_reward=-1.0)
    np.testing.assert_allclose(got, expected)


def test_failure_reward_rule_with_a_non_binary_reward(write_tiny, make_episode):
    """Rewards are stored as float64 and loaded as float32: -0.1 must still count as the failure reward."""
    episodes = [make_episode(0, 2, rewards=[-0.1, -0.1]), make_episode(1, 1, rewards=[0.5])]
    write_tiny("zoo/hopper/sparse-v0", episodes)
    data = load_dataset("zoo/hopper/sparse-v0", device="cpu")
    got = data.returns_to_go(GAMMA, failure_reward=-0.1).numpy()
    np.testing.assert_allclose(got, [-1.0, -1.0, 0.5], rtol=1e-6)
    rewards32 = np.array([-0.1, -0.1, 0.5], dtype=np.float32)
    got = discounted_returns_to_go(rewards32, [2, 3], np.zeros(3, dtype=bool), GAMMA, failure_reward=-0.1)
    np.testing.assert_allclose(got, [-1.0, -1.0, 0.5])


@pytest.mark.parametrize(
    "kwargs",
    [dict(fraction=0.5, seed=3), dict(fraction=0.25, seed=0), dict(fraction=0.34, subset="trajectories")],
)
def test_subset_returns_to_go_use_whole_source_episodes(tiny, kwargs):
    full = load_dataset(tiny.dataset_id, device="cpu")
    sub = load_dataset(tiny.dataset_id, device="cpu", **kwargs)
    rows = source_index(sub, tiny)
    assert len(rows) < 12
    for options in (dict(), dict(timeout_tail=True), dict(failure_reward=1.0)):
        assert torch.equal(sub.returns_to_go(GAMMA, **options), full.returns_to_go(GAMMA, **options)[rows])
    tail = sub.returns_to_go(GAMMA, timeout_tail=True).numpy()
    np.testing.assert_allclose(tail, flat(TAIL_RTG)[rows], rtol=1e-6)
    np.testing.assert_allclose(sub.source_episode_returns, [10.0, 36.0, 115.0])


# ----------------------------------------------------------------------------------------------------------
# Fractions
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction, size", [(1.0, 12), (0.99, 12), (0.5, 6), (0.3, 4), (0.25, 3), (0.01, 1)])
def test_transition_fraction_sizes(tiny, fraction, size):
    sub = load_dataset(tiny.dataset_id, fraction=fraction, device="cpu")
    assert len(sub) == size == max(1, round(fraction * 12))
    assert sub.episode_index.shape == sub.rewards.shape == sub.terminations.shape == (size,)


def test_transition_fraction_is_a_deterministic_sorted_sample(tiny):
    a = load_dataset(tiny.dataset_id, fraction=0.5, seed=0, device="cpu")
    b = load_dataset(tiny.dataset_id, fraction=0.5, seed=0, device="cpu")
    c = load_dataset(tiny.dataset_id, fraction=0.5, seed=1, device="cpu")
    rows_a, rows_b, rows_c = source_index(a, tiny), source_index(b, tiny), source_index(c, tiny)
    np.testing.assert_array_equal(rows_a, rows_b)
    for field in (*FIELDS, "episode_index"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(rows_a, rows_c)
    np.testing.assert_array_equal(rows_a, np.sort(np.random.default_rng(0).choice(12, 6, replace=False)))
    full = load_dataset(tiny.dataset_id, device="cpu")
    for sub, rows in ((a, rows_a), (c, rows_c)):
        assert np.all(np.diff(rows) > 0)  # sorted, no duplicates
        # Each kept row is the complete source transition.
        for field in FIELDS:
            assert torch.equal(getattr(sub, field), getattr(full, field)[rows])
        assert torch.equal(sub.episode_index, full.episode_index[rows])
        assert torch.equal(sub.next_observations, sub.observations + 1)


@pytest.mark.parametrize(
    "fraction, n_rows",
    [
        (0.01, 4),  # at least one episode
        (0.3, 4),  # 3.6 transitions: episode 0 (4) reaches it
        (1 / 3, 4),  # exactly 4
        (0.34, 7),  # 4.08: needs episode 1 too
        (0.5, 7),
        (0.6, 12),  # 7.2: needs episode 2
        (0.99, 12),
    ],
)
def test_trajectory_fraction_keeps_first_whole_episodes(tiny, fraction, n_rows):
    full = load_dataset(tiny.dataset_id, device="cpu")
    sub = load_dataset(tiny.dataset_id, fraction=fraction, subset="trajectories", seed=0, device="cpu")
    other_seed = load_dataset(tiny.dataset_id, fraction=fraction, subset="trajectories", seed=7, device="cpu")
    assert len(sub) == n_rows
    for field in FIELDS:
        assert torch.equal(getattr(sub, field), getattr(full, field)[:n_rows])
        assert torch.equal(getattr(other_seed, field), getattr(sub, field))  # the seed plays no part
    assert sub.episode_index.tolist() == full.episode_index[:n_rows].tolist()
    assert sub.episode_index[-1].item() == {4: 0, 7: 1, 12: 2}[n_rows]  # ends on a whole episode


def test_observation_statistics_of_subsets(tiny):
    # The first episode only: observations 0, 1, 2, 3.
    first = load_dataset(tiny.dataset_id, fraction=0.3, subset="trajectories", device="cpu")
    mean, std = first.observation_statistics()
    assert mean.shape == std.shape == (11,)
    assert torch.allclose(mean, torch.full((11,), 1.5))
    assert torch.allclose(std, torch.full((11,), math.sqrt(1.25) + 1e-3))  # population std + 1e-3
    _, std_no_eps = first.observation_statistics(eps=0.0)
    assert torch.allclose(std_no_eps, torch.full((11,), math.sqrt(1.25)))

    values = np.array([0, 1, 2, 3, 100, 101, 102, 200, 201, 202, 203, 204], dtype=np.float64)
    full_mean, full_std = load_dataset(tiny.dataset_id, device="cpu").observation_statistics()
    assert full_mean[0].item() == pytest.approx(1319 / 12, rel=1e-6)
    assert torch.allclose(full_std, torch.full((11,), float(values.std() + 1e-3)))

    sub = load_dataset(tiny.dataset_id, fraction=0.5, seed=0, device="cpu")
    kept = values[source_index(sub, tiny)]
    sub_mean, sub_std = sub.observation_statistics()
    assert torch.allclose(sub_mean, torch.full((11,), float(kept.mean())))
    assert torch.allclose(sub_std, torch.full((11,), float(kept.std(ddof=0) + 1e-3)))
    assert not torch.allclose(sub_mean, full_mean)


# ----------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------


def test_unknown_dataset_id_lists_local_ids(tiny, minari_root_per_test):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("zoo/hopper/missing-v0", device="cpu")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "'zoo/hopper/missing-v0'" in message
    assert str(minari_root_per_test) in message
    assert "Local datasets: zoo/hopper/tiny-v0." in message
    for hint in ("zoo datasets make", "minari download", "MINARI_DATASETS_PATH"):
        assert hint in message
    # A namespace folder is not a dataset.
    with pytest.raises(DatasetNotFoundError, match="'zoo/hopper' is not in the local Minari root"):
        load_dataset("zoo/hopper", device="cpu")


def test_unknown_dataset_id_in_an_empty_root():
    with pytest.raises(DatasetNotFoundError, match=r"Local datasets: none\."):
        load_dataset("mujoco/hopper/medium-v0", device="cpu")


@pytest.mark.parametrize("fraction", [0, 0.0, -0.1, 1.5, float("nan"), "0.5"])
def test_bad_fraction(tiny, fraction):
    with pytest.raises(ValueError, match=r"fraction must lie in \(0, 1\]") as info:
        load_dataset(tiny.dataset_id, fraction=fraction, device="cpu")
    assert repr(fraction) in str(info.value)


def test_unknown_subset(tiny):
    with pytest.raises(ValueError, match=r"subset must be 'transitions' or 'trajectories', got 'episodes'"):
        load_dataset(tiny.dataset_id, fraction=0.5, subset="episodes", device="cpu")


def write_unchecked(dataset_id: str, episodes) -> None:
    """Write episodes with Minari itself, as another tool would: none of write_dataset's checks."""
    from minari.data_collector import EpisodeBuffer

    buffers = [
        EpisodeBuffer(id=i, observations=np.asarray(e.observations, np.float32), actions=np.asarray(e.actions, np.float32),
                      rewards=e.rewards, terminations=e.terminations, truncations=e.truncations)
        for i, e in enumerate(episodes)
    ]
    with pytest.warns(UserWarning):  # Minari's notes on unset optional metadata
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id, buffer=buffers, env=gym.spec("Hopper-v5"), algorithm_name="other", author="other",
            author_email="other@example.org", code_permalink="https://example.org", description="not the zoo's",
        )


def test_nan_observation_is_named(write_tiny):
    episodes = write_tiny("zoo/hopper/ok-v0").episodes  # the default episodes, to edit
    episodes[1].observations[2, 5] = np.nan  # episode 1, step 2 = transition 4 + 2
    write_unchecked("zoo/hopper/nan-v0", episodes)
    with pytest.raises(ValueError) as info:
        load_dataset("zoo/hopper/nan-v0", device="cpu")
    message = str(info.value)
    assert "'zoo/hopper/nan-v0'" in message and "(nan)" in message
    assert "in 'observations' at transition 6 (episode 1, step 2)" in message


def test_nan_in_final_observation_is_named(write_tiny, make_episode):
    episodes = [make_episode(0, 4, terminated=True), make_episode(1, 3, truncated=True)]
    episodes[1].observations[3, 0] = np.inf  # the final observation only appears as a next observation
    write_unchecked("zoo/hopper/inf-v0", episodes)
    expected = r"\(inf\) in 'next_observations' at transition 6 \(episode 1, step 2\)"
    with pytest.raises(ValueError, match=expected):
        load_dataset("zoo/hopper/inf-v0", device="cpu")


def test_nan_reward_is_named(write_tiny, make_episode):
    write_unchecked("zoo/hopper/nanr-v0", [make_episode(0, 4, rewards=[1, 2, np.nan, 4])])
    with pytest.raises(ValueError, match=r"in 'rewards' at transition 2 \(episode 0, step 2\)"):
        load_dataset("zoo/hopper/nanr-v0", device="cpu")


def test_write_existing_id_without_overwrite_keeps_the_dataset(tiny, make_episode, minari_root_per_test):
    before = tree(minari_root_per_test)
    with pytest.raises(FileExistsError, match=r"'zoo/hopper/tiny-v0' already exists.*overwrite=True"):
        write_dataset(tiny.dataset_id, [make_episode(5, 2)], env_id="Hopper-v5")
    assert tree(minari_root_per_test) == before
    data = load_dataset(tiny.dataset_id, device="cpu")
    assert len(data) == 12
    assert data.rewards.tolist() == TINY_REWARDS


def test_overwrite_replaces_the_dataset_without_leftovers(tiny, make_episode, minari_root_per_test):
    before = tree(minari_root_per_test)
    write_dataset(tiny.dataset_id, [make_episode(5, 2, terminated=True)], env_id="Hopper-v5", overwrite=True)
    assert tree(minari_root_per_test) == before  # same files, no staging or backup folders
    data = load_dataset(tiny.dataset_id, device="cpu")
    assert data.observations[:, 0].tolist() == [500.0, 501.0]
    assert data.rewards.tolist() == [51.0, 52.0]


def test_mismatched_episode_is_refused_before_writing(make_episode, minari_root_per_test):
    good = make_episode(0, 3)
    expected = r"len\(observations\) == len\(actions\) \+ 1.*got 3 observations for 3"
    with pytest.raises(ValueError, match=expected):
        Episode(good.observations[:3], good.actions, good.rewards, good.terminations, good.truncations)
    with pytest.raises(ValueError, match=r"Episode field 'rewards' has 2 steps, actions have 3"):
        Episode(good.observations, good.actions, good.rewards[:2], good.terminations, good.truncations)
    with pytest.raises(ValueError, match=r"Episode field 'truncations' has 4 steps, actions have 3"):
        Episode(good.observations, good.actions, good.rewards, good.terminations, np.zeros(4, dtype=bool))

    def episodes():  # the second episode fails while write_dataset is consuming the iterable
        yield good
        yield Episode(good.observations, good.actions, good.rewards[:1], good.terminations, good.truncations)

    with pytest.raises(ValueError, match="Episode field 'rewards'"):
        write_dataset("zoo/hopper/broken-v0", episodes(), env_id="Hopper-v5")
    assert tree(minari_root_per_test) == []
    with pytest.raises(ValueError, match="No episodes to write for 'zoo/hopper/empty-v0'"):
        write_dataset("zoo/hopper/empty-v0", [], env_id="Hopper-v5")
    assert tree(minari_root_per_test) == []


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(ref_max_score=100.0), ValueError, "ref_max_score needs ref_min_score"),  # fails in staging
        (dict(extra_metadata={"bad": object()}), TypeError, "not JSON serializable"),  # after Minari wrote it
    ],
)
def test_failed_write_leaves_nothing_behind(make_episode, minari_root_per_test, kwargs, error, match):
    with pytest.raises(error, match=match):
        write_dataset("zoo/hopper/broken-v0", [make_episode(0, 3)], env_id="Hopper-v5", **kwargs)
    assert tree(minari_root_per_test) == []  # no dataset, no namespace folders, no .zoo-staging-*
    assert local_dataset_ids() == []


def test_failed_overwrite_keeps_the_old_dataset(tiny, make_episode, minari_root_per_test):
    before = tree(minari_root_per_test)
    with pytest.raises(TypeError):
        write_dataset(
            tiny.dataset_id, [make_episode(5, 2)], env_id="Hopper-v5", overwrite=True,
            extra_metadata={"bad": object()},
        )
    assert tree(minari_root_per_test) == before
    assert not [p for p in minari_root_per_test.rglob(".*") if ".zoo-cache" not in p.parts]  # no staging or backup leftovers
    assert load_dataset(tiny.dataset_id, device="cpu").rewards.tolist() == TINY_REWARDS


def test_extra_metadata_is_stored(write_tiny):
    write_tiny("zoo/hopper/meta-v0", extra_metadata={"zoo_note": "hi", "zoo_dict": {"a": 1}, "zoo_n": 3})
    metadata = load_dataset("zoo/hopper/meta-v0", device="cpu").metadata
    assert metadata["zoo_note"] == "hi"
    assert json.loads(metadata["zoo_dict"]) == {"a": 1}
    assert metadata["zoo_n"] == 3
    assert json.loads(metadata["env_spec"])["id"] == "Hopper-v5"


# ----------------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------------


def test_task_for_zoo_hopper_uses_d4rl_references():
    task = task_for("zoo/hopper/medium-v0")
    assert task == Task("Hopper-v5", -20.272305, 3234.3)
    assert D4RL_REFERENCE_RETURNS["hopper"] == (-20.272305, 3234.3)
    assert task.has_reference
    assert task.normalized_score(3234.3) == pytest.approx(100.0)
    assert task.normalized_score(-20.272305) == pytest.approx(0.0, abs=1e-12)
    assert task.normalized_score((3234.3 - 20.272305) / 2) == pytest.approx(50.0)
    scores = task.normalized_score(np.array([-20.272305, 3234.3]))
    np.testing.assert_allclose(scores, [0.0, 100.0], atol=1e-12)
    assert task_for("mujoco/halfcheetah/expert-v0") == Task("HalfCheetah-v5", -280.178953, 12135.0)
    assert task_for("zoo/walker2d/medium-v0").env_id == "Walker2d-v5"


def test_task_for_prefers_metadata():
    task = task_for("zoo/hopper/medium-v0", {"ref_min_score": 0.0, "ref_max_score": 10.0})
    assert task == Task("Hopper-v5", 0.0, 10.0)
    assert task.normalized_score(5.0) == pytest.approx(50.0)
    # The env comes from the stored env_spec (a JSON string in Minari's metadata) when there is one.
    metadata = {"env_spec": json.dumps({"id": "Walker2d-v5"}), "ref_min_score": 1, "ref_max_score": 3}
    task = task_for("zoo/custom/mine-v0", metadata)
    assert task == Task("Walker2d-v5", 1.0, 3.0)
    # Only one reference in the metadata: the D4RL pair for a known env.
    assert task_for("zoo/hopper/medium-v0", {"ref_max_score": 10.0}) == Task("Hopper-v5", -20.272305, 3234.3)


def test_task_without_reference_cannot_normalise():
    task = task_for("mujoco/ant/expert-v0", {"env_spec": json.dumps({"id": "Ant-v5"})})
    assert task == Task("Ant-v5") and not task.has_reference
    with pytest.raises(ValueError, match="No reference returns for Ant-v5"):
        task.normalized_score(1.0)


@pytest.mark.parametrize("dataset_id, key", [("zoo/ant/medium-v0", "'ant'"), ("my-dataset-v0", "'None'")])
def test_task_for_unknown_env_without_metadata(dataset_id, key):
    with pytest.raises(ValueError, match="Cannot tell which environment") as info:
        task_for(dataset_id)
    message = str(info.value)
    assert f"'{dataset_id}'" in message and key in message and "env_spec" in message
    assert "hopper" in message


# ----------------------------------------------------------------------------------------------------------
# Behaviour policies
# ----------------------------------------------------------------------------------------------------------


def test_sac_actor_acts_in_bounds():
    with gym.make("Hopper-v5") as env:
        actor = SACActor.from_state_dict(vendored_behavior(HOPPER_ACTOR), env)
        obs = np.stack([env.reset(seed=s)[0] for s in range(5)])
    assert [m.out_features for m in actor.latent_pi if isinstance(m, torch.nn.Linear)] == [256, 256]
    for deterministic in (True, False):
        actions = actor.act(obs, deterministic=deterministic, generator=torch.Generator().manual_seed(0))
        assert actions.shape == (5, 3)
        assert np.all(np.abs(actions) <= 1.0)
    # Seeded noise is reproducible; deterministic actions are tanh of the mean.
    policy_a = sac_policy(actor, deterministic=False, seed=4)
    policy_b = sac_policy(actor, deterministic=False, seed=4)
    np.testing.assert_array_equal(policy_a(obs), policy_b(obs))
    assert not np.array_equal(policy_a(obs), actor.act(obs, deterministic=True))
    with torch.no_grad():
        mean = actor.mu(actor.latent_pi(torch.as_tensor(obs, dtype=torch.float32)))
    np.testing.assert_allclose(actor.act(obs, deterministic=True), torch.tanh(mean).numpy())


def test_sac_actor_refuses_another_env():
    with gym.make("HalfCheetah-v5") as env, pytest.raises(ValueError) as info:
        SACActor.from_state_dict(vendored_behavior(HOPPER_ACTOR), env)
    message = str(info.value)
    assert "expects observations of size 11 and actions of size 3" in message
    assert "HalfCheetah-v5 has 17 and 6" in message


def test_vendored_behavior_unknown_name():
    with pytest.raises(FileNotFoundError, match="No vendored behaviour checkpoint 'nope.pt'"):
        vendored_behavior("nope.pt")


def _collect(seed: int) -> list[Episode]:
    with gym.make("Hopper-v5") as env:
        actor = SACActor.from_state_dict(vendored_behavior(HOPPER_ACTOR), env)
    policy = sac_policy(actor, deterministic=False, seed=seed)
    return collect_episodes("Hopper-v5", policy, 300, seed=seed, n_envs=2)


def test_collect_episodes_is_a_function_of_the_seed():
    first, second = _collect(0), _collect(0)
    assert len(first) == len(second) >= 1
    for a, b in zip(first, second):
        assert a.seed == b.seed
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert sum(len(ep.actions) for ep in first) >= 300
    assert len({ep.seed for ep in first}) == len(first) and all(0 <= ep.seed < len(first) + 2 for ep in first)
    with gym.make("Hopper-v5") as env:
        for ep in first:
            steps = len(ep.actions)
            assert ep.observations.shape == (steps + 1, 11) and ep.actions.shape == (steps, 3)
            assert np.all(np.abs(ep.actions) <= 1.0)
            # Whole episodes: the end flag is on the last step only.
            assert ep.terminations[-1] or ep.truncations[-1]
            assert not ep.terminations[:-1].any() and not ep.truncations[:-1].any()
            # Episode e starts from reset(seed=seed + e).
            np.testing.assert_array_equal(ep.observations[0], env.reset(seed=ep.seed)[0].astype(np.float32))
    # Another seed shifts the reset seeds (1, 2, ...) and draws other action noise.
    other = _collect(1)
    assert min(ep.seed for ep in other) >= 1 and 0 in {ep.seed for ep in first}
    common = sorted({ep.seed for ep in other} & {ep.seed for ep in first})
    assert common
    mine = next(ep for ep in other if ep.seed == common[0])
    theirs = next(ep for ep in first if ep.seed == common[0])
    np.testing.assert_array_equal(mine.observations[0], theirs.observations[0])  # same reset seed
    assert not np.array_equal(mine.actions[:5], theirs.actions[:5])  # other noise


def test_make_behavior_dataset_round_trip():
    checkpoint = vendored_behavior(HOPPER_ACTOR)
    path = make_behavior_dataset("zoo/hopper/behave-v0", "Hopper-v5", checkpoint, 300, seed=0, n_envs=2)
    assert path == minari_root() / "zoo" / "hopper" / "behave-v0"
    data = load_dataset("zoo/hopper/behave-v0", device="cpu")
    episodes = _collect(0)
    assert len(data) == sum(len(ep.actions) for ep in episodes)
    observations = np.concatenate([ep.observations[:-1] for ep in episodes])
    next_observations = np.concatenate([ep.observations[1:] for ep in episodes])
    np.testing.assert_array_equal(data.observations.numpy(), observations)
    np.testing.assert_array_equal(data.next_observations.numpy(), next_observations)
    np.testing.assert_allclose(data.source_episode_returns, [ep.rewards.sum() for ep in episodes], rtol=1e-5)
    assert data.task == Task("Hopper-v5", -20.272305, 3234.3)
    assert data.metadata["ref_min_score"] == pytest.approx(-20.272305)
    assert data.metadata["zoo_generator_version"] == GENERATOR_VERSION
    behavior = json.loads(data.metadata["zoo_behavior"])
    assert behavior == {"checkpoint": HOPPER_ACTOR, "deterministic": False, "seed": 0}


# ---------------------------------------------------------------------------- flat-array cache


def test_cache_serves_identical_arrays_and_follows_overwrites(tiny, write_tiny, minari_root_per_test, make_episode):
    from zoo.data.minari_io import read_dataset

    first = read_dataset(tiny.dataset_id)
    cache_files = list((minari_root_per_test / ".zoo-cache").glob("*.npz"))
    assert [p.name for p in cache_files] == ["zoo__hopper__tiny-v0.npz"]
    cached = read_dataset(tiny.dataset_id)
    for name in ("observations", "actions", "rewards", "next_observations", "terminations", "truncations", "episode_ends"):
        np.testing.assert_array_equal(getattr(first, name), getattr(cached, name))
    assert ".zoo-cache" not in " ".join(minari.list_local_datasets())
    # Overwriting the dataset changes its files, so the next read does not use the stale cache.
    write_tiny(episodes=[make_episode(7, 2, terminated=True)], overwrite=True)
    fresh = read_dataset(tiny.dataset_id)
    assert len(fresh.rewards) == 2 and fresh.observations[0, 0] == 700.0


def test_a_corrupt_cache_is_ignored(tiny, minari_root_per_test):
    from zoo.data.minari_io import read_dataset

    expected = read_dataset(tiny.dataset_id, cache=False).rewards
    assert not (minari_root_per_test / ".zoo-cache").exists()  # cache=False writes nothing
    read_dataset(tiny.dataset_id)
    (minari_root_per_test / ".zoo-cache" / "zoo__hopper__tiny-v0.npz").write_bytes(b"not an npz")
    np.testing.assert_array_equal(read_dataset(tiny.dataset_id).rewards, expected)
