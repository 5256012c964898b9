"""`rxt-edge quantize`'s choices and the option combinations it refuses.

Spelled here so `--help` lists them and a bad combination is refused without importing onnx (nothing is loaded
before the check); tests/test_cli.py and tests/test_quantize_schemes.py check them against
rxt_edge.export.quantize.
"""

from __future__ import annotations

from rxt_edge.contract import GRAPH_NAMES

QUANT_SCHEMES = ("int8", "int4", "int8-dynamic", "int8-block", "int4-block", "fp16")
# The MatMulNBits schemes, which take --block-size and --accuracy-level.
QUANT_BLOCK_SCHEMES = ("int8", "int4", "int8-block", "int4-block")
QUANT_BLOCK_SIZES = (16, 32, 64, 128, 256)
QUANT_PRESETS = ("avx2", "avx512", "avx512_vnni", "arm64")
# One rule for `--preset` (quantize) and `--quant-preset` (bench): avx2 unless told otherwise. A quantized
# package travels to other machines, and avx2 runs correctly on every x86-64 CPU; bench's rows then measure the
# package `rxt-edge quantize` makes by default. Name a preset (bench also takes `auto`) to target a CPU.
DEFAULT_QUANT_PRESET = "avx2"


def refused_combination(
    scheme: str,
    preset: str | None,
    per_tensor: bool,
    graphs: str | None,
    block_size: int | None = None,
    accuracy_level: int | None = None,
) -> str | None:
    """Why quantize refuses these options together (the message for the user), or None."""
    if scheme != "int8-dynamic" and (preset is not None or per_tensor):
        option = "--preset" if preset is not None else "--per-tensor"
        return f"{option} applies to --scheme int8-dynamic only, not to {scheme}"
    if scheme not in QUANT_BLOCK_SCHEMES and (block_size is not None or accuracy_level is not None):
        option = "--block-size" if block_size is not None else "--accuracy-level"
        return f"{option} applies to --scheme {', '.join(QUANT_BLOCK_SCHEMES)} only, not to {scheme}"
    if block_size is not None and block_size not in QUANT_BLOCK_SIZES:
        return f"--block-size {block_size}: choose one of {', '.join(map(str, QUANT_BLOCK_SIZES))}"
    if graphs is not None:
        names = [g.strip() for g in graphs.split(",") if g.strip()]
        unknown = [g for g in names if g not in GRAPH_NAMES]
        if unknown or not names:
            return f"--graphs: {', '.join(unknown) or 'empty'}; choose from {', '.join(GRAPH_NAMES)}"
    return None
