"""The machine probe: what the machine is (CPU, cores, RAM, versions), how busy it is, how fast its memory is,
and what a process or a package costs (peak RSS, device memory, bytes on disk, weight bytes read per token).

numpy and the standard library only (onnx for `decoder_bytes_per_token`, torch for its version, both optional),
so the torch-free child processes use it too.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from rxt_edge.runtimes import native_kernels

from rxt_edge import contract


def dir_bytes(path: Path) -> int:
    """Bytes of every file under `path` (a package's size on disk)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


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
        "rxt_edge_kernels": native_kernels.status(),  # our own CPU kernels: on (which) or why not
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def load_warning(load: list[float] | None, cores: int | None = None) -> str | None:
    """A warning when the 1-minute load average exceeds the core count: other work then competes for the cores
    and the timings are not the machine's own (None when the load is fine or unknown)."""
    cores = cores or os.cpu_count() or 1
    if not load or load[0] <= cores:
        return None
    return (
        f"the machine was loaded while timing (load average {load[0]:.2f} > {cores} cores): "
        "other work competed for the cores, so these timings are slower and noisier than the machine's own"
    )


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
    """Bytes of weights the decoder graph reads per generated token (bench/active_weights.py: embedding rows,
    the top-k share of routed experts, everything else whole), with its parts, and the STM K/V bytes a step
    reads beside them. Needs `onnx`."""
    from rxt_edge.manifest import load_manifest

    from .active_weights import decoder_file_weight_bytes

    manifest = load_manifest(package_dir)
    weights = decoder_file_weight_bytes(Path(package_dir) / manifest.graphs["decoder"].file)
    decoder = manifest.graphs["decoder"]
    fdt = "float16" if any(i.dtype == "float16" for i in decoder.inputs) else "float32"
    # the memory K/V (and, in int8 form, their scales) as the package stores them
    specs = contract.memory_kv_specs(manifest.model, fdt, decoder.memory_kv)
    stm_kv = sum(math.prod(s.conversation_shape) * np.dtype(s.dtype).itemsize for s in specs)
    return {**weights, "stm_kv": stm_kv, "dtype_bytes": np.dtype(fdt).itemsize}


def peak_rss_mb() -> float | None:
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


def device_memory_mb(provider: str) -> dict[str, Any] | None:
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


def run_record(turns: list[dict[str, Any]], rss_after_load_mb: float | None, provider: str) -> dict[str, Any]:
    """What every child measurement returns besides its own fields: the turns, memory, and the torch check."""
    return {
        "turns": turns,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_load_mb": rss_after_load_mb,
        "device_memory": device_memory_mb(provider),
        "torch_imported": "torch" in sys.modules,
    }
