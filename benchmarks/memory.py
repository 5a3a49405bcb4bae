"""Peak memory of long offline runs: `make_agent(key, ds).learn(N)` with and without zoo's allocator setting.

Each (agent, allocator configuration) runs in a fresh subprocess on the same small real dataset (Hopper-v5
transitions under uniform random actions, written as a Minari dataset), and prints its peak resident set
size (VmHWM) and current RSS at checkpoints of 100, 300, 600, 1000, 2000, ... updates.

Configurations (`--configs`):
- `zoo`:     what zoo does by itself: nothing for float32 EnsembleQ critics on the CPU (CQL's large
             temporaries are scratch tensors, zoo.nn.scratch); where they are fresh tensors (bf16, LayerNorm or
             shared critics, compiled losses) a fixed glibc mmap threshold and PyTorch's transparent huge
             pages for large tensors (zoo.allocator).
- `default`: glibc's own behaviour (ZOO_MALLOC_DEFAULT=1 in the environment turns zoo's setting off).
- `env`:     zoo's setting off, MALLOC_MMAP_THRESHOLD_=131072 in the environment (the manual fix).
- `mmap=<bytes>[,trim=<bytes>][,arenas=<n>][,thp=0]`: explicit settings, through ZOO_MALLOC_* variables
  (thp=0: without PyTorch's transparent huge pages).

A child whose RSS passes `--rss-cap-gb` stops at once and is reported as over the cap, so that a
configuration that fragments does not take the machine's memory from other work.

    python benchmarks/memory.py [--keys calql,cql,td3bc] [--checkpoints 100,300,600,1000,2000,3000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DATASET_ID = "zoo/bench/hopper-random-v0"
ENV_ID = "Hopper-v5"


def status_kib(field: str) -> int | None:
    """A `VmHWM`/`VmRSS` line of /proc/self/status in KiB (None off Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process: VmHWM on Linux, else getrusage's ru_maxrss."""
    hwm = status_kib("VmHWM")
    if hwm is not None:
        return hwm / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, KiB on Linux


def rss_mib() -> float:
    rss = status_kib("VmRSS")
    return float("nan") if rss is None else rss / 1024


def config_env(config: str) -> dict[str, str]:
    """The environment variables that select one allocator configuration in a child."""
    clear = ("ZOO_MALLOC_DEFAULT", "ZOO_MALLOC_MMAP_THRESHOLD", "ZOO_MALLOC_TRIM_THRESHOLD", "ZOO_MALLOC_ARENA_MAX",
             "ZOO_MALLOC_THP", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX",
             "THP_MEM_ALLOC_ENABLE", "GLIBC_TUNABLES")
    env = {k: v for k, v in os.environ.items() if k not in clear}
    if config == "zoo":
        return env
    if config == "default":
        return {**env, "ZOO_MALLOC_DEFAULT": "1"}
    if config == "env":
        return {**env, "ZOO_MALLOC_DEFAULT": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    names = {"mmap": "ZOO_MALLOC_MMAP_THRESHOLD", "trim": "ZOO_MALLOC_TRIM_THRESHOLD",
             "arenas": "ZOO_MALLOC_ARENA_MAX", "thp": "ZOO_MALLOC_THP"}
    for part in config.split(","):
        name, _, value = part.partition("=")
        if name not in names or not value.isdigit():
            raise SystemExit(
                f"memory.py: unknown configuration '{config}': use zoo, default, env or "
                "mmap=<bytes>[,trim=<bytes>][,arenas=<n>][,thp=0]"
            )
        env[names[name]] = value
    return env


# ---------------------------------------------------------------------- child


def watchdog(cap_mib: float) -> None:
    """Stop the process at once (exit 3) when its RSS passes the cap."""

    def watch() -> None:
        while True:
            if rss_mib() > cap_mib:
                print(json.dumps({"over_cap_mib": cap_mib, "peak_mib": peak_rss_mib()}), flush=True)
                os._exit(3)
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()


def child(args: argparse.Namespace) -> None:
    """One agent, one configuration: learn to each checkpoint, print a JSON line per checkpoint."""
    import torch

    torch.set_num_threads(args.threads)
    import zoo
    from zoo import load_dataset, make_agent
    from zoo.allocator import allocator_settings

    watchdog(args.rss_cap_gb * 1024)
    print(json.dumps({"settings": allocator_settings()}), flush=True)
    dataset = load_dataset(DATASET_ID)
    agent = make_agent(args.key, dataset, seed=0, batch_size=args.batch_size)
    assert zoo.__version__
    done = 0
    for checkpoint in args.checkpoints:
        before = resource.getrusage(resource.RUSAGE_SELF)
        agent.learn(checkpoint - done, reset_num_timesteps=done == 0)
        after = resource.getrusage(resource.RUSAGE_SELF)
        n = checkpoint - done
        done = checkpoint
        print(json.dumps({
            "updates": done,
            "peak_mib": peak_rss_mib(),
            "rss_mib": rss_mib(),
            # CPU time of this process per update: unlike wall time, other processes' load hardly moves it.
            "user_ms": 1000 * (after.ru_utime - before.ru_utime) / n,
            "sys_ms": 1000 * (after.ru_stime - before.ru_stime) / n,
            "faults": (after.ru_minflt - before.ru_minflt) / n,
        }), flush=True)


# ---------------------------------------------------------------------- parent


def run_child(key: str, config: str, args: argparse.Namespace, root: str) -> list[dict]:
    command = [sys.executable, __file__, "--child", key, "--threads", str(args.threads),
               "--batch-size", str(args.batch_size), "--rss-cap-gb", str(args.rss_cap_gb),
               "--checkpoints", ",".join(map(str, args.checkpoints))]
    env = {**config_env(config), "MINARI_DATASETS_PATH": root}
    lines: list[dict] = []
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("{"):
                lines.append(json.loads(line))
    if process.returncode not in (0, 3):
        raise SystemExit(f"memory.py: the {key}/{config} child failed (exit {process.returncode})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", default="calql,cql,td3bc", help="registry agents, comma-separated")
    parser.add_argument("--configs", default="zoo;default", help="allocator configurations, ';'-separated")
    parser.add_argument("--checkpoints", default="100,300,600,1000,2000,3000",
                        help="update counts at which to report memory")
    parser.add_argument("--transitions", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch_threads_default(), help="torch intra-op threads")
    parser.add_argument("--rss-cap-gb", type=float, default=6.0, help="stop a child whose RSS passes this")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.checkpoints = sorted({int(c) for c in args.checkpoints.split(",")})
    if args.child:
        args.key = args.child
        child(args)
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from throughput import make_data, quiet_third_party_notices, write_minari

    quiet_third_party_notices()
    root = os.environ.get("ZOO_BENCH_MINARI") or tempfile.mkdtemp(prefix="zoo-memory-")
    os.environ["MINARI_DATASETS_PATH"] = root
    write_minari(make_data(args.transitions, env_id=ENV_ID), DATASET_ID, env_id=ENV_ID)
    configs = args.configs.split(";")
    print(f"{args.transitions} {ENV_ID} transitions, batch {args.batch_size}, {args.threads} torch threads; "
          f"peak RSS (VmHWM) / current RSS in MiB after N updates, (user + system CPU ms per update over the "
          "segment before)")
    for key in args.keys.split(","):
        for config in configs:
            lines = run_child(key, config, args, root)
            settings = next((line["settings"] for line in lines if "settings" in line), {})
            cells = [f"{line['updates']}: {line['peak_mib']:.0f}/{line['rss_mib']:.0f}"
                     f" ({line['user_ms']:.0f}+{line['sys_ms']:.0f} ms)"
                     for line in lines if "updates" in line]
            cells += [f"over {line['over_cap_mib']:.0f} MiB cap" for line in lines if "over_cap_mib" in line]
            label = f"{key} [{config}]"
            print(f"{label:32} " + "  ".join(cells) + f"   settings {settings}", flush=True)


def torch_threads_default() -> int:
    return min(2, os.cpu_count() or 1)


if __name__ == "__main__":
    main()
