"""Memory stays bounded on long CQL-family runs. CQL's sampled-action evaluation keeps its multi-MiB
temporaries in reused scratch tensors (zoo.nn.scratch) in the default case; where they are fresh tensors
(bf16 autocast, LayerNorm or shared critics, compiled losses), zoo.allocator fixes glibc's mmap threshold
when the first such agent is set up (not at `import zoo`: it would slow the TD3 family down for nothing).

glibc's dynamic mmap threshold moves such temporaries onto a heap that fragments (calql before the scratch
tensors: 0.6 GB after 100 updates, 4 GB after 300 at batch 256). The run test trains calql in a real
subprocess and reads its peak RSS (VmHWM) as it goes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from zoo.allocator import DEFAULT_MMAP_THRESHOLD, glibc, plan
from zoo.errors import ConfigError

LIBC = glibc()
GLIBC = LIBC is not None
HAS_MALLINFO2 = GLIBC and hasattr(LIBC, "mallinfo2")
needs_glibc = pytest.mark.skipif(not GLIBC, reason="zoo's allocator setting is glibc's mallopt")


def run_python(code: str, env: dict[str, str], *args: str, timeout: float = 120) -> list[dict]:
    """Run `code` in a fresh interpreter (sys.argv[1:] = args); its JSON lines on stdout."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def clean_env(**extra: str) -> dict[str, str]:
    drop = ("ZOO_MALLOC", "MALLOC_", "GLIBC_TUNABLES", "THP_MEM_ALLOC_ENABLE")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)}, **extra}


# ---------------------------------------------------------------------- what is applied, when


def test_plan_on_glibc_linux():
    assert plan({}, linux=True, has_glibc=True) == ({"torch_thp": 1, "mmap_threshold": 131072}, {})
    assert DEFAULT_MMAP_THRESHOLD == 128 * 1024


def test_plan_leaves_the_users_choices_alone():
    wanted, skipped = plan({"MALLOC_MMAP_THRESHOLD_": "65536", "THP_MEM_ALLOC_ENABLE": "0"}, True, True)
    assert wanted == {}
    assert set(skipped) == {"mmap_threshold", "torch_thp"}
    wanted, skipped = plan({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, True, True)
    assert wanted == {"torch_thp": 1} and "GLIBC_TUNABLES" in skipped["mmap_threshold"]
    assert plan({"ZOO_MALLOC_DEFAULT": "1"}, True, True) == ({}, {"all": "ZOO_MALLOC_DEFAULT is set"})
    assert plan({"ZOO_MALLOC_DEFAULT": "0"}, True, True)[0] == {"torch_thp": 1, "mmap_threshold": 131072}


def test_plan_elsewhere_and_overrides():
    # macOS / musl: nothing of glibc's; THP is Linux-only.
    nothing = ({}, {"torch_thp": "not Linux", "mmap_threshold": "not glibc"})
    assert plan({}, linux=False, has_glibc=False) == nothing
    assert plan({}, linux=True, has_glibc=False) == ({"torch_thp": 1}, {"mmap_threshold": "not glibc"})
    environ = {"ZOO_MALLOC_MMAP_THRESHOLD": "1048576", "ZOO_MALLOC_ARENA_MAX": "2", "ZOO_MALLOC_THP": "0"}
    assert plan(environ, True, True) == (
        {"mmap_threshold": 1048576, "arena_max": 2},
        {"torch_thp": "ZOO_MALLOC_THP=0"},
    )


def test_a_bad_override_is_a_one_line_error():
    message = r"^ZOO_MALLOC_MMAP_THRESHOLD='128k' in the environment: give a whole number"
    with pytest.raises(ConfigError, match=message):
        plan({"ZOO_MALLOC_MMAP_THRESHOLD": "128k"}, True, True)


AFTER_A_LARGE_FREE = """
import ctypes, json, os, sys
import zoo
from zoo.allocator import allocator_settings
at_import = allocator_settings()
from zoo import load_dataset, make_agent

class MallInfo2(ctypes.Structure):  # glibc >= 2.33
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
big = libc.malloc(8 << 20)
libc.free(big)  # glibc's dynamic rule now raises its threshold to 8 MiB
make_agent("cql", load_dataset(sys.argv[1]), seed=0, **json.loads(sys.argv[2]))
before = libc.mallinfo2().hblkhd
block = libc.malloc(1 << 20)
mapped = libc.mallinfo2().hblkhd - before  # bytes in mmapped chunks: the 1 MiB block's own mapping or 0
libc.free(block)
print(json.dumps({"at_import": at_import, "settings": allocator_settings(), "mapped": mapped,
                  "thp": os.environ.get("THP_MEM_ALLOC_ENABLE")}))
"""


@needs_glibc
@pytest.mark.skipif(not HAS_MALLINFO2, reason="mallinfo2 needs glibc >= 2.33")
def test_a_cql_agent_whose_temporaries_are_fresh_fixes_glibcs_threshold(write_tiny):
    """`import zoo` leaves the allocator alone, and so does a float32 CQL agent with EnsembleQ critics on the
    CPU (its sampled-action temporaries are scratch tensors). One with LayerNorm critics (the batched path:
    fresh temporaries) fixes the threshold: a 1 MiB block allocated past a freed 8 MiB block still gets its
    own mapping (fixed 128 KiB threshold); with ZOO_MALLOC_DEFAULT=1 glibc's dynamic rule puts it on the heap."""
    tiny = write_tiny().dataset_id
    layer_norm = json.dumps({"policy_kwargs": {"net_arch": [16, 16], "critic_layer_norm": True}})
    (plain,) = run_python(AFTER_A_LARGE_FREE, clean_env(), tiny, json.dumps({"policy_kwargs": {"net_arch": [16, 16]}}))
    assert plain["at_import"] == {} and plain["settings"] == {} and plain["mapped"] == 0
    (fixed,) = run_python(AFTER_A_LARGE_FREE, clean_env(), tiny, layer_norm)
    assert fixed["at_import"] == {}
    assert fixed["settings"] == {"torch_thp": 1, "mmap_threshold": 131072}
    assert fixed["thp"] == "1"
    assert fixed["mapped"] >= 1 << 20
    (default,) = run_python(AFTER_A_LARGE_FREE, clean_env(ZOO_MALLOC_DEFAULT="1"), tiny, layer_norm)
    assert default["settings"] == {"all": "skipped: ZOO_MALLOC_DEFAULT is set"}
    assert default["thp"] is None
    assert default["mapped"] == 0
    (user,) = run_python(AFTER_A_LARGE_FREE, clean_env(MALLOC_MMAP_THRESHOLD_="65536"), tiny, layer_norm)
    assert user["settings"]["mmap_threshold"].startswith("skipped: MALLOC_MMAP_THRESHOLD_")
    assert user["mapped"] >= 1 << 20  # glibc's own variable fixes the threshold too


# ---------------------------------------------------------------------- a real run


CALQL_RUN = """
import json, sys
import torch
torch.set_num_threads(1)
from zoo import load_dataset, make_agent

def peak_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024

agent = make_agent("calql", load_dataset(sys.argv[1]), seed=0, batch_size=64)
for segment in range(8):
    agent.learn(50, reset_num_timesteps=segment == 0)
    print(json.dumps({"updates": agent.n_updates, "peak_mib": peak_mib()}), flush=True)
"""


@needs_glibc
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_calql_peak_memory_levels_off(write_tiny, make_episode):
    """calql, 400 updates at batch 64 (31 x 64 rows per critic call), zoo's defaults (float32 EnsembleQ
    critics on the CPU: the sampled-action temporaries are scratch tensors, glibc's allocator is left alone):
    the peak RSS after 400 updates is within 48 MiB of the peak after 100 (measured: 425 and 425 MiB; before
    the scratch tensors, +1241 MiB on glibc's default allocator)."""
    episodes = [make_episode(e, 8, terminated=e % 2 == 0, truncated=e % 2 == 1) for e in range(4)]
    tiny = write_tiny(episodes=episodes)
    lines = run_python(CALQL_RUN, clean_env(), tiny.dataset_id, timeout=300)
    peaks = {line["updates"]: line["peak_mib"] for line in lines}
    assert sorted(peaks) == list(range(50, 401, 50))
    assert peaks[400] - peaks[100] < 48, peaks
    assert peaks[400] < 2048, peaks
