"""Thread count for small-batch inference."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run a block with `n` intra-op threads.

    Acting in a handful of environments is a matmul on a few rows: one thread does it in microseconds,
    while two OpenMP threads on a busy 2-core machine were measured at 24-48 ms per call (spin-waiting).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
