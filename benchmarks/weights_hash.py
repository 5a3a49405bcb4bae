"""Same-weights check: one sha256 per agent key of its parameters, buffers and optimizer states after a
short fixed-seed run that crosses every phase switch (pretraining -> RL, VAE -> RL, OPT's online phases,
Cal-QL's online episode ends).

Run it before and after a refactor that must not change behaviour, and compare the two outputs:

    python benchmarks/weights_hash.py > before.txt   # ... change the code ...
    python benchmarks/weights_hash.py --compare before.txt   # exit 1 when any hash differs

The dataset is written once (a few thousand transitions of the quickstart Hopper-v5 behaviour policy) into
a fixed Minari root (--root, default /tmp/zoo-weights-hash) and reused afterwards, so the check does not
depend on the data generator staying where it is. One torch thread, CPU, float32: bit-exact.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import torch

N_TRANSITIONS = 3000
SMALL = dict(net_arch=[32, 32])

# key -> (make_agent kwargs, offline gradient steps, online env steps). Every phase switch is crossed.
RUNS: dict[str, tuple[dict, int, int]] = {
    "td3": (dict(policy_kwargs=SMALL), 40, 30),
    "td3bc": (dict(policy_kwargs=SMALL), 40, 30),
    "td3bc-mc": (dict(pretrain_steps=15, policy_kwargs=dict(SMALL, actor_net_arch=[32, 32, 32])), 40, 30),
    "psqn": (dict(pretrain_steps=0.25, policy_kwargs=SMALL), 40, 30),
    "spot": (dict(vae_steps=10, policy_kwargs=dict(SMALL, vae_net_arch=[32, 32])), 40, 30),
    "cql": (dict(n_actions=3, cql_lagrange=True, cql_target_action_gap=0.5, policy_kwargs=SMALL), 25, 20),
    "calql": (dict(n_actions=3, failure_reward=-1.0, policy_kwargs=SMALL), 25, 80),
    "opt": (dict(n_tau=10, n_pretrain=6, kappa_steps=10, online_utd_ratio=2, policy_kwargs=SMALL), 40, 30),
    "opt-spot": (
        dict(
            vae_steps=10, n_tau=10, n_pretrain=6, kappa_steps=10, critic_init_w=3e-3, online_gamma=0.995,
            policy_kwargs=dict(SMALL, vae_net_arch=[32, 32]),
        ),
        40,
        30,
    ),
    "edac": (dict(policy_kwargs=dict(SMALL, n_critics=3)), 25, 20),
    "edac-mc": (dict(pretrain_steps=20, policy_kwargs=dict(SMALL, n_critics=3)), 40, 20),
}
# Variants of the same classes on paths the keys above do not take (a recipe on another family, mixes).
EXTRA: dict[str, tuple[str, dict, int, int]] = {
    "psqn@cql": ("psqn", dict(base="cql", n_actions=3, pretrain_steps=10, policy_kwargs=SMALL), 25, 20),
    "td3bc-mc+td": ("td3bc-mc", dict(pretrain_steps=15, pretrain_kwargs=dict(td_weight=0.5),
                                     policy_kwargs=SMALL), 30, 10),
    "edac-mc+td": ("edac-mc", dict(pretrain_steps=20, pretrain_kwargs=dict(td_weight=0.5),
                                   policy_kwargs=dict(SMALL, n_critics=3)), 30, 10),
}


def ensure_dataset(root: Path) -> str:
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    from zoo.data import local_dataset_ids

    try:  # the generator may live in the data layer or in its own layer
        from zoo.datagen.generate import QUICKSTART_DATASET, make_quickstart_dataset
    except ImportError:
        from zoo.datagen.generate import QUICKSTART_DATASET, make_quickstart_dataset
    if QUICKSTART_DATASET not in local_dataset_ids():
        make_quickstart_dataset(N_TRANSITIONS, seed=0, progress=False)
    return QUICKSTART_DATASET


def digest(agent) -> str:
    """sha256 over the policy's state dict (parameters and buffers) and every optimizer's state."""
    h = hashlib.sha256()

    def feed(name: str, value) -> None:
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
        else:
            h.update(repr(value).encode())

    for name, value in agent.policy.state_dict().items():
        feed(name, value)
    for opt_name in agent.policy.optimizer_names:
        state = getattr(agent.policy, opt_name).state_dict()
        for index, slots in sorted(state["state"].items()):
            for slot, value in sorted(slots.items()):
                feed(f"{opt_name}.{index}.{slot}", value)
        for group in state["param_groups"]:
            feed(f"{opt_name}.lr", group["lr"])
    feed("n_updates", agent._n_updates)
    feed("num_timesteps", agent.num_timesteps)
    return h.hexdigest()


def run(key: str, kwargs: dict, offline: int, online: int, dataset) -> str:
    from zoo.registry import make_agent

    kwargs = dict(kwargs)
    agent = make_agent(key, dataset, seed=0, batch_size=32, device="cpu", **kwargs)
    agent.learn(offline)
    agent.finetune(online)
    return digest(agent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/zoo-weights-hash"), help="Minari root of the dataset")
    parser.add_argument("--keys", nargs="*", help="only these keys (default: all, then the extra variants)")
    parser.add_argument("--compare", type=Path, help="an earlier output: print both hashes per key, exit 1 on a difference")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset_id = ensure_dataset(args.root)
    from zoo.data import load_dataset

    dataset = load_dataset(dataset_id, device="cpu")
    before = {}
    if args.compare is not None:
        before = dict(line.split() for line in args.compare.read_text().splitlines() if line.strip())
    different = []
    jobs = [(k, k, *RUNS[k]) for k in RUNS] + [(name, *spec) for name, spec in EXTRA.items()]
    for name, key, kwargs, offline, online in jobs:
        if args.keys and name not in args.keys:
            continue
        start = time.perf_counter()
        value = run(key, kwargs, offline, online, dataset)
        if args.compare is None:
            print(f"{name:12s} {value}", flush=True)
        else:
            same = before.get(name) == value
            different += [] if same else [name]
            print(f"{name:12s} {before.get(name, '-')[:16]} {value[:16]} {'same' if same else 'DIFFERENT'}", flush=True)
        print(f"  ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
    if different:
        sys.exit(f"Hashes differ for: {', '.join(different)}")


if __name__ == "__main__":
    main()
