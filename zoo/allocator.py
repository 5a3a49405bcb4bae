"""glibc allocator settings that keep long CQL-family runs' memory bounded, applied once per process when the
first CQL-family agent (CQL, Cal-QL, PSQN on CQL) is set up whose sampled-action evaluation makes fresh
multi-MiB tensors: critics under bf16 autocast or with LayerNorm, PSQN's shared critics, compiled losses
(zoo.agents.cql.CQL._setup_model). The default case, EnsembleQ critics in float32 on the CPU, keeps those
tensors in reused scratch memory (zoo.nn.scratch) and leaves the allocator alone.

Only there: the fixed threshold makes every large tensor a fresh mapping, which costs page faults. For CQL's
variable multi-MiB temporaries that is the price of a bounded heap, but a TD3+BC population (8 members, bf16)
ran 4x slower with it (benchmarks/throughput.py: 195 against 780 member-updates/s) and has no fragmentation
to prevent, so `import zoo` leaves the allocator alone. It slows every other large tensor of the process
too: an eager single-file CQL run beside zoo's ran 8.8 updates/s with it, 13.1 without (this session's
benchmark).

Why: PyTorch's CPU allocator hands every tensor to malloc. glibc serves a request of at least the mmap
threshold with its own mmap (returned to the system by free) and anything smaller from a heap (an arena
that only shrinks from its top). The threshold is dynamic by default: each time an mmapped chunk is freed,
the threshold rises to that chunk's size (up to 32 MiB on 64-bit). CQL's update allocates temporaries of
a few MiB (31 actions x 256 states x 256 units x 2 critics, 4 bytes each, per layer and per gradient), so
after the first update they all move onto the heap, interleaved with long-lived small allocations; the
heap fragments and never shrinks. Measured on a 3k-transition Hopper dataset: `calql` peaked at 0.6 GB
after 100 updates, 4.2 GB after 300 and 9-13 GB after 900; with a fixed threshold it stays near 0.5 GB.

What: on glibc (Linux), `mallopt(M_MMAP_THRESHOLD, 128 KiB)` (glibc's initial value, now fixed: setting
it turns the dynamic adjustment off), so large tensors always get their own mapping and go back to the
system when freed. A fixed threshold alone costs page faults: every large tensor is fresh zeroed memory
(calql, batch 256, one thread: 90 ms of system time per update on top of 105 ms of user time). So on Linux
zoo also sets THP_MEM_ALLOC_ENABLE=1 for PyTorch's CPU allocator (read at its first allocation), which then
advises transparent huge pages for tensors of 2 MiB or more: 8x fewer faults (system time 33 ms per update;
glibc's own fragmenting default: 25 ms). Higher fixed thresholds (4 MiB, 32 MiB) fragment as the dynamic
one does (benchmarks/memory.py measures all of these).
Since CQL's critic evaluation keeps its activations and gradients in reused scratch tensors (zoo.nn.scratch,
`EnsembleQ.many_actions` on the CPU), its largest temporaries no longer pass through malloc at all: calql's
peak RSS stays flat over 2000 updates with glibc's default allocator (benchmarks/memory.py, one thread:
503 MiB after 100 updates, 504 after 2000; cql 515 and 517), so that case needs no setting. The threshold
stays as the guard for what the scratch does not cover (listed above), whose temporaries are fresh tensors.
`mallopt` changes the process's allocator, so each setting is skipped when the user chose it already
(MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES' glibc.malloc.mmap_threshold, THP_MEM_ALLOC_ENABLE in the
environment); the threshold is a no-op on other C libraries (musl) and other systems (macOS), which have
neither glibc's dynamic threshold nor mallopt's parameters.

Environment (read once, at import):
- ZOO_MALLOC_DEFAULT=1: leave the allocator as it is (for comparisons: benchmarks/memory.py).
- ZOO_MALLOC_MMAP_THRESHOLD=<bytes>, ZOO_MALLOC_TRIM_THRESHOLD=<bytes>, ZOO_MALLOC_ARENA_MAX=<n>: other
  values (benchmarks/memory.py measures them); a trim threshold or an arena limit is set only when given.
- ZOO_MALLOC_THP=0: do not set THP_MEM_ALLOC_ENABLE.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Mapping, MutableMapping

from zoo.errors import ConfigError

# mallopt parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

DEFAULT_MMAP_THRESHOLD = 128 * 1024

# setting -> (mallopt parameter, zoo's override variable, glibc's own variable, GLIBC_TUNABLES name)
_SETTINGS = {
    "mmap_threshold": (
        M_MMAP_THRESHOLD, "ZOO_MALLOC_MMAP_THRESHOLD", "MALLOC_MMAP_THRESHOLD_", "mmap_threshold"
    ),
    "trim_threshold": (
        M_TRIM_THRESHOLD, "ZOO_MALLOC_TRIM_THRESHOLD", "MALLOC_TRIM_THRESHOLD_", "trim_threshold"
    ),
    "arena_max": (M_ARENA_MAX, "ZOO_MALLOC_ARENA_MAX", "MALLOC_ARENA_MAX", "arena_max"),
}

_applied: dict[str, int] = {}
_skipped: dict[str, str] = {}


def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has gnu_get_libc_version), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # musl has no such symbol
        libc.mallopt
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def plan(environ: Mapping[str, str], linux: bool, has_glibc: bool) -> tuple[dict[str, int], dict[str, str]]:
    """The settings to apply for this environment: ({setting: value}, {setting: why it is skipped}).

    Settings: `torch_thp` (THP_MEM_ALLOC_ENABLE=1, Linux), and the mallopt ones of _SETTINGS (glibc):
    `mmap_threshold` always, `trim_threshold` and `arena_max` only when their ZOO_MALLOC_* variable is set.
    """
    if environ.get("ZOO_MALLOC_DEFAULT", "").strip() not in ("", "0"):
        return {}, {"all": "ZOO_MALLOC_DEFAULT is set"}
    wanted: dict[str, int] = {}
    skipped: dict[str, str] = {}
    if not linux:
        skipped["torch_thp"] = "not Linux"
    elif environ.get("ZOO_MALLOC_THP", "1").strip() == "0":
        skipped["torch_thp"] = "ZOO_MALLOC_THP=0"
    elif "THP_MEM_ALLOC_ENABLE" in environ:
        skipped["torch_thp"] = "THP_MEM_ALLOC_ENABLE set by the user"
    else:
        wanted["torch_thp"] = 1
    tunables = environ.get("GLIBC_TUNABLES", "")
    for name, (_, zoo_var, glibc_var, tunable) in _SETTINGS.items():
        value = environ.get(zoo_var)
        if value is not None and not value.strip().isdigit():
            raise ConfigError(
                f"{zoo_var}='{value}' in the environment: give a whole number (bytes; arenas for "
                "ZOO_MALLOC_ARENA_MAX), or unset it."
            )
        if value is None and name != "mmap_threshold":
            continue
        if not has_glibc:
            skipped[name] = "not glibc"
        elif glibc_var in environ or f"glibc.malloc.{tunable}" in tunables:
            skipped[name] = f"{glibc_var} or GLIBC_TUNABLES set by the user"
        else:
            wanted[name] = DEFAULT_MMAP_THRESHOLD if value is None else int(value)
    return wanted, skipped


def apply(environ: MutableMapping[str, str] | None = None) -> dict[str, int]:
    """Apply zoo's allocator settings once per process (see the module docstring); returns those applied."""
    environ = os.environ if environ is None else environ
    if _applied or _skipped:
        return dict(_applied)
    libc = glibc()
    wanted, skipped = plan(environ, sys.platform.startswith("linux"), libc is not None)
    _skipped.update(skipped)
    for name, value in wanted.items():
        if name == "torch_thp":
            # PyTorch reads it at its first CPU allocation (c10's alloc_cpu): tensors of 2 MiB or more are
            # then madvise(MADV_HUGEPAGE)d. Without effect when torch allocated before `import zoo`.
            environ["THP_MEM_ALLOC_ENABLE"] = "1"
            _applied[name] = value
        elif libc is not None and libc.mallopt(_SETTINGS[name][0], value) == 1:  # 1: success, 0: error
            _applied[name] = value
        else:
            _skipped[name] = f"mallopt rejected {value}"
    return dict(_applied)


def allocator_settings() -> dict[str, int | str]:
    """What `import zoo` did to the allocator: {setting: value} applied, or {setting: why it was skipped}."""
    return {**_applied, **{name: f"skipped: {why}" for name, why in _skipped.items()}}


__all__ = ["allocator_settings", "apply", "glibc", "plan"]
