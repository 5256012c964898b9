"""Atomic replacement of one file (manifest and snapshot writers; whole packages: `package_writer`).

A crash or error mid-write must leave the previous file intact: write a temp file in the same
directory (same filesystem, so `os.replace` is atomic), fsync it, then swap it in.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` with `data` atomically; on any failure the old file stays and no temp remains."""
    path = Path(path)
    # The temp name keeps a short stem of the target: the whole name plus mkstemp's affixes could pass the
    # file system's 255-byte limit for a target name that is itself valid.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:32]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
