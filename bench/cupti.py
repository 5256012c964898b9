"""GPU kernel time of a callable, per kernel name, through CUPTI (torch's profiler): what the CUDA micro-benchmarks
(bench/cross_attention_cuda.py, bench/gemv_cuda.py) report. Needs torch with CUDA, imported before onnxruntime."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable


def gpu_events(prof) -> list[tuple[str, float, float]]:
    """(name, start_us, duration_us) of every GPU kernel or copy a torch profiler recorded, in start order."""
    from torch.autograd import DeviceType

    out = [
        (e.name, e.time_range.start, e.time_range.end - e.time_range.start)
        for e in prof.events()
        if e.device_type == DeviceType.CUDA
    ]
    return sorted(out, key=lambda k: k[1])


def kernel_us(run: Callable[[], object], runs: int, per_run: int = 1) -> dict[str, float]:
    """Call `run` `runs` times under the profiler; kernel us per call and per `per_run` (copies left out)."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            run()
        torch.cuda.synchronize()
    per: dict[str, float] = defaultdict(float)
    for name, _, dur in gpu_events(prof):
        if "emcpy" not in name:
            per[name] += dur / (runs * per_run)
    return dict(per)
