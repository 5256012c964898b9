"""Snapshots: round trip, each failure named, atomic writes, fuzzing."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rxt_edge.snapshot import SNAPSHOT_VERSION, SnapshotError, load_snapshot, save_snapshot

FP = "ab" * 32
SHAPE = (2, 1, 4, 8)


def _stm(dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(SHAPE).astype(dtype)


@pytest.fixture
def snap(tmp_path):
    path = tmp_path / "chat.rxts"
    save_snapshot(path, _stm(), FP, {"turns": 3, "title": "héllo"})
    return path


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_round_trip(tmp_path, dtype):
    path = tmp_path / "s.rxts"
    stm = _stm(dtype)
    save_snapshot(path, stm, FP, {"turns": 7, "nested": {"a": [1, 2]}})
    out, meta = load_snapshot(path, FP, SHAPE, np.dtype(dtype).name)
    assert out.dtype == dtype and out.shape == SHAPE
    np.testing.assert_array_equal(out, stm)
    assert meta == {"turns": 7, "nested": {"a": [1, 2]}}
    out[0, 0, 0, 0] = 1.0  # a private, writable copy


def test_non_contiguous_and_big_endian_input(tmp_path):
    path = tmp_path / "s.rxts"
    stm = np.asfortranarray(_stm()).astype(">f4")
    save_snapshot(path, stm, FP)
    out, meta = load_snapshot(path, FP, SHAPE)
    np.testing.assert_array_equal(out, stm)
    assert meta == {}


def test_not_a_snapshot(tmp_path):
    for content in (b"hello world, this is text", b"\x93NUMPY\x01\x00" + b"x" * 100):
        p = tmp_path / "x"
        p.write_bytes(content)
        with pytest.raises(SnapshotError, match="not an rxt-edge snapshot"):
            load_snapshot(p, FP)
    with pytest.raises(SnapshotError, match="cannot read"):
        load_snapshot(tmp_path / "missing.rxts", FP)


def test_every_truncation_is_named(snap):
    data = snap.read_bytes()
    for cut in range(len(data)):
        snap.write_bytes(data[:cut])
        with pytest.raises(SnapshotError, match="truncated"):
            load_snapshot(snap, FP)


def test_trailing_bytes(snap):
    snap.write_bytes(snap.read_bytes() + b"\0")
    with pytest.raises(SnapshotError, match="trailing"):
        load_snapshot(snap, FP)


def test_bit_flips_after_the_prefix_fail_the_checksum(snap):
    data = snap.read_bytes()
    for pos in range(24, len(data)):  # header, payload and the checksum itself
        for bit in (0, 7):
            flipped = bytearray(data)
            flipped[pos] ^= 1 << bit
            snap.write_bytes(bytes(flipped))
            with pytest.raises(SnapshotError, match="checksum mismatch"):
                load_snapshot(snap, FP)


def test_newer_version(snap):
    data = bytearray(snap.read_bytes())
    struct.pack_into("<I", data, 8, SNAPSHOT_VERSION + 1)
    snap.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="newer rxt-edge"):
        load_snapshot(snap, FP)


def test_wrong_model_shape_dtype(snap):
    with pytest.raises(SnapshotError, match="different model"):
        load_snapshot(snap, "cd" * 32, SHAPE)
    with pytest.raises(
        SnapshotError, match=r"shape \[2, 1, 4, 8\] does not match the model's \[2, 1, 8, 8\]"
    ):
        load_snapshot(snap, FP, (2, 1, 8, 8))
    with pytest.raises(SnapshotError, match="dtype float32"):
        load_snapshot(snap, FP, SHAPE, "float16")
    stm, meta = load_snapshot(snap, None)  # inspection without checks
    assert stm.shape == SHAPE and meta["turns"] == 3


@pytest.mark.parametrize(
    "stm, fp, meta, match",
    [
        (np.zeros(SHAPE, np.float64), FP, None, "dtype"),
        (np.zeros((2, 4, 8), np.float32), FP, None, "shape"),
        (np.zeros(SHAPE, np.float32), "", None, "fingerprint"),
        (np.zeros(SHAPE, np.float32), FP, {"x": object()}, "metadata"),
        (np.zeros(SHAPE, np.float32), FP, {"x": float("nan")}, "metadata"),
        (np.zeros(SHAPE, np.float32), FP, [1], "metadata"),
    ],
)
def test_save_rejects_bad_input(tmp_path, stm, fp, meta, match):
    with pytest.raises(SnapshotError, match=match):
        save_snapshot(tmp_path / "s.rxts", stm, fp, meta)
    assert list(tmp_path.iterdir()) == []


def _boom(*args, **kwargs):
    raise OSError("simulated crash")


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_failed_write_keeps_old_file(snap, monkeypatch, target):
    before = snap.read_bytes()
    monkeypatch.setattr(os, target, _boom)
    with pytest.raises(OSError, match="simulated crash"):
        save_snapshot(snap, np.ones(SHAPE, np.float32), FP, {"turns": 4})
    monkeypatch.undo()
    assert snap.read_bytes() == before
    assert [p.name for p in snap.parent.iterdir()] == [snap.name]  # no temp file left behind
    _, meta = load_snapshot(snap, FP, SHAPE)
    assert meta["turns"] == 3


def test_overwrite(snap):
    save_snapshot(snap, np.ones(SHAPE, np.float16), FP, {"turns": 4})
    stm, meta = load_snapshot(snap, FP, SHAPE)
    assert stm.dtype == np.float16 and float(stm.sum()) == np.prod(SHAPE) and meta == {"turns": 4}


# ---------------------------------------------------------------- fuzzing


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | st.binary(max_size=300).map(lambda b: b"RXTSNAP\0" + b))
def test_fuzz_random_bytes(tmp_path, data):
    p = tmp_path / "f.rxts"
    p.write_bytes(data)
    with pytest.raises(SnapshotError):
        load_snapshot(p, FP)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_single_byte_corruption(tmp_path, data):
    p = tmp_path / "g.rxts"
    save_snapshot(p, _stm(), FP, {"turns": 1})
    raw = bytearray(p.read_bytes())
    pos = data.draw(st.integers(0, len(raw) - 1))
    value = data.draw(st.integers(0, 255))
    assume(value != raw[pos])
    raw[pos] = value
    p.write_bytes(bytes(raw))
    with pytest.raises(SnapshotError):
        load_snapshot(p, FP, SHAPE)
