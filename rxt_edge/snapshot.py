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

Reading never trusts the file: only a regular file is opened (a FIFO or device never blocks or streams), the
24-byte prefix is checked before anything else is read, and the declared sizes must match the file's size and,
when the caller knows the model, the model's STM; so a large file that is not a snapshot costs 24 bytes.
The STM is stored in float32 or float16 (`cast_stm`: half the bytes; restoring casts to the model's dtype).
The metadata is free-form JSON, except `turns`: the conversation's turn count, an integer >= 0 (checked on
save and on load). The STM must be finite.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
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
_MAX_OTHER_PAYLOAD = 1 << 28  # read at most this much (or the model's STM) before the fingerprint is checked


class SnapshotError(ValueError):
    """The snapshot cannot be restored (not one, damaged, newer format, or for another model/shape)."""


def check_turns(value: Any) -> int:
    """A turn count as snapshots store it (`metadata["turns"]`): an integer >= 0, else SnapshotError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SnapshotError(f"metadata.turns must be an integer >= 0 (a turn count), got {value!r}")
    return value


def cast_stm(stm: np.ndarray, dtype: Any, label: object = "stm") -> np.ndarray:
    """`stm` in `dtype` ("float32" or "float16"): a float16 snapshot is half the bytes, and restoring casts it
    back to the model's dtype. A value beyond float16's range (65504) is refused, never stored as Inf."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise SnapshotError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    stm = np.asarray(stm)
    if stm.dtype.name == name:
        return stm
    out = stm.astype(name)
    if not np.isfinite(out).all():
        peak = float(np.abs(stm.astype(np.float64)).max())
        raise SnapshotError(f"{label}: STM values up to {peak:.4g} do not fit in {name}; keep float32")
    return out


def save_snapshot(
    path: str | os.PathLike[str],
    stm: np.ndarray,
    model_fingerprint: str,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write the STM atomically; `metadata` is free-form JSON (turn count, timestamps, ...)."""
    atomic_write_bytes(path, snapshot_to_bytes(stm, model_fingerprint, metadata))


def load_snapshot(
    path: str | os.PathLike[str],
    expected_fingerprint: str | None,
    expected_shape: tuple[int, ...] | None = None,
    expected_dtype: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(stm, metadata) of a snapshot made for this model; None skips a check (e.g. for inspection)."""
    path = Path(path)
    max_payload = None
    if expected_shape is not None:  # room for another model's small STM, refused below with a better reason
        max_payload = max(math.prod(expected_shape) * 4, _MAX_OTHER_PAYLOAD)
    stm, header = _parse(_read_file(path, max_payload), path)
    return _for_model(stm, header, path, expected_fingerprint, expected_shape, expected_dtype)


def _for_model(
    stm: np.ndarray,
    header: dict[str, Any],
    label: object,
    expected_fingerprint: str | None,
    expected_shape: tuple[int, ...] | None,
    expected_dtype: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(stm, metadata) once the snapshot is known to be this model's: fingerprint, STM shape and dtype."""
    fp = header["fingerprint"]
    if expected_fingerprint is not None and fp != expected_fingerprint:
        raise SnapshotError(
            f"{label}: snapshot belongs to a different model (fingerprint {fp[:16]}..., this model "
            f"{expected_fingerprint[:16]}...); it cannot be restored into this one"
        )
    if expected_shape is not None and tuple(stm.shape) != tuple(expected_shape):
        raise SnapshotError(
            f"{label}: STM shape {list(stm.shape)} does not match the model's {list(expected_shape)}"
        )
    if expected_dtype is not None and stm.dtype.name != expected_dtype:
        raise SnapshotError(
            f"{label}: STM dtype {stm.dtype.name} does not match the expected {expected_dtype}"
        )
    return stm, header["metadata"]


def _read_file(path: Path, max_payload: int | None) -> bytes:
    """The file's bytes, read only if it is a regular file whose prefix says it is a snapshot of the size it
    has (and, with `max_payload`, no larger than the model's STM can be); otherwise the 24-byte prefix is all
    that was read, and what `_parse` makes of it is the error."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise SnapshotError(f"{path}: cannot read snapshot: {e.strerror or e}") from e
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SnapshotError(f"{path}: not a regular file; a snapshot is a file written by save()")
        try:
            prefix = f.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size or not prefix.startswith(MAGIC):
                return prefix
            _, version, header_len, payload_len = _PREFIX.unpack(prefix)
            if not 1 <= version <= SNAPSHOT_VERSION:
                return prefix
            if header_len > _MAX_HEADER or (max_payload is not None and payload_len > max_payload):
                raise SnapshotError(
                    f"{path}: snapshot declares {header_len} header and {payload_len} payload bytes, more than "
                    "this model's STM can hold (corrupted, or for a much larger model)"
                )
            expected = _PREFIX.size + header_len + payload_len + _DIGEST
            if info.st_size < expected:
                raise SnapshotError(f"{path}: snapshot is truncated ({info.st_size} of {expected} bytes)")
            if info.st_size > expected:
                extra = info.st_size - expected
                raise SnapshotError(f"{path}: snapshot is corrupted ({extra} unexpected trailing bytes)")
            return prefix + f.read()
        except OSError as e:
            raise SnapshotError(f"{path}: cannot read snapshot: {e.strerror or e}") from e


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
    if not np.isfinite(stm).all():
        raise SnapshotError(f"{path}: the snapshot's STM contains NaN or Inf")
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
    if "turns" in h["metadata"]:
        try:
            check_turns(h["metadata"]["turns"])
        except SnapshotError as e:
            raise SnapshotError(f"{bad}: {e}") from None
    return h


# --- bytes, for state stores (apps/serve) -------------------------------------------------------------------
# The same format and checks as the files above, without the file: a server keeps STMs in SQLite or Redis.


def snapshot_to_bytes(
    stm: np.ndarray, model_fingerprint: str, metadata: dict[str, Any] | None = None
) -> bytes:
    """The snapshot file's exact bytes for `stm` (fingerprint, dtype, shape, metadata, sha256)."""
    stm = np.asarray(stm)
    if stm.dtype.name not in DTYPES:
        raise SnapshotError(f"stm: dtype must be one of {list(DTYPES)}, got {stm.dtype}")
    if stm.ndim != 4:
        raise SnapshotError(f"stm: expected [layers, batch, slots, dim], got shape {list(stm.shape)}")
    if not isinstance(model_fingerprint, str) or not model_fingerprint:
        raise SnapshotError("model_fingerprint must be a non-empty string")
    header = {
        "fingerprint": model_fingerprint,
        "dtype": stm.dtype.name,
        "shape": [int(n) for n in stm.shape],
        "metadata": {} if metadata is None else metadata,
    }
    if not isinstance(header["metadata"], dict):
        raise SnapshotError(f"metadata must be a dict, got {type(metadata).__name__}")
    if "turns" in header["metadata"]:
        check_turns(header["metadata"]["turns"])
    if not np.isfinite(stm).all():
        raise SnapshotError("stm contains NaN or Inf; it would be refused on restore")
    try:
        header_bytes = json.dumps(header, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise SnapshotError(f"metadata must be plain JSON: {e}") from e
    payload = np.ascontiguousarray(stm, dtype=stm.dtype.newbyteorder("<")).tobytes()
    body = _PREFIX.pack(MAGIC, SNAPSHOT_VERSION, len(header_bytes), len(payload)) + header_bytes + payload
    return body + hashlib.sha256(body).digest()


def snapshot_from_bytes(
    data: bytes,
    expected_fingerprint: str | None,
    expected_shape: tuple[int, ...] | None = None,
    label: str = "snapshot",
) -> tuple[np.ndarray, dict[str, Any]]:
    """(stm, metadata) from `snapshot_to_bytes` output, with every check of `load_snapshot`.

    `label` names the state in error messages (a store key, never a path)."""
    stm, header = _parse(bytes(data), label)  # _parse only formats its second argument into messages
    return _for_model(stm, header, label, expected_fingerprint, expected_shape)
