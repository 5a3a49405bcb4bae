"""Dataset generation throughput: the `zoo datasets make` collection path against a plain rollout loop.

zoo: `zoo.datagen.d4rl.collect_parts` on the recipe of the chosen dataset, i.e. `collect_episodes` stepping
n_envs environments with one batched policy call (stochastic SAC actor, or uniform actions) per step of
all of them. Reference: the usual single-env loop (one env, one policy call per step, the same actor and
seed, episodes stored as the same arrays). Both collect the same parts in the same run; then the whole
`make_d4rl_dataset` (collection + Minari write) is timed on a temporary root. The last line is
`ratio_vs_reference=<zoo collection rate / plain loop rate>`.

    python benchmarks/datagen.py [--dataset zoo/hopper/medium-v0] [--steps 20000] [--n-envs 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings

from throughput import quiet_third_party_notices  # benchmarks/throughput.py: the gym and MuJoCo notices

quiet_third_party_notices()

import gymnasium as gym
import numpy as np
import torch

from zoo.datagen.behavior import SACActor
from zoo.datagen.d4rl import Part, behavior_set, collect_parts, make_d4rl_dataset, parse_dataset_id, recipe
from zoo.threads import torch_threads


def single_action(part: Part, env: gym.Env):
    """The part's policy for one observation at a time: the same SAC actor (sampled), or uniform actions."""
    if part.checkpoint is None:
        rng = np.random.default_rng(part.seed)
        low, high = env.action_space.low, env.action_space.high
        return lambda obs: rng.uniform(low, high).astype(np.float32)
    actor = SACActor.from_state_dict(part.checkpoint.path, env)
    generator = torch.Generator().manual_seed(part.seed)
    return lambda obs: actor.act(obs[None], deterministic=False, generator=generator)[0]


def plain_rollouts(env_id: str, part: Part) -> int:
    """One env, one policy call per step; whole episodes until part.steps transitions, as collect_episodes."""
    env = gym.make(env_id)
    act = single_action(part, env)
    collected, episode = 0, 0
    while collected < part.steps:
        obs, _ = env.reset(seed=part.seed + episode)
        buf = {"obs": [obs], "act": [], "rew": [], "term": [], "trunc": []}
        done = False
        while not done:
            action = act(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(buf, (obs, action, reward, terminated, truncated)):
                buf[key].append(value)
            done = terminated or truncated
        # The same arrays collect_episodes builds per episode.
        _ = [
            np.asarray(buf[k], dtype=t) for k, t in zip(buf, (np.float32, np.float32, np.float64, bool, bool))
        ]
        collected += len(buf["act"])
        episode += 1
    env.close()
    return collected


def relabel_row(n_episodes: int, seed: int) -> tuple[str, int, float]:
    """The ExoRL relabeller: walker physics states from a uniform-random collection, rewards for 'walk'."""
    from zoo.datagen.exorl import collect, episode_files, read_episode, relabel_rewards
    from zoo.envs import make_dmc_env

    with tempfile.TemporaryDirectory() as root:
        collect("walker", "random", root, steps=1000 * n_episodes, seed=seed)
        files = episode_files(root, "walker", "random")
        states = np.concatenate([read_episode(path).physics for path in files])
    env = make_dmc_env("walker", "walk")
    start = time.perf_counter()
    relabel_rewards(env, states)
    return ("ExoRL relabeller (walker, walk rewards)", len(states), time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="zoo/hopper/medium-v0")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--relabel-episodes", type=int, default=3, help="ExoRL walker episodes to relabel")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    env, quality = parse_dataset_id(args.dataset)
    env_id = behavior_set(env).env_id
    parts = recipe(env, quality, args.steps, args.seed)
    print(
        f"{args.dataset} ({env_id}), {args.steps} transitions in {len(parts)} part(s), "
        f"torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus"
    )

    start = time.perf_counter()
    episodes, _ = collect_parts(env_id, parts, n_envs=args.n_envs)
    zoo_s = time.perf_counter() - start
    zoo_n = sum(len(ep.actions) for ep in episodes)

    start = time.perf_counter()
    with torch_threads(1):  # as collect_episodes: a few observations per call, threads only cost time
        plain_n = sum(plain_rollouts(env_id, part) for part in parts)
    plain_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as root:
        os.environ["MINARI_DATASETS_PATH"] = root
        start = time.perf_counter()
        make_d4rl_dataset(args.dataset, steps=args.steps, seed=args.seed, n_envs=args.n_envs)
        make_s = time.perf_counter() - start

    zoo_rate, plain_rate = zoo_n / zoo_s, plain_n / plain_s
    n_envs = sorted({p.n_envs or args.n_envs for p in parts})
    rows = [
        (f"zoo collect_parts ({'/'.join(map(str, n_envs))} envs, batched policy)", zoo_n, zoo_s),
        ("plain single-env loop (1 policy call per step)", plain_n, plain_s),
        ("zoo datasets make end to end (collect + write)", args.steps, make_s),
    ]
    rows.append(relabel_row(args.relabel_episodes, args.seed))
    for name, n, seconds in rows:
        print(f"{name:<50}{n:>9} transitions {seconds:7.2f} s {n / seconds:9.0f} transitions/s")
    print(f"ratio_vs_reference={zoo_rate / plain_rate:.2f}")


if __name__ == "__main__":
    main()
