"""A minimal protobuf wire-format reader (and a writer of the two field kinds the runtime emits), so the runtime
can inspect ONNX graphs and sentencepiece models, and write its one helper graph (captured_update's copy), without
the `onnx` or `protobuf` packages (neither is a runtime dependency).

It only splits a message into (field number, wire type, value); the caller knows the schema. It is strict
about structure (truncation, overlong varints, field 0, deprecated group wire types are errors), never
copies length-delimited values (a `memoryview` in gives `memoryview` slices out), and raises only
`ProtobufError`.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5
_MAX_VARINT_BYTES = 10


class ProtobufError(ValueError):
    """The bytes are not a well-formed protobuf message."""


Buffer = bytes | bytearray | memoryview


def varint(buf: Buffer, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at `pos`."""
    result = shift = 0
    end = min(len(buf), pos + _MAX_VARINT_BYTES)
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
    if pos >= len(buf):
        raise ProtobufError("truncated varint")
    raise ProtobufError("varint longer than 10 bytes")


def fields(buf: Buffer) -> Iterator[tuple[int, int, int | Buffer]]:
    """(field number, wire type, value) of each field: an int for varints, a slice of `buf` otherwise."""
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0")
        if wire == VARINT:
            val, pos = varint(buf, pos)
        elif wire == LEN:
            size, pos = varint(buf, pos)
            if size > n - pos:
                raise ProtobufError(f"field {number}: length {size} runs past the end ({n - pos} bytes left)")
            val, pos = buf[pos : pos + size], pos + size
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            if size > n - pos:
                raise ProtobufError(f"field {number}: truncated fixed-width value")
            val, pos = buf[pos : pos + size], pos + size
        else:
            raise ProtobufError(f"field {number}: unsupported wire type {wire}")
        yield number, wire, val


def encode_varint(n: int) -> bytes:
    """The varint encoding of a non-negative `n` (what `varint` reads)."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_field(number: int, value: int | str | bytes) -> bytes:
    """One field: an int as a varint, bytes or UTF-8 text length-delimited (what `fields` yields back)."""
    if isinstance(value, int):
        return encode_varint(number << 3 | VARINT) + encode_varint(value)
    data = value.encode() if isinstance(value, str) else value
    return encode_varint(number << 3 | LEN) + encode_varint(len(data)) + data
