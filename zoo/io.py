"""Writing files so that a reader never sees half of one: the one home of atomic writes.

Every file the project writes (configs, CSVs at each flush, PNGs, checkpoints, manifests, episodes)
goes through `atomic_write`: the content is written to a hidden temporary file in the destination's
folder, flushed and fsynced, then renamed over the destination with `os.replace`, which POSIX makes
atomic within one file system. A crash (SIGKILL included) leaves either the old file or the new one,
never a mix; the temporary file, if any, starts with "." and ends in ".tmp" and is swept by
`remove_stale_temporaries`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

TMP_SUFFIX = ".tmp"


def _umask_mode() -> int:
    """The mode a plain `open(path, "w")` would give (0o666 minus the umask): mkstemp makes 0600 files,
    which would leave configs, CSVs and checkpoints unreadable to other users."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on a clean exit it replaces `path` whole.

    `mode` is "w" (text) or "wb" (binary). On an exception the temporary file is removed and `path`
    keeps its previous content.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', got {mode!r}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.fchmod(fd, _umask_mode())
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `path` for writers that take a file name (matplotlib, torch, SB3's zip,
    numpy): whatever is written there replaces `path` on a clean exit. `suffix` keeps an extension that
    the writer insists on (".png", ".npz")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + TMP_SUFFIX, dir=path.parent)
    os.fchmod(fd, _umask_mode())
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries `atomic_write`/`atomic_path` leave when a process is killed mid-write."""
    removed = []
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed
