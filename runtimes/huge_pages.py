"""Back a CPU session's weights with 2 MiB pages: the decode step streams every weight once a token, and with 4 KiB
pages most of those reads also miss the TLB.

onnxruntime allocates its copies of the weights (prepacked `MatMulNBits`/`QMoE` blocks, initializers) with
malloc, i.e. anonymous `mmap`s, and has no option for large pages. On Linux with transparent huge pages in
`madvise` mode (the default of most distributions) those mappings stay on 4 KiB pages. After the sessions are
created, `promote` marks the anonymous memory mapped during the load `MADV_HUGEPAGE` and collapses it at once
with `MADV_COLLAPSE` (Linux 6.1+; on older kernels khugepaged collapses it later, in the background). Measured on
one CPU thread, loads with and without alternated (`python -m rxt_edge.bench.pages_ab`): decode 5-16% faster at
alpha-mini int4, 8-28% at int8, 10-16% at RxT-Beta-mini int4, 4-5% at the full RxT-Beta int4 (docs/benchmarks.md,
"Huge pages for the loaded weights"). The cost is the collapse, once: under a second for alpha-mini, 2-6 s for
Beta-sized packages.

Only address ranges that were not mapped at `snapshot()` are touched, so an application embedding the runtime keeps
its own memory as it was. Off with `RxTSession.load(..., huge_pages=False)` or `RXT_EDGE_HUGE_PAGES=0`.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HUGE = 2 << 20  # x86-64 and arm64 (4 KiB base pages) transparent huge page size
MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
ENV = "RXT_EDGE_HUGE_PAGES"
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
NOTHING_NEW = "no new mapping of 2 MiB or more"  # the load reused memory the process had already mapped


@dataclass(frozen=True)
class Promotion:
    """What `promote` did: bytes collapsed onto huge pages now, bytes advised (collapsed now or by khugepaged
    later), the time it took, and why nothing was done (empty when something was)."""

    collapsed_bytes: int = 0
    advised_bytes: int = 0
    seconds: float = 0.0
    skipped: str = ""


def wanted(huge_pages: bool | None) -> bool:
    """The caller's choice, else the environment's (`RXT_EDGE_HUGE_PAGES=0` turns it off), else on."""
    if huge_pages is not None:
        return bool(huge_pages)
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def unavailable() -> str:
    """Why huge pages cannot be used in this process ("" when they can)."""
    if not sys.platform.startswith("linux"):
        return f"transparent huge pages are Linux-only (this is {sys.platform})"
    try:
        mode = _THP_MODE.read_text()
    except OSError:
        return "this kernel has no transparent huge pages"
    if "[never]" in mode:
        return "transparent huge pages are disabled ([never] in /sys/kernel/mm/transparent_hugepage/enabled)"
    return ""


def anonymous_mappings(maps: str | None = None) -> frozenset[tuple[int, int]]:
    """(start, end) of this process's private writable anonymous mappings (and the heap), from /proc/self/maps."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return frozenset()
    found = set()
    for line in maps.splitlines():
        parts = line.split()
        if len(parts) < 5 or not parts[1].startswith("rw") or parts[1][3:4] != "p":
            continue
        name = parts[5] if len(parts) > 5 else ""
        if name and name != "[heap]":  # files, stacks, vdso: not ours to change
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        found.add((start, end))
    return frozenset(found)


def huge_aligned(start: int, end: int) -> tuple[int, int] | None:
    """The whole 2 MiB pages inside [start, end), or None when there is none."""
    lo, hi = -(-start // HUGE) * HUGE, end // HUGE * HUGE
    return (lo, hi) if hi > lo else None


def new_ranges(now: frozenset[tuple[int, int]], before: frozenset[tuple[int, int]]) -> list[tuple[int, int]]:
    """The address ranges of `now` outside every range of `before`: the kernel merges a new anonymous mapping
    with an adjacent older one, so whole mappings cannot tell new memory from old."""
    old = sorted(before)
    found = []
    for start, end in sorted(now):
        pieces = [(start, end)]
        for lo, hi in old:
            if hi <= start or lo >= end:
                continue
            pieces = [(a, b) for s, e in pieces for a, b in ((s, min(e, lo)), (max(s, hi), e)) if b > a]
        found.extend(pieces)
    return found


def snapshot() -> frozenset[tuple[int, int]]:
    """The mappings to leave alone: call before creating the sessions."""
    return anonymous_mappings() if not unavailable() else frozenset()


def promote(before: frozenset[tuple[int, int]]) -> Promotion:
    """Advise and collapse the anonymous memory mapped since `before` (see the module docstring)."""
    why = unavailable()
    if why:
        return Promotion(skipped=why)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return Promotion(skipped="madvise is not available through the C library")
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    began = time.perf_counter()
    collapsed = advised = 0
    for start, end in new_ranges(anonymous_mappings(), before):
        span = huge_aligned(start, end)
        if span is None:
            continue
        lo, size = span[0], span[1] - span[0]
        if madvise(lo, size, MADV_HUGEPAGE) != 0:
            continue
        advised += size
        if madvise(lo, size, MADV_COLLAPSE) == 0:  # EINVAL before Linux 6.1: khugepaged does it later
            collapsed += size
    skipped = "" if advised else NOTHING_NEW
    return Promotion(collapsed, advised, time.perf_counter() - began, skipped)
