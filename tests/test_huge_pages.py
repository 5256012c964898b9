"""The loaded weights on 2 MiB pages (runtimes/huge_pages.py): only new anonymous mappings are touched, the answers
do not change, and the switch and its reasons are honoured."""

from __future__ import annotations

import ctypes
import json
import mmap
import re
from pathlib import Path

import pytest
from rxt_edge.runtimes import huge_pages as hp

from rxt_edge import RxTSession

DEMO = Path(__file__).resolve().parents[1] / "models" / "demo" / "package-int8"

MAPS = """\
55d0c0000000-55d0c0400000 r--p 00000000 08:01 123 /usr/bin/python3.11
55d0c2000000-55d0c4600000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0004000000 rw-p 00000000 00:00 0
7f0004000000-7f0004200000 ---p 00000000 00:00 0
7f1000000000-7f1000800000 rw-s 00000000 00:01 9 /dev/shm/x
7f2000000000-7f2000021000 rw-p 00000000 08:01 77 /usr/lib/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
"""


def test_only_private_writable_anonymous_mappings_and_the_heap_are_candidates() -> None:
    assert hp.anonymous_mappings(MAPS) == {(0x55D0C2000000, 0x55D0C4600000), (0x7F0000000000, 0x7F0004000000)}


def test_new_ranges_leave_out_what_was_mapped_before_even_when_merged() -> None:
    before = frozenset({(0x1000, 0x5000), (0x9000, 0xA000)})
    now = frozenset(
        {(0x1000, 0x8000), (0x8000, 0xB000), (0x20000, 0x30000)}
    )  # the first grew, a new one merged
    assert hp.new_ranges(now, before) == [
        (0x5000, 0x8000),
        (0x8000, 0x9000),
        (0xA000, 0xB000),
        (0x20000, 0x30000),
    ]


@pytest.mark.parametrize(
    ("start", "end", "want"),
    [
        (0x200000, 0x600000, (0x200000, 0x600000)),
        (0x200001, 0x600000, (0x400000, 0x600000)),
        (0x200000, 0x5FFFFF, (0x200000, 0x400000)),
        (0x200001, 0x3FFFFF, None),
    ],
)
def test_only_whole_huge_pages_are_advised(start: int, end: int, want) -> None:
    assert hp.huge_aligned(start, end) == want


@pytest.mark.parametrize(("arg", "env", "want"), [(None, None, True), (None, "0", False), (None, "off", False),
                                                  (True, "0", True), (False, None, False), (None, "1", True)])  # fmt: skip
def test_the_callers_choice_wins_over_the_environment(monkeypatch, arg, env, want) -> None:
    if env is None:
        monkeypatch.delenv(hp.ENV, raising=False)
    else:
        monkeypatch.setenv(hp.ENV, env)
    assert hp.wanted(arg) is want


@pytest.mark.skipif(bool(hp.unavailable()), reason=hp.unavailable() or "available")
def test_a_new_mapping_is_promoted_and_an_old_one_is_left_alone() -> None:
    old = _anonymous(
        16 << 20
    )  # mapped before the snapshot: must stay as it is (plain mmap: numpy advises its own)
    before = hp.snapshot()
    new = _anonymous(64 << 20)  # mapped after it, touched: the weights onnxruntime allocates at load
    result = hp.promote(before)
    assert result.advised_bytes >= 60 << 20 and not result.skipped
    inside_new, inside_old = _address(new) + (32 << 20), _address(old) + (8 << 20)  # 2 MiB-aligned parts
    assert _smaps_field(inside_new, "VmFlags_hg") == 1  # advised: the kernel may back it with huge pages
    assert _smaps_field(inside_old, "VmFlags_hg") == 0  # the older mapping was not advised
    if result.collapsed_bytes:  # MADV_COLLAPSE (Linux 6.1+): already on huge pages
        assert _smaps_field(inside_new, "AnonHugePages") >= 32 << 10  # kB
    assert new[:] == b"\x01" * len(new) and old[:] == b"\x01" * len(old)  # contents kept


def _anonymous(size: int) -> mmap.mmap:
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # as malloc maps big blocks
    m.write(b"\x01" * size)
    return m


def _address(m: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(m))


def _smaps_field(address: int, field: str) -> int:
    """A field of the /proc/self/smaps entry holding `address` (kB for sizes; VmFlags_hg: 1 if advised)."""
    text = Path("/proc/self/smaps").read_text()
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", text):
        lo, hi = (int(x, 16) for x in block.split()[0].split("-"))
        if lo <= address < hi:
            if field == "VmFlags_hg":
                flags = re.search(r"^VmFlags:(.*)$", block, re.M)
                return int(flags is not None and " hg" in flags.group(1))
            m = re.search(rf"^{field}:\s+(\d+)", block, re.M)
            return int(m.group(1)) if m else 0
    raise AssertionError(f"no mapping holds {address:#x}")


def test_answers_are_the_same_with_and_without_huge_pages() -> None:
    answers = []
    for on in (False, True):
        with RxTSession.load(DEMO, threads=1, huge_pages=on) as session:
            if on:
                # a small package may fit in memory the process had mapped before (other tests in this worker)
                assert session.huge_pages.skipped in ("", hp.unavailable(), hp.NOTHING_NEW)
            else:
                assert session.huge_pages.skipped == "turned off"
            c = session.conversation()
            answers.append(
                [c.say(q, max_new_tokens=12) for q in ("Hi, my name is Oscar.", "What is my name?")]
            )
    assert answers[0] == answers[1]


def test_the_ab_bench_alternates_fresh_processes_and_reports_both_forms(tmp_path: Path, capsys) -> None:
    from rxt_edge.bench import pages_ab

    out = tmp_path / "pages.json"
    assert (
        pages_ab.main([str(DEMO), "--pairs", "2", "--turns", "2", "--tokens", "3", "--json", str(out)]) == 0
    )
    (row,) = json.loads(out.read_text())
    assert len(row["plain"]) == len(row["huge_pages"]) == 2
    assert all(r["skipped"] == "turned off" and r["collapsed_mib"] == 0 for r in row["plain"])
    assert all(r["skipped"] in ("", hp.unavailable(), hp.NOTHING_NEW) for r in row["huge_pages"])
    assert all(r["decode_ms"] > 0 for r in row["plain"] + row["huge_pages"])
    assert f"| {DEMO} |" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="nowhere"):
        pages_ab.one_load(tmp_path / "nowhere", True, 1, 2, 3)
