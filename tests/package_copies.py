"""Writable copies of a package, for tests that damage one (the originals are shared session fixtures)."""

from __future__ import annotations

import shutil
from pathlib import Path


def copy_package(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst
