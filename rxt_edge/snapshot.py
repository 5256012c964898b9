"""Conversation snapshots: the short-term memory (STM) saved to disk, so a chat resumes where it left off.

An RxT conversation's whole state is its STM (`[layers, 1, slots, dim]`), so a snapshot is that array plus
what is needed to refuse a wrong or damaged one: the model fingerprint (`Manifest.fingerprint()`), a
format version and a sha256 over everything. No pickle: a fixed binary layout (little-endian):

    0   magic        8 bytes  b"RXTSNAP\\0"
    8   version      u32      SNAPSHOT_VERSION (bytes 0-11 stay this way in every future version)
    12  header_len   u32      length of the JSON header
    16  payload_len  u64      length of the raw array bytes
    24  header       JSON     {"fingerprint", "dtype", "shape", "metadata"}
    ..  payload      raw      the STM, C order, little-endian float32 or float16
    ..  checksum     32 bytes sha256 of every byte before it

Writes are atomic (temp file in the same directory, fsync, os.replace): a crash leaves the old file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_write_bytes

MAGIC = b"RXTSNAP\0"
SNAPSHOT_VERSION = 1
DTYPES = ("float32", "float16")
_PREFIX = struct.Struct("<8sIIQ")  # magic, version, header_len, payload_len
_DIGEST = 32
_MAX_HEADER = 1 << 24  # 16 MiB of JSON is far beyond any real metadata


class SnapshotError(ValueError):
    """The snapshot cannot be restored (not one, damaged, newer format, or for another model/shape)."""


def save_snapshot(
    path: str | os.PathLike[str],
    stm: np.ndarray,
    model_fingerprint: str,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write the STM atomically; `metadata` is free-form JSON (turn count, timestamps, ...)."""
    stm = np.asarray(stm)
    if stm.dtype.name not in DTYPES:
        raise SnapshotError(f"stm: dtype must be one of {list(DTYPES)}, got {stm.dtype}")
    if stm.ndim != 4:
        raise SnapshotError(f"stm: expected [layers, batch, slots, dim], got shape {list(stm.shape)}")
    if not isinstance(model_fingerprint, str) or not model_fingerprint:
        raise SnapshotError("model_fingerprint must be a non-empty string")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise SnapshotError(f"metadata must be a dict, got {type(metadata).__name__}")
    header = {
        "fingerprint": model_fingerprint,
        "dtype": stm.dtype.name,
        "shape": [int(n) for n in stm.shape],
        "metadata": metadata,
    }
    try:
        header_bytes = json.dumps(header, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise SnapshotError(f"metadata must be plain JSON: {e}") from e
    payload = np.ascontiguousarray(stm, dtype=stm.dtype.newbyteorder("<")).tobytes()
    body = _PREFIX.pack(MAGIC, SNAPSHOT_VERSION, len(header_bytes), len(payload)) + header_bytes + payload
    atomic_write_bytes(path, body + hashlib.sha256(body).digest())


def load_snapshot(
    path: str | os.PathLike[str],
    expected_fingerprint: str | None,
    expected_shape: tuple[int, ...] | None = None,
    expected_dtype: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(stm, metadata) of a snapshot made for this model; None skips a check (e.g. for inspection)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SnapshotError(f"{path}: cannot read snapshot: {e.strerror or e}") from e
    stm, header = _parse(data, path)
    fp = header["fingerprint"]
    if expected_fingerprint is not None and fp != expected_fingerprint:
        raise SnapshotError(
            f"{path}: snapshot belongs to a different model (fingerprint {fp[:16]}..., this model "
            f"{expected_fingerprint[:16]}...); it cannot be restored into this one"
        )
    if expected_shape is not None and tuple(stm.shape) != tuple(expected_shape):
        raise SnapshotError(
            f"{path}: STM shape {list(stm.shape)} does not match the model's {list(expected_shape)}"
        )
    if expected_dtype is not None and stm.dtype.name != expected_dtype:
        raise SnapshotError(
            f"{path}: STM dtype {stm.dtype.name} does not match the expected {expected_dtype}"
        )
    return stm, header["metadata"]


def _parse(data: bytes, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    if len(data) < len(MAGIC):
        if MAGIC.startswith(data):
            raise SnapshotError(f"{path}: snapshot is truncated ({len(data)} bytes)")
        raise SnapshotError(f"{path}: not an rxt-edge snapshot (bad magic bytes)")
    if not data.startswith(MAGIC):
        raise SnapshotError(f"{path}: not an rxt-edge snapshot (bad magic bytes)")
    if len(data) < _PREFIX.size:
        raise SnapshotError(f"{path}: snapshot is truncated ({len(data)} bytes)")
    _, version, header_len, payload_len = _PREFIX.unpack_from(data)
    if version > SNAPSHOT_VERSION:
        raise SnapshotError(
            f"{path}: snapshot format version {version} was made by a newer rxt-edge (this one reads up to "
            f"{SNAPSHOT_VERSION}); upgrade rxt-edge"
        )
    if version < 1:
        raise SnapshotError(f"{path}: invalid snapshot format version {version} (corrupted file)")
    expected = _PREFIX.size + header_len + payload_len + _DIGEST
    if len(data) < expected:
        raise SnapshotError(f"{path}: snapshot is truncated ({len(data)} of {expected} bytes)")
    if len(data) > expected:
        raise SnapshotError(
            f"{path}: snapshot is corrupted ({len(data) - expected} unexpected trailing bytes)"
        )
    body = data[:-_DIGEST]
    if hashlib.sha256(body).digest() != data[-_DIGEST:]:
        raise SnapshotError(f"{path}: snapshot checksum mismatch: the file is corrupted")
    # From here the bytes are exactly what a writer produced; still validate (a buggy or hostile writer).
    header = _header(data[_PREFIX.size : _PREFIX.size + header_len], header_len, path)
    dtype = np.dtype(header["dtype"]).newbyteorder("<")
    shape = tuple(header["shape"])
    if math.prod(shape) * dtype.itemsize != payload_len:
        raise SnapshotError(f"{path}: snapshot payload size {payload_len} does not match shape {list(shape)}")
    payload = body[_PREFIX.size + header_len :]
    stm = np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return stm, header


def _header(raw: bytes, header_len: int, path: Path) -> dict[str, Any]:
    bad = f"{path}: snapshot header is invalid"
    if header_len > _MAX_HEADER:
        raise SnapshotError(f"{bad} (too large)")
    try:
        h = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SnapshotError(f"{bad}: {e}") from e
    if not isinstance(h, dict):
        raise SnapshotError(f"{bad}: not a JSON object")
    if not isinstance(h.get("fingerprint"), str):
        raise SnapshotError(f"{bad}: fingerprint")
    if h.get("dtype") not in DTYPES:
        raise SnapshotError(f"{bad}: dtype {h.get('dtype')!r}")
    shape = h.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise SnapshotError(f"{bad}: shape {shape!r}")
    if not isinstance(h.get("metadata"), dict):
        raise SnapshotError(f"{bad}: metadata")
    return h
