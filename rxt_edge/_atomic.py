"""Atomic replacement of files (manifest and snapshot writers) and of whole package directories (export and
quantize).

A crash or error mid-write must leave the previous file intact: write a temp file in the same
directory (same filesystem, so `os.replace` is atomic), fsync it, then swap it in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` with `data` atomically; on any failure the old file stays and no temp remains."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def swap_in_directory(staging: Path, output: Path) -> None:
    """Rename a finished staging directory (a package) into place with the permissions of a normal mkdir; an
    old one (--overwrite) is moved aside first and put back if the rename fails, so the destination always
    holds a complete package or nothing new."""
    umask = os.umask(0)
    os.umask(umask)
    # mkdtemp made it 0700, mkstemp the manifest 0600: packages are shareable
    for p in [staging, *staging.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)
    old = None
    if output.exists():
        old = staging.with_name(staging.name + ".old")
        os.replace(output, old)
    try:
        os.replace(staging, output)
    except BaseException:
        if old is not None:
            os.replace(old, output)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
