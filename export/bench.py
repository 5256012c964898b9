"""`rxt-edge bench`: the measurements behind RxT's promise, on random-weight presets or on any model package.

1. Per-turn user-facing latency (time to first token, full answer time) over turns 1..N of the RxT runtime,
   against a stateless decoder-only baseline of the same shape that re-reads the whole conversation every turn
   (export/baseline.py), both through onnxruntime with IOBinding and an in-place KV cache.
2. Speed against PyTorch eager on the same weights and thread count: our canonical torch model, and rxlm's
   cached decode path where rxlm is installed.
3. The memory update off the user's path: its duration, and how often the next turn had to wait for it after
   a scripted user typing delay.
4. Peak RSS (and device memory on CUDA), package size, fp32 against a quantized package, and the
   memory-bandwidth floor of decoding (weight bytes read per token over a measured copy bandwidth).

Answers have a fixed length ([EOS] is never chosen), so turns are comparable. Every onnxruntime measurement runs
in a fresh child process (`python -m rxt_edge.export.bench --child`) that never imports torch: it gets its own
peak RSS, and torch's thread pool cannot compete with onnxruntime's. This module imports torch only inside the
functions that need it, so benchmarking a package works without torch (the torch parts are then skipped with a
note). The JSON layout is documented in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "rxt-edge-bench/1"
FIRST_PLAIN_ID = 16  # query ids are drawn above the special-token range
WARMUP_TURN = 1_000_000  # query index of warm-up turns (never a measured turn's)
FLAT_RATIO = 1.15  # target: RxT turn-N / turn-1 latency
DECODE_SPEEDUP_TARGETS = {"alpha-micro": 5.0, "alpha-mini": 3.0}  # vs PyTorch eager, CPU
FLOOR_FACTOR = 2.0  # target: Mini INT8 decode within 2x of the bandwidth floor
FLOOR_CONFIGS = ("alpha-mini",)
DEFAULT_QUANT_SCHEME = "int8-dynamic"


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
    update_turns: int = 16
    speed_turns: int = 8
    baseline: str = "reread"  # "reread" | "cached" | "both" | "none"
    reference: bool = True  # PyTorch eager rows (ours, and rxlm where installed)
    quantize: str | None = DEFAULT_QUANT_SCHEME  # a scheme of rxt_edge.export.quantize, or None
    quant_preset: str | None = "auto"  # int8-dynamic only; "auto": from this CPU's instruction set
    quant_per_tensor: bool = False  # int8-dynamic only: one weight scale per matrix instead of per channel
    workdir: Path | None = None  # keeps exported packages between runs; default: a temporary directory
    seed: int = 0
    window: int = 5  # turns averaged (median) at each end for the robust latency ratio
    prefill_chunk: int = 512
    bandwidth_mib: int = 1024

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
        q = _quantize_module()
        unknown = [s for s in quant_schemes(self) if q is not None and s not in q.SCHEMES]
        if unknown:
            raise BenchError(
                f"--quantize: unknown scheme(s) {unknown}; choose from {list(q.SCHEMES)} or none"
            )

    @property
    def thread_count(self) -> int:
        return self.threads or os.cpu_count() or 1


# =============================================================================================== helpers
def query_ids(turn: int, n: int, vocab: int, seed: int) -> list[int]:
    """The scripted user's query of one turn: n plain token ids, the same for RxT and the baseline."""
    rng = np.random.default_rng([seed, turn])
    return rng.integers(FIRST_PLAIN_ID, vocab, n).tolist()


def write_bench_tokenizer(path: str | Path, vocab_size: int = 300) -> Path:
    """A small byte-level BPE `tokenizer.json` for random-weight packages (which need a tokenizer file).

    Token-level benchmarks never use it; it makes the package complete and loadable by every tool."""
    text = [
        "The quick brown fox jumps over the lazy dog near the river bank.",
        "A reactive model keeps a fixed-size memory between the turns of a conversation.",
        "Benchmarks measure latency, throughput and memory on the machine at hand.",
    ] * 10
    from .tokenizer_files import write_byte_level_tokenizer

    return write_byte_level_tokenizer(path, text, vocab_size)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else None


def curve_summary(ttft: list[float], total: list[float], window: int) -> dict[str, Any]:
    """Turn-N / turn-1 ratios of a latency curve, raw and robust (median of `window` turns at each end)."""
    w = max(1, min(window, len(total) // 2 or 1))
    return {
        "turn1_total_s": total[0],
        "turnN_total_s": total[-1],
        "turn1_ttft_s": ttft[0],
        "turnN_ttft_s": ttft[-1],
        "ratio_total": _ratio(total[-1], total[0]),
        "ratio_ttft": _ratio(ttft[-1], ttft[0]),
        "window": w,
        "ratio_total_window": _ratio(_median(total[-w:]), _median(total[:w])),
        "ratio_ttft_window": _ratio(_median(ttft[-w:]), _median(ttft[:w])),
    }


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, OS and library versions (what docs/benchmarks.md needs to name the machine)."""
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "ram_gib": ram,
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def measure_bandwidth(threads: int, mib: int = 1024, repeats: int = 5) -> dict[str, Any]:
    """Memory bandwidth, STREAM-'Copy' style: `threads` threads copy disjoint slices of a `mib` MiB float32 array
    into another with numpy (which releases the GIL); bytes moved = 2 x array size (read + write, STREAM's
    convention, write-allocate traffic not counted); best of `repeats`. Arrays are far larger than the caches."""
    n = mib * 1024 * 1024 // 4
    a = np.ones(n, np.float32)
    b = np.zeros(n, np.float32)  # both touched: no page faults inside the timed copies
    bounds = [(i * n // threads, (i + 1) * n // threads) for i in range(threads)]
    best = math.inf
    for _ in range(repeats):
        workers = [threading.Thread(target=np.copyto, args=(b[s:e], a[s:e])) for s, e in bounds]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - t0)
    return {
        "gb_per_s": 2 * a.nbytes / best / 1e9,
        "method": f"numpy copy of a {mib} MiB float32 array by {threads} thread(s), 2 x bytes per copy "
        f"(STREAM Copy convention), best of {repeats}",
    }


def decoder_bytes_per_token(package_dir: Path) -> dict[str, Any]:
    """Bytes of weights the decoder graph reads per generated token: every initializer in its stored dtype,
    except embedding tables (initializers read only by Gather), of which one row is read. Needs `onnx`."""
    import onnx

    from rxt_edge.manifest import load_manifest

    manifest = load_manifest(package_dir)
    path = Path(package_dir) / manifest.graphs["decoder"].file
    model = onnx.load(str(path), load_external_data=False)
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append(
                node.op_type if (node.op_type != "Gather" or i == 0) else "x"
            )
    total = embed = 0
    for init in model.graph.initializer:
        item = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
        dims = list(init.dims)
        numel = int(np.prod(dims)) if dims else 1
        ops = consumers.get(init.name, [])
        if ops and all(op == "Gather" for op in ops) and len(dims) == 2:
            embed += numel * item
            total += dims[1] * item
        else:
            total += numel * item
    d = manifest.model
    fbytes = 2 if manifest.graphs["decoder"].inputs[1].dtype == "float16" else 4
    stm_kv = 2 * d.memory_layers * d.cross_kv_heads * d.stm_slots * d.head_dim * fbytes
    return {"weights": total, "embedding_tables": embed, "stm_kv": stm_kv, "dtype_bytes": fbytes}


# =============================================================================================== child runs
def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024**2 if sys.platform == "darwin" else peak / 1024
    except (ImportError, OSError):
        return None


def _device_memory_mb(provider: str) -> dict[str, Any] | None:
    """GPU memory held by this process (nvidia-smi), on CUDA only; None elsewhere or when unavailable."""
    if provider != "cuda":
        return None
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"mb": None, "method": "nvidia-smi not found"}
    try:
        out = subprocess.run(
            [exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return {"mb": None, "method": f"nvidia-smi failed: {e}"}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(os.getpid()):
            return {"mb": float(parts[1]), "method": "nvidia-smi used_memory of this process"}
    used = subprocess.run(
        [exe, "--query-gpu=memory.used", "--format=csv,noheader,nounits"], capture_output=True, text=True
    ).stdout.split()
    return {
        "mb": float(used[0]) if used else None,
        "method": "nvidia-smi memory.used of GPU 0 (this process not listed: other processes may be included)",
    }


def _progress_line(done: int, total: int) -> None:
    print(f"P {done} {total}", flush=True)


def _child_rxt_turns(job: dict[str, Any]) -> dict[str, Any]:
    """Turns of the RxT runtime on a package with fixed-length answers.

    typing_delay None: wait for the memory update between turns, outside the timed region (pure user-facing
    latency); a number: sleep that long after each answer (the user reading and typing), then start the next turn
    whether or not the update is done (the turn itself waits for it, and that wait is part of its latency)."""
    import numpy as np

    from rxt_edge.conversation import Conversation
    from rxt_edge.session import RxTSession

    class FixedLength(Conversation):
        """Never stops at [EOS]: the logits row of every step gets -inf at [EOS] before sampling."""

        def _step(self, tokens, past):  # the runtime's own decoder step, plus one write
            logits = super()._step(tokens, past)
            logits[eos] = -np.inf
            return logits

    session = RxTSession.load(job["package"], provider=job["provider"], threads=job["threads"])
    eos = int(session.package.manifest.special_tokens["eos"])
    vocab = session.dims.vocab_size
    rss_loaded = _peak_rss_mb()
    n, q, a, delay = job["turns"], job["query_tokens"], job["answer_tokens"], job["typing_delay"]
    for w in range(job.get("warmup", 1)):  # first runs allocate and tune kernels
        conv = FixedLength(session)
        conv.interact_ids(
            query_ids(WARMUP_TURN + w, q, vocab, job["seed"]), max_new_tokens=a, temperature=0.0
        )
        conv.wait_memory()
    conv = FixedLength(session)
    turns = []
    for t in range(n):
        answer = conv.interact_ids(query_ids(t, q, vocab, job["seed"]), max_new_tokens=a, temperature=0.0)
        s = conv.last_stats
        if turns:
            turns[-1]["update_s"] = conv.last_update_s  # this turn began after the previous update finished
        turns.append(
            {
                "prompt_tokens": s.prompt_tokens,
                "answer_tokens": len(answer),
                "ttft_s": s.time_to_first_token_s,
                "total_s": s.total_s,
                "update_wait_s": s.update_wait_s,
                "update_was_running": bool(s.update_was_running),
                "update_s": None,
            }
        )
        if delay is None:
            conv.wait_memory()
        else:
            time.sleep(delay)
        _progress_line(t + 1, n)
    conv.wait_memory()
    turns[-1]["update_s"] = conv.last_update_s
    session.close()
    return {
        "turns": turns,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_after_load_mb": rss_loaded,
        "device_memory": _device_memory_mb(job["provider"]),
        "torch_imported": "torch" in sys.modules,
    }


def _child_baseline_turns(job: dict[str, Any]) -> dict[str, Any]:
    from .baseline import StatelessChat

    n, q, a = job["turns"], job["query_tokens"], job["answer_tokens"]
    per_turn = q + 3 + a + 1  # [BOS][Q] query [A] answer [EOS]
    kw = {
        "provider": job["provider"],
        "threads": job["threads"],
        "reuse_cache": job["reuse_cache"],
        "prefill_chunk": job["prefill_chunk"],
    }
    warm = StatelessChat(job["baseline_dir"], 4 * per_turn, **kw)
    special = job["special"]
    vocab = warm.dims.vocab_size

    def prompt(t: int) -> list[int]:
        return [special["bos"], special["query"], *query_ids(t, q, vocab, job["seed"]), special["answer"]]

    for w in range(job.get("warmup", 1)):
        warm.turn(prompt(WARMUP_TURN + w), a)
    del warm
    rss_loaded = _peak_rss_mb()
    chat = StatelessChat(job["baseline_dir"], n * per_turn + 8, **kw)
    turns = []
    for t in range(n):
        r = chat.turn(prompt(t), a)
        turns.append(
            {
                "context_tokens": r.context_tokens,
                "prefilled_tokens": r.prefilled_tokens,
                "answer_tokens": len(r.answer),
                "ttft_s": r.time_to_first_token_s,
                "total_s": r.total_s,
            }
        )
        _progress_line(t + 1, n)
    return {
        "turns": turns,
        "params": chat.params,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_after_load_mb": rss_loaded,
        "device_memory": _device_memory_mb(job["provider"]),
        "torch_imported": "torch" in sys.modules,
    }


CHILD_JOBS = {"rxt_turns": _child_rxt_turns, "baseline_turns": _child_baseline_turns}


def child_main() -> None:
    """Entry of `python -m rxt_edge.export.bench --child`: one JSON job on stdin, `R <json>` on stdout."""
    job = json.loads(sys.stdin.read())
    result = CHILD_JOBS[job["kind"]](job)
    print("R " + json.dumps(result), flush=True)


def run_child(job: dict[str, Any], on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run one measurement job in a fresh interpreter (no torch, own peak RSS)."""
    with tempfile.TemporaryFile("w+") as errf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rxt_edge.export.bench", "--child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errf,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(job))
        proc.stdin.close()
        result = None
        for line in proc.stdout:
            if line.startswith("P ") and on_progress:
                done, total = line.split()[1:3]
                on_progress(int(done), int(total))
            elif line.startswith("R "):
                result = json.loads(line[2:])
        rc = proc.wait()
        if rc != 0 or result is None:
            errf.seek(0)
            tail = errf.read()[-3000:]
            raise BenchError(f"the {job['kind']} measurement failed (exit code {rc}):\n{tail}")
    result["load_average_after"] = load_average()  # other work on the machine skews timings: recorded
    return result


# =============================================================================================== torch side
def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


@contextmanager
def _torch_threads(torch, n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _speed_summary(prompt: list[float], decode: list[float], update: list[float]) -> dict[str, float]:
    """Medians over the measured turns, and the best turn (closest to the uncontended cost on a busy machine)."""
    return {
        "prompt_ms": 1e3 * _median(prompt),
        "decode_ms_per_token": 1e3 * _median(decode),
        "memory_update_ms": 1e3 * _median(update),
        "prompt_ms_best": 1e3 * min(prompt, default=math.nan),
        "decode_ms_per_token_best": 1e3 * min(decode, default=math.nan),
        "memory_update_ms_best": 1e3 * min(update, default=math.nan),
    }


def _torch_device(torch, provider: str) -> str:
    """Where the eager rows run: the GPU when the runtime is benchmarked on CUDA and torch can use it."""
    return "cuda" if provider == "cuda" and torch.cuda.is_available() else "cpu"


def torch_eager_speed(model, opts: BenchOptions) -> dict[str, Any]:
    """Our canonical torch model, eager, on the runtime's schedule: memory K/V projected once per turn at the
    end of the memory update; prompt in one call; one call per generated token (KV cache concatenated)."""
    import torch

    device = _torch_device(torch, opts.provider)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model = model.to(device)
    sp = model.cfg.special_tokens
    eos, vocab = sp["eos"], model.cfg.vocab_size
    q, a = opts.query_tokens, opts.answer_tokens
    prompt_t, decode_t, update_t = [], [], []
    with torch.inference_mode(), _torch_threads(torch, opts.thread_count):
        stm = model.initial_stm.clone()
        mem_k, mem_v = model.memory_kv(stm)
        for t in range(-1, opts.speed_turns):  # turn -1: warm-up
            query = query_ids(WARMUP_TURN if t < 0 else t, q, vocab, opts.seed)
            prompt = [sp["bos"], sp["query"], *query, sp["answer"]]
            sync()
            t0 = time.perf_counter()
            past_k, past_v = ([x.to(device) for x in xs] for xs in model.empty_cache())
            logits, nk, nv = model.decoder(
                torch.tensor([prompt], device=device), past_k, past_v, mem_k, mem_v
            )
            logits[0, eos] = -math.inf
            answer = [int(logits[0].argmax())]
            t1 = time.perf_counter()
            past_k, past_v = nk, nv
            while len(answer) < a:
                tok = torch.tensor([[answer[-1]]], device=device)
                logits, nk, nv = model.decoder(tok, past_k, past_v, mem_k, mem_v)
                past_k = [torch.cat([x, y]) for x, y in zip(past_k, nk, strict=True)]
                past_v = [torch.cat([x, y]) for x, y in zip(past_v, nv, strict=True)]
                logits[0, eos] = -math.inf
                answer.append(int(logits[0].argmax()))
            t2 = time.perf_counter()
            ids = torch.tensor([prompt + answer + [eos]], device=device)
            mask = torch.ones_like(ids)
            stm = model.memory(stm, model.encoder(ids, mask), mask)
            mem_k, mem_v = model.memory_kv(stm)
            sync()
            t3 = time.perf_counter()
            if t >= 0:
                prompt_t.append(t1 - t0)
                decode_t.append((t2 - t1) / (a - 1))
                update_t.append(t3 - t2)
    model.to("cpu")
    return {
        "engine": f"PyTorch eager (rxt-edge model, {device})",
        "device": device,
        **_speed_summary(prompt_t, decode_t, update_t),
    }


# --- rxlm, same weights ---------------------------------------------------------------------------------------
def rxlm_config(cfg) -> dict[str, Any] | None:
    """rxlm (0.3.92) constructor arguments for a dense, SQA-style RxT config like the Alpha presets, or None when
    the config uses something this mapping does not cover (MoE, memory-free layers, gated attention...)."""
    dec_blk, enc_blk = cfg.decoder.memory_layers[0], cfg.encoder.layers[0]
    sa, ca, ff, ef = dec_blk.self_attn, dec_blk.cross_attn, dec_blk.ffn, enc_blk.ffn
    mc = cfg.memory
    if (
        ff.is_moe
        or cfg.decoder.layers_before
        or cfg.decoder.layers_after
        or sa.gated
        or ca.gated
        or mc.variant != "self-interlayer"
        or mc.norm.kind != "classic-rms"
        or mc.residual_gate.mode != "elementwise"
    ):
        return None
    heads = cfg.dim // sa.head_dim
    common = {
        "num_layers": cfg.memory_layers,
        "vocab_size": cfg.vocab_size,
        "embed_dim": cfg.dim,
        "att_heads": heads,
        "seq_len": cfg.decoder.max_seq_len,
        "stm_size": cfg.stm_slots,
        "use_flash_attention": False,
        "self_att_type": "sqa",
        "att_groups": sa.kv_heads,
        "att_query_groups": sa.q_heads,
        "use_attention_output_bias": sa.out_bias,
        "rope_base": cfg.decoder.rope_base,
    }
    gate = mc.residual_gate
    return {
        "decoder_config": {
            **common,
            "ff_dim": ff.hidden_dim,
            "use_gated": ff.gated,
            "ff_activation": ff.activation,
            "cross_att_type": "sqa",
            "cross_att_groups": ca.kv_heads,
            "cross_att_query_groups": ca.q_heads,
            "skip_memory_cross_attention": False,
            "stateless_layers_config": [],
            "use_head_norm": False,
        },
        "encoder_config": {
            **common,
            "ff_dim": ef.hidden_dim,
            "use_gated": ef.gated,
            "ff_activation": ef.activation,
            "skip_memory_cross_attention": True,
        },
        "memory_attention_config": {
            "num_layers": mc.num_layers,
            "embed_dim": cfg.dim,
            "att_heads": heads,
            "seq_len": cfg.decoder.max_seq_len,
            "stm_size": cfg.stm_slots,
            "use_flash_attention": False,
            "att_type": "sqa",
            "att_groups": mc.attn.kv_heads,
            "att_query_groups": mc.attn.q_heads,
            "interlayer_att_type": "sqa",
            "interlayer_att_groups": mc.aux_attn.kv_heads,
            "interlayer_att_query_groups": mc.aux_attn.q_heads,
            "norm_type": "classic-rms",
            "use_gated_residual": True,
            "residual_gate_type": "elementwise",
            "use_tanh_residual_gate": gate.activation == "tanh",
            "residual_per_slot_gate": gate.per_slot,
            "rope_base": mc.rope_base,
        },
        "memory_attention_variant": "self-interlayer",
    }


def rxlm_twin(model):
    """An rxlm RxTAlpha with exactly our model's weights, or (None, reason).

    The config is checked by translating it back with our rxlm reader (it must give our config), and the
    weights are copied through the reader's name map, every rxlm tensor accounted for."""
    import torch

    from .checkpoints.rxlm import rxlm_names, translate_config

    try:
        from rxlm.rxt import models
    except ImportError:
        return None, "rxlm is not installed"
    args = rxlm_config(model.cfg)
    if args is None:
        return (
            None,
            "this configuration (MoE / memory-free layers / gated attention / other memory variant) has no rxlm mapping here",
        )
    variant = args.pop("memory_attention_variant")
    back = translate_config(
        args["decoder_config"], args["encoder_config"], args["memory_attention_config"], variant,
        dict(model.cfg.special_tokens), "rxlm twin",
    )  # fmt: skip
    ours = model.cfg.to_dict()
    if back.to_dict() != {**ours, "shared_embedding": back.shared_embedding}:
        return None, "the rxlm config built here does not translate back to the same architecture"
    sp = model.cfg.special_tokens
    tok = {f"{k}_token_id": sp[k] for k in ("bos", "eos", "query", "answer", "pad")}
    with torch.random.fork_rng(devices=[]):
        rx = models.RxTAlpha(**args, tokenizer_config=tok, memory_attention_variant=variant)
    rx.share_components()
    rx.eval()
    names = rxlm_names(
        model,
        variant,
        {
            "decoder": "decoder.model.",
            "encoder": "encoder.model.",
            "memory_attention": "memory_attention.model.",
        },
    )
    theirs = rx.state_dict(keep_vars=True)
    done: set[str] = set()
    with torch.no_grad():
        for key, value in model.state_dict().items():
            for cand in names(key):
                if cand in theirs:
                    if tuple(theirs[cand].shape) != tuple(value.shape):
                        return (
                            None,
                            f"rxlm tensor {cand} has shape {tuple(theirs[cand].shape)}, ours {tuple(value.shape)}",
                        )
                    theirs[cand].copy_(value)
                    done.add(cand)
    left = [k for k in theirs if k not in done and ".rope." not in k]
    if left:
        return None, f"rxlm tensors without a counterpart: {left[:5]}"
    return rx, None


def _reset_rxlm_caches(rx) -> None:
    for module in rx.modules():
        if hasattr(module, "reset_inner_cache"):
            module.reset_inner_cache()


def rxlm_eager_speed(model, rx, opts: BenchOptions) -> dict[str, Any]:
    """rxlm's cached generation path, driven step by step as its `interact()` does: STM K/V pre-cache and
    prompt with the self-attention cache, then one token per call with `current_positions`; after the answer,
    encoder + memory attention. rxlm projects the STM K/V at the start of each answer, so that is in its prompt
    time (ours does it at the end of the memory update)."""
    import torch

    sp = model.cfg.special_tokens
    eos, vocab = sp["eos"], model.cfg.vocab_size
    q, a = opts.query_tokens, opts.answer_tokens
    device = _torch_device(torch, opts.provider)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rx, model = rx.to(device), model.to(device)
    dec = rx.decoder.model
    prompt_t, decode_t, update_t = [], [], []
    first_logits_diff = None
    with torch.no_grad(), _torch_threads(torch, opts.thread_count):
        for t in range(-1, opts.speed_turns):
            query = query_ids(WARMUP_TURN if t < 0 else t, q, vocab, opts.seed)
            prompt = [sp["bos"], sp["query"], *query, sp["answer"]]
            _reset_rxlm_caches(rx)
            ids = torch.tensor([prompt], device=device)
            sync()
            t0 = time.perf_counter()
            kv = dec.prepare_stm_kv_cache()
            out = dec(ids, attention_mask=torch.ones_like(ids), stm_kv_cache=kv, use_self_attn_cache=True)
            logits = out[0, -1]
            if t == -1:  # same weights, same STM: the first prompt's logits must agree with ours
                with torch.inference_mode():
                    mk, mv = model.memory_kv(model.initial_stm)
                    pk, pv = ([x.to(device) for x in xs] for xs in model.empty_cache())
                    ref = model.decoder(ids, pk, pv, mk, mv)[0][0]
                first_logits_diff = float((ref - logits).abs().max())
            logits[eos] = -math.inf
            answer = [int(logits.argmax())]
            t1 = time.perf_counter()
            pos = len(prompt)
            while len(answer) < a:
                out = dec(
                    torch.tensor([[answer[-1]]], device=device),
                    attention_mask=torch.ones(1, 1, dtype=torch.long, device=device),
                    stm_kv_cache=kv,
                    use_self_attn_cache=True,
                    current_positions=torch.tensor([[pos]], device=device),
                )
                pos += 1
                logits = out[0, -1]
                logits[eos] = -math.inf
                answer.append(int(logits.argmax()))
            t2 = time.perf_counter()
            inter = torch.tensor([prompt + answer + [eos]], device=device)
            mask = torch.ones_like(inter)
            _, hidden = rx.encoder(inter, attention_mask=mask)
            rx.memory_attention(hidden, attention_mask=mask)
            sync()
            t3 = time.perf_counter()
            if t >= 0:
                prompt_t.append(t1 - t0)
                decode_t.append((t2 - t1) / (a - 1))
                update_t.append(t3 - t2)
    model.to("cpu")
    return {
        "engine": f"PyTorch eager (rxlm {_dist_version('rxlm')}, cached decode, {device})",
        "device": device,
        **_speed_summary(prompt_t, decode_t, update_t),
        "same_weights_first_logits_max_diff": first_logits_diff,
    }


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - a label only
        return "?"


# =============================================================================================== preparation
@dataclass
class Prepared:
    label: str
    package: Path
    quantized: list[Path] = field(default_factory=list)
    baseline_dir: Path | None = None
    model: Any = None  # the torch model (same weights as the package), when torch is available
    params: int | None = None
    notes: list[str] = field(default_factory=list)


def _quantize_module():
    try:
        from . import quantize
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


def _add_quantized(prep: Prepared, opts: BenchOptions, root: Path, step: Callable[[str], None]) -> None:
    """The quantized rows: `rxt_edge.export.quantize.quantize_package(src, dst, scheme, preset)` per scheme."""
    from rxt_edge.manifest import load_manifest

    schemes = quant_schemes(opts)
    if not schemes:
        return
    if load_manifest(prep.package).precision != "fp32":
        prep.notes.append("the package is not fp32: no quantized row is derived from it")
        return
    q = _quantize_module()
    if q is None:
        prep.notes.append("rxt_edge.export.quantize is not available: no quantized row")
        return
    for scheme in schemes:
        preset = quant_preset(opts, scheme)
        per_tensor = opts.quant_per_tensor and scheme == "int8-dynamic"
        name = "-".join(x for x in ("package", scheme, preset, "per-tensor" if per_tensor else None) if x)
        dest = root / name
        if not (dest / "manifest.json").is_file():
            step(
                f"quantizing ({scheme}{'' if preset is None else ', ' + preset}{', per-tensor' if per_tensor else ''})"
            )
            try:
                q.quantize_package(
                    prep.package,
                    dest,
                    scheme,
                    preset=preset,
                    overwrite=True,
                    per_channel=False if per_tensor else None,
                )
            except Exception as e:  # noqa: BLE001 - reported, the rest of the bench still runs
                prep.notes.append(f"quantization ({scheme}) failed: {type(e).__name__}: {e}")
                continue
        prep.quantized.append(dest)


def prepare(opts: BenchOptions, workdir: Path, step: Callable[[str], None]) -> Prepared:
    """Packages (fp32, quantized), the baseline graph and the torch model for the run; cached in `workdir`."""
    torch = _torch()
    if opts.config is not None:
        if torch is None:
            raise BenchError(
                "--config builds a random-weight model and needs torch (pip install 'rxt-edge[export]'); "
                "to benchmark without torch, pass an exported MODEL_DIR"
            )
        from .checkpoints import load_checkpoint
        from .checkpoints.native import save_native
        from .onnx_export import export_package
        from .presets import PRESETS, param_count, random_model

        if opts.config not in PRESETS:
            raise BenchError(f"unknown --config {opts.config!r}; known: {', '.join(PRESETS)}")
        root = workdir / opts.config
        stamp = {"config": opts.config, "seed": opts.seed}
        if (root / "preset.json").is_file() and json.loads((root / "preset.json").read_text()) != stamp:
            shutil.rmtree(root)
        ckpt = root / "checkpoint"
        if not (ckpt / "config.json").is_file():
            step(f"building {opts.config} (random weights, seed {opts.seed})")
            save_native(random_model(opts.config, seed=opts.seed), ckpt)
            write_bench_tokenizer(ckpt / "tokenizer.json")
            (root / "preset.json").write_text(json.dumps(stamp))
        model, source = load_checkpoint(str(ckpt))
        pkg = root / "package-fp32"
        if not (pkg / "manifest.json").is_file():
            export_package(
                model, source, pkg, overwrite=True, progress=lambda g: step(f"exporting the {g} graph")
            )
        prep = Prepared(f"preset {opts.config}", pkg, model=model, params=param_count(model))
    else:
        from rxt_edge.manifest import ManifestError, load_manifest

        pkg = Path(opts.model_dir)
        try:
            manifest = load_manifest(pkg)
        except ManifestError as e:
            raise BenchError(str(e)) from None
        root = workdir / f"pkg-{manifest.fingerprint()[:12]}"
        prep = Prepared(str(pkg), pkg)
        if torch is None:
            prep.notes.append("torch is not installed: baseline and PyTorch eager rows skipped")
        else:
            prep.model = _source_model(manifest, prep.notes)
            if prep.model is not None:
                from .presets import param_count

                prep.params = param_count(prep.model)
    if opts.quantize:
        _add_quantized(prep, opts, root, step)
    if opts.baseline != "none" and prep.model is not None:
        from .baseline import META_FILE, export_baseline

        bdir = root / "baseline"
        if not (bdir / META_FILE).is_file():
            step("exporting the stateless baseline")
            export_baseline(prep.model, bdir)
        prep.baseline_dir = bdir
    elif opts.baseline != "none":
        prep.notes.append("no torch model for this package: the stateless baseline was not built")
    return prep


def _source_model(manifest, notes: list[str]):
    """The checkpoint a package was exported from (manifest source.path), if it is still there and unchanged."""
    from .checkpoints import CheckpointError, load_checkpoint

    path = Path(manifest.source.path)
    if not path.is_dir():
        notes.append(
            f"the package's source checkpoint {path} is not available: baseline and PyTorch rows skipped"
        )
        return None
    try:
        model, source = load_checkpoint(str(path))
    except CheckpointError as e:
        notes.append(f"the source checkpoint could not be read ({e}): baseline and PyTorch rows skipped")
        return None
    if source.fingerprint != manifest.source.fingerprint:
        notes.append(
            f"{path} changed since the export (fingerprint differs): baseline and PyTorch rows skipped"
        )
        return None
    return model


# =============================================================================================== the run
class _Bars:
    """rich progress bars when a console is given; silent otherwise."""

    def __init__(self, console=None):
        self.console = console
        self._progress = None

    def __enter__(self) -> _Bars:
        if self.console is not None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def task(self, description: str, total: int | None = None) -> Callable[[int, int], None]:
        if self._progress is None:
            return lambda done, total: None
        tid = self._progress.add_task(description, total=total)

        def update(done: int, total: int) -> None:
            self._progress.update(tid, completed=done, total=total)

        return update

    def step(self, description: str) -> None:
        if self._progress is not None:
            self._progress.console.log(description)


def _rxt_job(
    package: Path, opts: BenchOptions, turns: int, answer: int, delay: float | None
) -> dict[str, Any]:
    return {
        "kind": "rxt_turns",
        "package": str(package),
        "provider": opts.provider,
        "threads": opts.thread_count,
        "turns": turns,
        "query_tokens": opts.query_tokens,
        "answer_tokens": answer,
        "typing_delay": delay,
        "seed": opts.seed,
        "warmup": 1,
    }


def _speed_from_turns(turns: list[dict[str, Any]]) -> dict[str, float]:
    prompt = [t["ttft_s"] for t in turns]
    decode = [(t["total_s"] - t["ttft_s"]) / (t["answer_tokens"] - 1) for t in turns]
    update = [t["update_s"] for t in turns if t["update_s"] is not None]
    return _speed_summary(prompt, decode, update)


def run_bench(opts: BenchOptions, console=None) -> dict[str, Any]:
    """Run every measurement and return the report (the JSON document)."""
    from rxt_edge.runtimes import providers

    opts.check()
    try:  # before anything is built: a missing provider is the user's to fix
        providers.resolve_provider(opts.provider)
    except (ValueError, providers.ProviderUnavailableError) as e:
        raise BenchError(str(e)) from None
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "load_average_start": load_average(),
        "settings": {
            "model": str(opts.model_dir) if opts.model_dir else None,
            "config": opts.config,
            "provider": opts.provider,
            "threads": opts.thread_count,
            "turns": opts.turns,
            "query_tokens": opts.query_tokens,
            "answer_tokens": opts.answer_tokens,
            "typing_delays_s": list(opts.typing_delays),
            "update_turns": opts.update_turns,
            "speed_turns": opts.speed_turns,
            "baseline": opts.baseline,
            "quantize": opts.quantize,
            "quant_preset": quant_preset(opts),
            "quant_per_tensor": opts.quant_per_tensor,
            "seed": opts.seed,
        },
        "notes": [],
    }
    tmp = None
    if opts.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="rxt-edge-bench-")
        workdir = Path(tmp.name)
    else:
        workdir = Path(opts.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        with _Bars(console) as bars:
            prep = prepare(opts, workdir, bars.step)
            report["notes"] += prep.notes
            _measure(report, prep, opts, bars)
    finally:
        if tmp is not None:
            tmp.cleanup()
    report["load_average_end"] = load_average()
    report["targets"] = evaluate_targets(report, opts)
    return report


def _measure(report: dict[str, Any], prep: Prepared, opts: BenchOptions, bars: _Bars) -> None:
    from rxt_edge.manifest import load_manifest

    manifest = load_manifest(prep.package)
    d = manifest.model
    report["model"] = {
        "label": prep.label,
        "params": prep.params,
        "dims": d.to_json(),
        "precision": manifest.precision,
        "package_bytes": dir_bytes(prep.package),
    }
    # 1. per-turn latency ---------------------------------------------------------------------------------
    lat: dict[str, Any] = {}
    r = run_child(_rxt_job(prep.package, opts, opts.turns, opts.answer_tokens, None), bars.task("RxT turns"))
    lat["rxt"] = _curve(r, opts)
    modes = {"reread": [False], "cached": [True], "both": [False, True], "none": []}[opts.baseline]
    if prep.baseline_dir is not None:
        for reuse in modes:
            name = "baseline_cached" if reuse else "baseline"
            job = {
                "kind": "baseline_turns",
                "baseline_dir": str(prep.baseline_dir),
                "provider": opts.provider,
                "threads": opts.thread_count,
                "turns": opts.turns,
                "query_tokens": opts.query_tokens,
                "answer_tokens": opts.answer_tokens,
                "reuse_cache": reuse,
                "prefill_chunk": opts.prefill_chunk,
                "special": dict(manifest.special_tokens),
                "seed": opts.seed,
                "warmup": 1,
            }
            b = run_child(
                job, bars.task("stateless baseline" + (" (KV cache kept)" if reuse else " (re-reads)"))
            )
            lat[name] = _curve(b, opts)
            lat[name]["mode"] = "kv-cache kept across turns" if reuse else "re-reads the whole conversation"
            lat[name]["params"] = b["params"]
            lat[name]["context_tokens"] = [t["context_tokens"] for t in b["turns"]]
    report["latency"] = lat

    # 2. + 4. speed and resources per package -------------------------------------------------------------
    rows = []
    packages = [(_package_label(manifest), prep.package)]
    packages += [(_package_label(load_manifest(q)), q) for q in prep.quantized]
    bw = None
    if opts.provider == "cpu":
        bars.step("measuring memory bandwidth")
        bw = measure_bandwidth(opts.thread_count, opts.bandwidth_mib)
        report["bandwidth"] = bw
    for precision, path in packages:
        res = run_child(
            _rxt_job(path, opts, opts.speed_turns, opts.answer_tokens, None), bars.task(f"speed, {precision}")
        )
        row: dict[str, Any] = {
            "engine": f"rxt-edge (onnxruntime {opts.provider}, {precision})",
            "package": precision,
            **_speed_from_turns(res["turns"]),
            "package_bytes": dir_bytes(path),
            "peak_rss_mb": res["peak_rss_mb"],
            "rss_after_load_mb": res["rss_after_load_mb"],
            "device_memory": res["device_memory"],
            "torch_imported": res["torch_imported"],
            "load_average_after": res["load_average_after"],
        }
        try:
            per_tok = decoder_bytes_per_token(path)
        except ImportError:
            per_tok = None
            report["notes"].append("onnx is not installed: no bytes-per-token figures")
        if per_tok is not None:
            row["decoder_weight_bytes_per_token"] = per_tok["weights"]
            row["stm_kv_bytes_per_token"] = per_tok["stm_kv"]
            if bw is not None:
                floor = per_tok["weights"] / (bw["gb_per_s"] * 1e9) * 1e3
                row["bandwidth_floor_ms"] = floor
                row["floor_ratio"] = _ratio(row["decode_ms_per_token"], floor)
                with_state = (per_tok["weights"] + per_tok["stm_kv"]) / (bw["gb_per_s"] * 1e9) * 1e3
                row["bandwidth_floor_with_stm_kv_ms"] = with_state
        rows.append(row)
    ref_rows = []
    if opts.reference and prep.model is not None:
        t = bars.task("PyTorch eager", 2)
        ref_rows.append(torch_eager_speed(prep.model, opts))
        t(1, 2)
        rx, why = rxlm_twin(prep.model)
        if rx is None:
            report["notes"].append(f"rxlm row skipped: {why}")
        else:
            ref_rows.append(rxlm_eager_speed(prep.model, rx, opts))
            del rx
        t(2, 2)
    elif opts.reference:
        report["notes"].append("no torch model: PyTorch eager rows skipped")
    for row in rows:
        for ref in ref_rows:
            key = "speedup_vs_rxlm" if "rxlm" in ref["engine"] else "speedup_vs_torch"
            row[key] = {
                "decode": _ratio(ref["decode_ms_per_token"], row["decode_ms_per_token"]),
                "prompt": _ratio(ref["prompt_ms"], row["prompt_ms"]),
                "memory_update": _ratio(ref["memory_update_ms"], row["memory_update_ms"]),
                "decode_best": _ratio(ref["decode_ms_per_token_best"], row["decode_ms_per_token_best"]),
            }
    report["speed"] = {
        "threads": opts.thread_count,
        "prompt_tokens": opts.query_tokens + 3,
        "decode_tokens": opts.answer_tokens,
        "runtime": rows,
        "reference": ref_rows,
    }

    # 3. memory update off the path -----------------------------------------------------------------------
    upd = []
    for delay in opts.typing_delays:
        res = run_child(
            _rxt_job(prep.package, opts, opts.update_turns, opts.answer_tokens, delay),
            bars.task(f"memory update, typing delay {delay * 1e3:g} ms"),
        )
        turns = res["turns"]
        later = turns[1:]  # the first turn has no previous update
        upd.append(
            {
                "typing_delay_s": delay,
                "memory_update_ms": 1e3
                * _median([t["update_s"] for t in turns if t["update_s"] is not None]),
                "turns_waited_share": (sum(t["update_was_running"] for t in later) / len(later))
                if later
                else 0.0,
                "mean_wait_ms": 1e3 * (sum(t["update_wait_s"] for t in later) / len(later)) if later else 0.0,
                "median_ttft_ms": 1e3 * _median([t["ttft_s"] for t in turns]),
                "median_total_ms": 1e3 * _median([t["total_s"] for t in turns]),
                "load_average_after": res["load_average_after"],
            }
        )
    report["memory_update"] = upd


def _package_label(manifest) -> str:
    """ "fp32", or the quantization scheme with its preset ("int8-dynamic avx512_vnni", "... per-tensor")."""
    q = manifest.quantization or {}
    label = manifest.precision if not q.get("preset") else f"{manifest.precision} {q['preset']}"
    return label + (" per-tensor" if q.get("per_channel") is False else "")


def _curve(result: dict[str, Any], opts: BenchOptions) -> dict[str, Any]:
    turns = result["turns"]
    ttft = [t["ttft_s"] for t in turns]
    total = [t["total_s"] for t in turns]
    return {
        "ttft_s": ttft,
        "total_s": total,
        "answer_tokens": [t["answer_tokens"] for t in turns],
        **curve_summary(ttft, total, opts.window),
        "peak_rss_mb": result["peak_rss_mb"],
        "device_memory": result["device_memory"],
        "torch_imported": result["torch_imported"],
        "load_average_after": result["load_average_after"],
    }


def evaluate_targets(report: dict[str, Any], opts: BenchOptions) -> list[dict[str, Any]]:
    """The issue's targets with the measured values; `met` is None where this run cannot decide."""
    out = []
    lat = report.get("latency", {})
    rxt, base = lat.get("rxt"), lat.get("baseline")
    if rxt:
        ratio = rxt["ratio_total_window"]
        grows = base["ratio_total_window"] if base else None
        out.append(
            {
                "name": f"RxT turn-{opts.turns}/turn-1 answer time <= {FLAT_RATIO} while the baseline grows",
                "measured": f"RxT {rxt['ratio_total']:.2f} (raw), {ratio:.2f} (median of {rxt['window']} turns "
                f"at each end); baseline {'n/a' if grows is None else f'{grows:.2f}'}",
                "met": None if grows is None else bool(ratio <= FLAT_RATIO and grows > FLAT_RATIO),
            }
        )
    want = DECODE_SPEEDUP_TARGETS.get(opts.config or "")
    rows = report.get("speed", {}).get("runtime", [])
    torch_ms = next(
        (
            r["decode_ms_per_token"]
            for r in report.get("speed", {}).get("reference", [])
            if "rxt-edge model" in r["engine"]
        ),
        None,
    )
    for row in rows if want and opts.provider == "cpu" else []:
        sp = row.get("speedup_vs_torch", {}).get("decode")
        measured = "n/a" if sp is None else f"{sp:.2f}x"
        floor = row.get("bandwidth_floor_ms")
        if sp is not None and torch_ms and floor:
            # no decoder of these weights can beat its bandwidth floor: the most this package could show
            measured += f" (at its bandwidth floor it would be {torch_ms / floor:.2f}x)"
        out.append(
            {
                "name": f"decode >= {want:g}x faster than PyTorch eager ({opts.config}, {row['package']} package, CPU)",
                "measured": measured,
                "met": None if sp is None else bool(sp >= want),
            }
        )
    if opts.config in FLOOR_CONFIGS and opts.provider == "cpu":
        q = next((r for r in rows if r["package"] != "fp32" and "int8" in r["package"]), None)
        fr = q.get("floor_ratio") if q else None
        out.append(
            {
                "name": f"{opts.config} INT8 decode within {FLOOR_FACTOR:g}x of the memory-bandwidth floor",
                "measured": "n/a"
                if fr is None
                else f"{q['decode_ms_per_token']:.2f} ms vs floor {q['bandwidth_floor_ms']:.2f} ms = {fr:.2f}x",
                "met": None if fr is None else bool(fr <= FLOOR_FACTOR),
            }
        )
    return out


# =============================================================================================== output
def _fmt(x: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:{spec}}{suffix}"


def print_report(report: dict[str, Any], console) -> None:
    """The tables at the end of `rxt-edge bench`."""
    from rich.table import Table

    m = report.get("model", {})
    params = m.get("params")
    console.print(
        f"[bold]{m.get('label')}[/]  params {_fmt(params / 1e6 if params else None, '.1f', 'M')}"
        f"  |  {report['machine']['cpu']}, {report['settings']['threads']} thread(s), {report['settings']['provider']}"
        f"  |  load {report.get('load_average_start')} -> {report.get('load_average_end')}"
    )
    lat = report.get("latency", {})
    t = Table(
        title=f"Per-turn latency over {report['settings']['turns']} turns (fixed {report['settings']['answer_tokens']}-token answers)"
    )
    for col in (
        "model",
        "turn 1 answer",
        "turn N answer",
        "N/1",
        "N/1 (median window)",
        "turn 1 TTFT",
        "turn N TTFT",
        "TTFT N/1",
    ):
        t.add_column(col, justify="right")
    for name, c in lat.items():
        t.add_row(
            {
                "rxt": "RxT (rxt-edge)",
                "baseline": "stateless baseline",
                "baseline_cached": "baseline, KV kept",
            }.get(name, name),
            _fmt(c["turn1_total_s"] * 1e3, ".1f", " ms"),
            _fmt(c["turnN_total_s"] * 1e3, ".1f", " ms"),
            _fmt(c["ratio_total"], ".2f"),
            _fmt(c["ratio_total_window"], ".2f"),
            _fmt(c["turn1_ttft_s"] * 1e3, ".1f", " ms"),
            _fmt(c["turnN_ttft_s"] * 1e3, ".1f", " ms"),
            _fmt(c["ratio_ttft"], ".2f"),
        )
    console.print(t)
    sp = report.get("speed", {})
    t = Table(
        title=f"Speed, {sp.get('threads')} thread(s): prompt {sp.get('prompt_tokens')} tokens, {sp.get('decode_tokens')} decoded"
    )
    for col in (
        "engine",
        "prompt",
        "decode / token",
        "(best turn)",
        "memory update",
        "decode speedup vs torch",
        "vs rxlm",
    ):
        t.add_column(col, justify="right")
    for row in sp.get("runtime", []) + sp.get("reference", []):
        t.add_row(
            row["engine"],
            _fmt(row["prompt_ms"], ".2f", " ms"),
            _fmt(row["decode_ms_per_token"], ".2f", " ms"),
            _fmt(row.get("decode_ms_per_token_best"), ".2f", " ms"),
            _fmt(row["memory_update_ms"], ".1f", " ms"),
            _fmt(row.get("speedup_vs_torch", {}).get("decode"), ".2f", "x"),
            _fmt(row.get("speedup_vs_rxlm", {}).get("decode"), ".2f", "x"),
        )
    console.print(t)
    t = Table(title="Memory update off the user's path")
    for col in ("typing delay", "update", "turns that waited", "mean wait", "median TTFT", "median answer"):
        t.add_column(col, justify="right")
    for u in report.get("memory_update", []):
        t.add_row(
            _fmt(u["typing_delay_s"] * 1e3, "g", " ms"),
            _fmt(u["memory_update_ms"], ".1f", " ms"),
            _fmt(100 * u["turns_waited_share"], ".0f", " %"),
            _fmt(u["mean_wait_ms"], ".1f", " ms"),
            _fmt(u["median_ttft_ms"], ".1f", " ms"),
            _fmt(u["median_total_ms"], ".1f", " ms"),
        )
    console.print(t)
    t = Table(title="Packages")
    for col in (
        "package",
        "size",
        "peak RSS",
        "device memory",
        "decode / token",
        "weights read / token",
        "bandwidth floor",
        "decode / floor",
    ):
        t.add_column(col, justify="right")
    for row in sp.get("runtime", []):
        dev = (row.get("device_memory") or {}).get("mb")
        t.add_row(
            row["package"],
            _fmt(row["package_bytes"] / 1e6, ".1f", " MB"),
            _fmt(row["peak_rss_mb"], ".0f", " MiB"),
            _fmt(dev, ".0f", " MiB"),
            _fmt(row["decode_ms_per_token"], ".2f", " ms"),
            _fmt(
                row.get("decoder_weight_bytes_per_token", 0) / 1e6
                if row.get("decoder_weight_bytes_per_token")
                else None,
                ".1f",
                " MB",
            ),
            _fmt(row.get("bandwidth_floor_ms"), ".2f", " ms"),
            _fmt(row.get("floor_ratio"), ".2f", "x"),
        )
    console.print(t)
    if report.get("bandwidth"):
        console.print(
            f"bandwidth: {report['bandwidth']['gb_per_s']:.1f} GB/s ({report['bandwidth']['method']})"
        )
    if report.get("targets"):
        t = Table(title="Targets")
        for col in ("target", "measured", "met"):
            t.add_column(col)
        for tg in report["targets"]:
            met = {True: "[green]yes[/]", False: "[red]no[/]", None: "n/a"}[tg["met"]]
            t.add_row(tg["name"], tg["measured"], met)
        console.print(t)
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")


def markdown_report(report: dict[str, Any]) -> str:
    """The report's tables in Markdown (what docs/benchmarks.md quotes)."""

    def f(x, spec=".1f", suffix=""):
        return _fmt(x, spec, suffix)

    s, m, mach = report["settings"], report.get("model", {}), report["machine"]
    params = m.get("params")
    out = [
        f"**{m.get('label')}** ({f(params / 1e6 if params else None, '.1f', 'M')} parameters), "
        f"{s['provider']}, {s['threads']} thread(s), {s['turns']} turns, {s['query_tokens']}-token queries, "
        f"{s['answer_tokens']}-token answers. Machine: {mach['cpu']}, {mach['logical_cpus']} logical CPUs, "
        f"{mach['ram_gib']} GiB RAM, onnxruntime {mach['onnxruntime']}, torch {mach['torch']}. "
        f"Load average (1/5/15 min) {report.get('load_average_start')} at the start, "
        f"{report.get('load_average_end')} at the end.",
        "",
        "| model | turn 1 answer | turn N answer | N/1 | N/1 (median of window) | turn 1 TTFT | turn N TTFT | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "rxt": "RxT (rxt-edge)",
        "baseline": "stateless baseline (re-reads)",
        "baseline_cached": "baseline, KV cache kept",
    }
    for name, c in report.get("latency", {}).items():
        out.append(
            f"| {names.get(name, name)} | {f(c['turn1_total_s'] * 1e3, '.1f', ' ms')} | "
            f"{f(c['turnN_total_s'] * 1e3, '.1f', ' ms')} | {f(c['ratio_total'], '.2f')} | "
            f"{f(c['ratio_total_window'], '.2f')} | {f(c['turn1_ttft_s'] * 1e3, '.1f', ' ms')} | "
            f"{f(c['turnN_ttft_s'] * 1e3, '.1f', ' ms')} | {f(c.get('peak_rss_mb'), '.0f', ' MiB')} |"
        )
    sp = report.get("speed", {})
    out += [
        "",
        f"Speed ({sp.get('prompt_tokens')}-token prompt, {sp.get('decode_tokens')} tokens decoded, median of "
        f"{s['speed_turns']} turns; best turn in brackets):",
        "",
        "| engine | prompt | decode / token | memory update | decode speedup vs PyTorch eager (ours) | vs rxlm |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in sp.get("runtime", []) + sp.get("reference", []):
        st, sr = row.get("speedup_vs_torch", {}), row.get("speedup_vs_rxlm", {})
        out.append(
            f"| {row['engine']} | {f(row['prompt_ms'], '.2f', ' ms')} | {f(row['decode_ms_per_token'], '.2f', ' ms')} "
            f"({f(row.get('decode_ms_per_token_best'), '.2f')}) | {f(row['memory_update_ms'], '.1f', ' ms')} | "
            f"{f(st.get('decode'), '.2f', 'x')} ({f(st.get('decode_best'), '.2f', 'x')}) | "
            f"{f(sr.get('decode'), '.2f', 'x')} ({f(sr.get('decode_best'), '.2f', 'x')}) |"
            if st or sr
            else f"| {row['engine']} | {f(row['prompt_ms'], '.2f', ' ms')} | {f(row['decode_ms_per_token'], '.2f', ' ms')} "
            f"({f(row.get('decode_ms_per_token_best'), '.2f')}) | {f(row['memory_update_ms'], '.1f', ' ms')} | | |"
        )
    out += [
        "",
        "| typing delay | memory update | turns that waited | mean wait | median TTFT | median answer |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for u in report.get("memory_update", []):
        out.append(
            f"| {f(u['typing_delay_s'] * 1e3, 'g', ' ms')} | {f(u['memory_update_ms'], '.1f', ' ms')} | "
            f"{f(100 * u['turns_waited_share'], '.0f', ' %')} | {f(u['mean_wait_ms'], '.1f', ' ms')} | "
            f"{f(u['median_ttft_ms'], '.1f', ' ms')} | {f(u['median_total_ms'], '.1f', ' ms')} |"
        )
    out += [
        "",
        "| package | size | peak RSS | decode / token | weights read / token | bandwidth floor | decode / floor |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sp.get("runtime", []):
        wb = row.get("decoder_weight_bytes_per_token")
        out.append(
            f"| {row['package']} | {f(row['package_bytes'] / 1e6, '.1f', ' MB')} | {f(row['peak_rss_mb'], '.0f', ' MiB')} | "
            f"{f(row['decode_ms_per_token'], '.2f', ' ms')} | {f(wb / 1e6 if wb else None, '.1f', ' MB')} | "
            f"{f(row.get('bandwidth_floor_ms'), '.2f', ' ms')} | {f(row.get('floor_ratio'), '.2f', 'x')} |"
        )
    if report.get("bandwidth"):
        bw = report["bandwidth"]
        out += ["", f"Bandwidth: {bw['gb_per_s']:.1f} GB/s ({bw['method']})."]
    if report.get("targets"):
        out += ["", "| target | measured | met |", "|---|---|---|"]
        for t in report["targets"]:
            out.append(
                f"| {t['name']} | {t['measured']} | {({True: 'yes', False: 'no', None: 'n/a'})[t['met']]} |"
            )
    for note in report.get("notes", []):
        out.append(f"\nNote: {note}")
    return "\n".join(out) + "\n"


def plot_available() -> bool:
    """Whether `write_plot` can run (matplotlib installed); checked before a long run, not after it."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def write_plot(report: dict[str, Any], path: str | Path) -> Path:
    """PNG of answer time and time to first token per turn, RxT against the baseline(s). Needs matplotlib
    (`pip install 'rxt-edge[bench]'`)."""
    try:
        import matplotlib
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'rxt-edge[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = report["latency"]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    style = {"rxt": ("RxT (rxt-edge)", "tab:blue"), "baseline": ("stateless baseline (re-reads)", "tab:red"),
             "baseline_cached": ("baseline, KV cache kept", "tab:orange")}  # fmt: skip
    for name, c in lat.items():
        label, color = style.get(name, (name, None))
        x = range(1, len(c["total_s"]) + 1)
        ax.plot(x, [v * 1e3 for v in c["total_s"]], color=color, label=f"{label}: full answer")
        ax.plot(x, [v * 1e3 for v in c["ttft_s"]], color=color, linestyle="--", label=f"{label}: first token")
    s, m = report["settings"], report.get("model", {})
    ax.set_xlabel("turn")
    ax.set_ylabel("latency (ms)")
    ax.set_title(
        f"{m.get('label')}: {s['query_tokens']}-token queries, {s['answer_tokens']}-token answers, "
        f"{s['threads']} thread(s), {s['provider']}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Strict JSON: NaN and infinities (a measurement that could not be made) become null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(report), indent=2, default=_json_default, allow_nan=False))
    return path


def _finite(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child_main()
    else:
        print(
            "usage: rxt-edge bench (this module's own entry is for its measurement subprocesses)",
            file=sys.stderr,
        )
        sys.exit(2)
