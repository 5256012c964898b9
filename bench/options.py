"""What one `rxt-edge bench` run is asked to measure, checked before anything is built.

Defaults that count turns follow the request: `--turns 4` also shortens the speed and memory-update runs, so a
quick look at a tiny model takes seconds, not a minute of defaults sized for a 64-turn curve.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA = "rxt-edge-bench/1"
FIRST_PLAIN_ID = 16  # query ids are drawn above the special-token range
WARMUP_TURN = 1_000_000  # query index of warm-up turns (never a measured turn's)
# MatMulNBits 8-bit: `rxt-edge quantize`'s default, genai's int8 layout (docs/quantization.md)
DEFAULT_QUANT_SCHEME = "int8"
DEFAULT_UPDATE_TURNS = 16  # per typing delay, when --turns allows
DEFAULT_SPEED_TURNS = 8  # per package row, when --turns allows


class BenchError(RuntimeError):
    """The benchmark cannot run as asked; the message says what to change."""


@dataclass
class BenchOptions:
    model_dir: Path | None = None  # an existing package, or
    config: str | None = None  # a preset of rxt_edge.export.presets (needs torch)
    provider: str = "cpu"
    threads: int | None = None  # onnxruntime intra-op threads = torch threads; None: all CPUs
    turns: int = 64
    query_tokens: int = 32
    answer_tokens: int = 32
    typing_delays: tuple[float, ...] = (0.0, 0.05, 0.5)
    update_turns: int | None = None  # None: min(16, turns), at least 2
    speed_turns: int | None = None  # None: min(8, turns)
    baseline: str = "reread"  # "reread" | "cached" | "both" | "none"
    reference: bool = True  # PyTorch eager rows (ours, and rxlm where installed)
    peer: bool = True  # onnxruntime-genai rows: a same-dims Llama (bench/peer.py), where importable
    quantize: str | None = DEFAULT_QUANT_SCHEME  # a scheme of rxt_edge.export.quantize, or None
    quant_preset: str | None = "auto"  # int8-dynamic only; "auto": from this CPU's instruction set
    quant_per_tensor: bool = False  # int8-dynamic only: one weight scale per matrix instead of per channel
    # the memory K/V form (contract.MEMORY_KVS); None: the quantizer's default (int8 where the K/V are large)
    quant_memory_kv: str | None = None
    workdir: Path | None = None  # keeps exported packages between runs; default: a temporary directory
    seed: int = 0
    window: int = 5  # turns averaged (median) at each end for the robust latency ratio
    prefill_chunk: int = 512
    bandwidth_mib: int = 1024

    def __post_init__(self) -> None:
        # scaled to the request: a short curve asks for a quick run
        if self.update_turns is None:
            self.update_turns = max(2, min(DEFAULT_UPDATE_TURNS, self.turns))
        if self.speed_turns is None:
            self.speed_turns = max(1, min(DEFAULT_SPEED_TURNS, self.turns))

    def check(self) -> None:
        if (self.model_dir is None) == (self.config is None):
            raise BenchError("give either a MODEL_DIR or --config NAME (not both)")
        for name in ("turns", "query_tokens", "answer_tokens", "update_turns", "speed_turns", "window"):
            if getattr(self, name) < 1:
                raise BenchError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.answer_tokens < 2:
            raise BenchError(
                "answer_tokens must be at least 2 (decode time is measured after the first token)"
            )
        if self.baseline not in ("reread", "cached", "both", "none"):
            raise BenchError(f"baseline must be reread, cached, both or none, got {self.baseline!r}")
        if any(d < 0 for d in self.typing_delays):
            raise BenchError(f"typing delays must be >= 0 seconds, got {list(self.typing_delays)}")
        if self.threads is not None and self.threads < 1:
            raise BenchError(f"threads must be a positive integer, got {self.threads}")
        q = quantize_module()
        unknown = [s for s in quant_schemes(self) if q is not None and s not in q.SCHEMES]
        if unknown:
            raise BenchError(
                f"--quantize: unknown scheme(s) {unknown}; choose from {list(q.SCHEMES)} or none"
            )

    @property
    def thread_count(self) -> int:
        return self.threads or os.cpu_count() or 1


def query_ids(turn: int, n: int, vocab: int, seed: int) -> list[int]:
    """The scripted user's query of one turn: n plain token ids, the same for RxT and the baseline."""
    rng = np.random.default_rng([seed, turn])
    return rng.integers(FIRST_PLAIN_ID, vocab, n).tolist()


def quantize_module():
    """`rxt_edge.export.quantize`, or None where it cannot be imported (onnx missing)."""
    try:
        from rxt_edge.export import quantize
    except ImportError:
        return None
    return quantize if hasattr(quantize, "quantize_package") else None


def cpu_preset() -> str | None:
    """The int8-dynamic preset for this CPU (rxt_edge.export.quantize.DYNAMIC_PRESETS names), or None if unknown."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next(
        (set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set()
    )
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else None


def quant_schemes(opts: BenchOptions) -> list[str]:
    """`--quantize int8-dynamic,int4-block` -> one quantized row per scheme, in that order."""
    return [s.strip() for s in (opts.quantize or "").split(",") if s.strip() and s.strip() != "none"]


def quant_preset(opts: BenchOptions, scheme: str = "int8-dynamic") -> str | None:
    if scheme != "int8-dynamic" or "int8-dynamic" not in quant_schemes(opts):
        return None
    return cpu_preset() if opts.quant_preset == "auto" else opts.quant_preset
