"""glibc allocator settings that keep long CQL-family runs' memory bounded, applied once at `import zoo`.

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
system when freed. `mallopt` changes the process's allocator, so each setting is skipped when the user
chose it already (MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES' glibc.malloc.mmap_threshold in the
environment); no-op on other C libraries (macOS, musl), which have neither the dynamic threshold nor
mallopt's parameters.

Environment (read once, at import):
- ZOO_MALLOC_DEFAULT=1: leave the allocator as it is (for comparisons: benchmarks/memory.py).
- ZOO_MALLOC_MMAP_THRESHOLD=<bytes>, ZOO_MALLOC_TRIM_THRESHOLD=<bytes>, ZOO_MALLOC_ARENA_MAX=<n>: other
  values (benchmarks/memory.py measures them); a trim threshold or an arena limit is set only when given.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

from zoo.errors import ConfigError

# mallopt parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

DEFAULT_MMAP_THRESHOLD = 128 * 1024

# setting -> (mallopt parameter, zoo's override variable, glibc's own variable, GLIBC_TUNABLES name)
_SETTINGS = {
    "mmap_threshold": (M_MMAP_THRESHOLD, "ZOO_MALLOC_MMAP_THRESHOLD", "MALLOC_MMAP_THRESHOLD_", "mmap_threshold"),
    "trim_threshold": (M_TRIM_THRESHOLD, "ZOO_MALLOC_TRIM_THRESHOLD", "MALLOC_TRIM_THRESHOLD_", "trim_threshold"),
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


def _wanted(environ: os._Environ | dict[str, str]) -> dict[str, int]:
    wanted = {"mmap_threshold": DEFAULT_MMAP_THRESHOLD}
    for name, (_, zoo_var, _, _) in _SETTINGS.items():
        value = environ.get(zoo_var)
        if value is not None:
            if not value.strip().isdigit():
                raise ConfigError(
                    f"{zoo_var}='{value}' in the environment: give a whole number (bytes; arenas for "
                    "ZOO_MALLOC_ARENA_MAX), or unset it."
                )
            wanted[name] = int(value)
    return wanted


def apply(environ: os._Environ | dict[str, str] | None = None) -> dict[str, int]:
    """Apply zoo's allocator settings once (see the module docstring); returns those applied."""
    environ = os.environ if environ is None else environ
    if _applied or _skipped:
        return dict(_applied)
    if environ.get("ZOO_MALLOC_DEFAULT", "").strip() not in ("", "0"):
        _skipped["all"] = "ZOO_MALLOC_DEFAULT is set"
        return {}
    libc = glibc()
    if libc is None:
        _skipped["all"] = "not glibc"
        return {}
    tunables = environ.get("GLIBC_TUNABLES", "")
    for name, value in _wanted(environ).items():
        parameter, _, glibc_var, tunable = _SETTINGS[name]
        if glibc_var in environ or f"glibc.malloc.{tunable}" in tunables:
            _skipped[name] = f"{glibc_var} or GLIBC_TUNABLES set by the user"
            continue
        if libc.mallopt(parameter, value) == 1:  # mallopt returns 1 on success, 0 on error
            _applied[name] = value
        else:
            _skipped[name] = f"mallopt rejected {value}"
    return dict(_applied)


def allocator_settings() -> dict[str, int | str]:
    """What `import zoo` did to the allocator: {setting: value} applied, or {setting: why it was skipped}."""
    return {**_applied, **{name: f"skipped: {why}" for name, why in _skipped.items()}}


__all__ = ["allocator_settings", "apply", "glibc"]
