"""The MatMulNBits settings of `rxt-edge quantize` (`int8`, `int4`, `int8-block`, `int4-block`) and their planning.

Pure onnx: which settings each scheme has (measured, docs/quantization.md "int8 and int4"), how overrides are
checked, and which quantizer passes a graph needs (onnxruntime's `MatMulNBitsQuantizer` takes one bit width and
one block size per pass). `export/quantize.py` runs the passes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import onnx

BLOCK_SIZES = (16, 32, 64, 128, 256)  # MatMulNBits: a power of two >= 16
ACCURACY_LEVELS = (0, 1, 2, 3, 4)  # 0/1: fp32 compute, 2: fp16, 3: bf16, 4: int8 activations


@dataclass(frozen=True)
class BlockConfig:
    """Weight-only `MatMulNBits` settings: bits, block size along K, accuracy level, symmetry, head bits.

    `accuracy_level=4` makes the CPU kernel quantize the activations to int8 per block and run integer
    dot products; lower levels dequantize the weights to fp32 (or fp16/bf16) on every call, many times slower
    on CPU (docs/quantization.md). `head_bits` (None: `bits`) lets an int4 body keep an int8 head. A matrix whose
    K is shorter than `block_size` gets the largest power of two <= K instead (no padded blocks).
    """

    bits: int
    block_size: int = 32
    accuracy_level: int = 4
    symmetric: bool = True
    head_bits: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "block_size": self.block_size,
            "accuracy_level": self.accuracy_level,
            "symmetric": self.symmetric,
            "head_bits": self.head_bits or self.bits,
        }


# `int8` and `int4` are the measured defaults (docs/quantization.md, "int8 and int4"); `int8-block` /
# `int4-block` keep their first meaning (block 32), the settings onnxruntime-genai's model builder uses on CPU.
BLOCK_SCHEMES = {
    "int8": BlockConfig(bits=8, block_size=256, accuracy_level=4),
    "int4": BlockConfig(bits=4, block_size=32, accuracy_level=4),
    "int8-block": BlockConfig(bits=8, block_size=32, accuracy_level=4),
    "int4-block": BlockConfig(bits=4, block_size=32, accuracy_level=4),
}


def block_config(
    scheme: str,
    block_size: int | None = None,
    accuracy_level: int | None = None,
    symmetric: bool | None = None,
    head_bits: int | None = None,
) -> BlockConfig:
    """The scheme's settings with the given overrides; ValueError names a setting onnxruntime cannot take."""
    base = BLOCK_SCHEMES[scheme]
    over = {"block_size": block_size, "accuracy_level": accuracy_level, "symmetric": symmetric}
    cfg = replace(base, **{k: v for k, v in over.items() if v is not None})
    if head_bits is not None:
        cfg = replace(cfg, head_bits=head_bits)
    if cfg.block_size not in BLOCK_SIZES:
        raise ValueError(f"block size: {cfg.block_size} is not supported; choose one of {list(BLOCK_SIZES)}")
    if cfg.accuracy_level not in ACCURACY_LEVELS:
        raise ValueError(
            f"accuracy level: {cfg.accuracy_level} is not supported; choose one of {list(ACCURACY_LEVELS)}"
        )
    if cfg.head_bits not in (None, 4, 8):
        raise ValueError(f"head bits: {cfg.head_bits} is not supported; choose 4 or 8")
    return cfg


def block_widths(model: onnx.ModelProto, names: Iterable[str], block_size: int) -> dict[str, int]:
    """Each named MatMul/Gather's block: `block_size`, or the largest power of two <= its K where K is shorter.

    A block longer than K is padded: it stores and multiplies zeros (an int8 block of 256 on K = 32 makes the
    weight bigger than fp32)."""
    names = set(names)
    inits = {t.name: t for t in model.graph.initializer}
    widths = {}
    for node in model.graph.node:
        if node.name in names:
            gather = node.op_type == "Gather"
            w = inits[node.input[0] if gather else node.input[1]]
            k = int(w.dims[1] if gather else w.dims[0])  # the quantized axis: the embedding's dim, or K
            widths[node.name] = min(block_size, max(16, 1 << (k.bit_length() - 1)))
    return widths


def plan_passes(
    block: BlockConfig, take: list[str], head: Iterable[str], widths: dict[str, int]
) -> list[tuple[int, int, list[str]]]:
    """(bits, block size, nodes) per quantizer pass: the body in `block.bits`, the head in `block.head_bits`."""
    head = set(head)
    head_bits = block.head_bits or block.bits
    split = head_bits != block.bits
    groups = [(block.bits, [n for n in take if not (split and n in head)])]
    if split:
        groups.append((head_bits, [n for n in take if n in head]))
    return [
        (bits, size, [n for n in nodes if widths[n] == size])
        for bits, nodes in groups
        for size in sorted({widths[n] for n in nodes})
    ]
