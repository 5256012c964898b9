"""`python -m rxt_edge.bench.kernel_profile PKG [PKG ...]`: where a CUDA decode step goes, kernel by kernel.

A decode step replayed from a CUDA graph is one launch on the host, so onnxruntime's own profiler sees nothing
inside it. CUPTI does: torch's profiler records every kernel the process runs, onnxruntime's included, also
those a graph replays. Per package and mode (captured / uncaptured), after a prompt and warm-up steps: the wall
time of a step (median, no profiler), then the kernels of `--steps` profiled steps, summed per kernel name and
divided by the steps, and the step's span on the GPU against the kernels' busy time (the rest is the gaps
between kernels). Needs torch with CUDA and onnxruntime-gpu in one process; torch is imported first so both use
the CUDA libraries it loads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from .cupti import gpu_events

PROMPT = list(range(5, 40))  # 35 tokens, the bench protocol's prompt length


def profile_package(package: str, cuda_graph: bool, steps: int, warm: int) -> dict[str, Any]:
    import torch

    from rxt_edge import RxTSession
    from rxt_edge.sampling import SamplingConfig, sample_next

    greedy = SamplingConfig(temperature=0.0)

    def pick(logits) -> int:  # the runtime's own greedy pick (numpy's argmax on float16 costs ~0.2 ms)
        return sample_next(logits, greedy)

    session = RxTSession.load(package, provider="cuda", cuda_graph=cuda_graph, verify_hashes=False)
    engine = session.engine
    memory = engine.new_memory()
    engine.install_stm(memory, session.conversation().stm())
    with engine.lease_slot(memory) as slot:

        def advance(token: int) -> int:  # as a greedy turn does: the graph's own pick where it has one
            return slot.step_greedy(token) if slot.picks_greedy else pick(slot.step(token))

        token = pick(slot.prefill(PROMPT))
        for _ in range(warm):
            token = advance(token)
        walls = []
        for _ in range(steps):
            t = time.perf_counter()
            token = advance(token)
            walls.append((time.perf_counter() - t) * 1e3)
        acts = [torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(steps):
                token = advance(token)
            torch.cuda.synchronize()
    kernels = gpu_events(prof)
    per_name: dict[str, list[float]] = defaultdict(list)
    for name, _, dur in kernels:
        per_name[name].append(dur)
    table = sorted(
        (
            {"kernel": n, "per_step": len(d) / steps, "us_per_step": sum(d) / steps}
            for n, d in per_name.items()
        ),
        key=lambda r: -r["us_per_step"],
    )
    busy = sum(d for _, _, d in kernels) / steps
    span = (kernels[-1][1] + kernels[-1][2] - kernels[0][1]) / steps if kernels else 0.0
    session.close()
    return {
        "package": package,
        "cuda_graph": cuda_graph,
        "wall_ms_median": statistics.median(walls),
        "greedy_pick_in_graph": slot.picks_greedy,
        "kernels_per_step": len(kernels) / steps,
        "busy_us_per_step": busy,
        "span_us_per_step": span,
        "table": table,
        "one_step": [(n, round(d, 2)) for n, _, d in kernels[: int(len(kernels) / steps)]],
    }


def _set_cuda_option(key: str, value: str) -> None:
    """Add a CUDA provider option to every session this process creates (an experiment's knob)."""
    from rxt_edge.runtimes import providers

    resolve = providers.resolve_provider

    def with_option(name: str, device_id: int = 0):
        plist, popts = resolve(name, device_id)
        if plist[0] == "CUDAExecutionProvider":
            popts = [{**popts[0], key: value}, *popts[1:]]
        return plist, popts

    providers.resolve_provider = with_option


def _fp16_package(config: str, workdir: Path) -> Path:
    """A random-weight fp16 package of preset `config` (the bench's own: fp32 export, then quantize fp16)."""
    from .options import BenchOptions
    from .prepare import prepare

    opts = BenchOptions(config=config, quantize="fp16", quant_preset=None, baseline="none", reference=False)
    return prepare(opts, workdir, lambda m: print(f"[{config}] {m}", flush=True)).quantized[0]


def _print(r: dict[str, Any], top: int) -> None:
    print(
        f"\n## {r['package']} cuda_graph={r['cuda_graph']}: wall {r['wall_ms_median']:.3f} ms/step, "
        f"{r['kernels_per_step']:.1f} kernels, busy {r['busy_us_per_step']:.1f} us, "
        f"span {r['span_us_per_step']:.1f} us per step"
    )
    for row in r["table"][:top]:
        print(f"{row['us_per_step']:8.1f} us {row['per_step']:5.1f}x  {row['kernel'][:110]}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m rxt_edge.bench.kernel_profile", description=__doc__)
    p.add_argument("packages", nargs="*", help="fp16/fp32 packages (or --configs)")
    p.add_argument("--configs", default="", help="presets to build as fp16 packages first, e.g. alpha-mini")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/rxt-kernel-profile"))
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--warm", type=int, default=16)
    p.add_argument("--modes", default="captured,uncaptured")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--json", type=Path)
    p.add_argument("--sdpa-kernel", type=int, default=0, help="onnxruntime's CUDA attention-kernel bitmask")
    args = p.parse_args(argv)
    if args.sdpa_kernel:
        _set_cuda_option("sdpa_kernel", str(args.sdpa_kernel))
    import torch  # noqa: F401  (first: onnxruntime then finds the CUDA libraries torch loaded)

    packages = list(args.packages)
    for config in filter(None, args.configs.split(",")):
        packages.append(str(_fp16_package(config, args.workdir)))
    results = []
    for package in packages:
        for mode in args.modes.split(","):
            r = profile_package(package, mode == "captured", args.steps, args.warm)
            _print(r, args.top)
            results.append(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
