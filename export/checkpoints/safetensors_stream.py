"""safetensors read and written one tensor at a time, so a checkpoint never sits in memory beside the model.

The format (huggingface safetensors): an 8-byte little-endian header length N, N bytes of JSON
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, offsets relative to the
end of the header), then the raw little-endian bytes. `safetensors.safe_open` reads lazily too, but through a
memory map: every page it touches counts in the process's resident set until the map closes, so reading a
6 GB file that way peaks at model + file. Here each tensor is read with plain `readinto` into its own buffer
(the page cache holds the file, not the process), and every header field is checked against the file size
before anything is read, so a truncated or malformed file is a CheckpointError naming it.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch

from .common import CheckpointError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
CODES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100_000_000  # the reference implementation's limit


class LazyTensors(Mapping[str, torch.Tensor]):
    """The tensors of one safetensors file by name; each lookup reads that tensor from disk (a fresh tensor
    the caller owns). `prefix` is put before every name (per-component checkpoints merge several files)."""

    def __init__(self, path: str | Path, prefix: str = "") -> None:
        self.path = Path(path)
        self.prefix = prefix
        self._entries, self._data_start = _read_header(self.path)

    def __getitem__(self, key: str) -> torch.Tensor:
        if not key.startswith(self.prefix) or key[len(self.prefix) :] not in self._entries:
            raise KeyError(key)
        dtype, shape, begin, end = self._entries[key[len(self.prefix) :]]
        out = torch.empty(shape, dtype=dtype)
        buf = memoryview(out.view(-1).view(torch.uint8).numpy()) if out.numel() else memoryview(b"")
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._data_start + begin)
                got = fh.readinto(buf) if end > begin else 0
        except OSError as e:
            raise CheckpointError(f"{self.path}: tensor {key!r} could not be read ({e})") from None
        if got != end - begin:
            raise CheckpointError(f"{self.path}: tensor {key!r} is cut short (file truncated while reading?)")
        return out

    def __iter__(self) -> Iterator[str]:
        return (self.prefix + k for k in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return (
            isinstance(key, str) and key.startswith(self.prefix) and key[len(self.prefix) :] in self._entries
        )

    def shape(self, key: str) -> tuple[int, ...]:
        """The stored shape, without reading the tensor."""
        return tuple(self._entries[key[len(self.prefix) :]][1])


def _read_header(path: Path) -> tuple[dict[str, tuple[torch.dtype, list[int], int, int]], int]:
    """Parse and check the header: dtypes known, shapes non-negative, every byte range inside the file and
    exactly the size its dtype and shape need."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: unreadable safetensors file (shorter than its 8-byte header)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise CheckpointError(
                    f"{path}: unreadable safetensors file (header of {n} bytes in a file of {size})"
                )
            raw = fh.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable safetensors file (header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: unreadable safetensors file (header is not a JSON object)")
    data_len = size - 8 - n
    entries = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPES[e["dtype"]]
            shape = [int(d) for d in e["shape"]]
            begin, end = (int(x) for x in e["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed header entry for tensor {name!r}: {e!r}") from None
        need = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if min(shape, default=0) < 0 or not 0 <= begin <= end or end - begin != need:
            raise CheckpointError(
                f"{path}: tensor {name!r}: data_offsets {[begin, end]} do not fit {e['dtype']} {shape}"
            )
        if end > data_len:
            raise CheckpointError(
                f"{path}: tensor {name!r} ends at byte {end} of a data section of {data_len} (file truncated?)"
            )
        entries[name] = (dtype, shape, begin, end)
    return entries, 8 + n


TensorSpec = tuple[str, Sequence[int], torch.dtype]


def write_safetensors(
    path: str | Path,
    specs: Sequence[TensorSpec],
    make: Callable[[str, tuple[int, ...], torch.dtype], torch.Tensor],
    metadata: dict[str, str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> int:
    """Write `specs` (name, shape, dtype) to `path`, asking `make(name, shape, dtype)` for one tensor at a time:
    the header (all offsets) is known from the shapes, so nothing is held beyond the tensor being written.
    Written to a temp file beside `path` and renamed, so a failure leaves no half file. Returns the size."""
    path = Path(path)
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, shape, dtype in specs:
        n = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned, as the reference writer does
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with tmp.open("wb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw)
            for i, (name, shape, dtype) in enumerate(specs):
                t = make(name, tuple(shape), dtype)
                if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                    raise ValueError(
                        f"{name}: made {t.dtype} {tuple(t.shape)}, the header says {dtype} {shape}"
                    )
                fh.write(memoryview(t.detach().contiguous().view(-1).view(torch.uint8).numpy()))
                del t
                if progress:
                    progress(i + 1, len(specs), name)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return 8 + len(raw) + offset
