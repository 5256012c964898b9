"""Execution-provider selection for onnxruntime: names, availability, session options, OrtValue devices.

The bottom layer: imports nothing from rxt_edge. A provider is named by a short user-facing name
("cpu", "cuda", "dml"); the GPU providers list the CPU provider after them, so nodes a GPU provider lacks
still run (onnxruntime assigns them to the CPU).
"""

from __future__ import annotations

import onnxruntime as ort

# short name -> (onnxruntime provider, OrtValue device type, pip command that provides it)
_PROVIDERS = {
    "cpu": ("CPUExecutionProvider", "cpu", "pip install rxt-edge"),
    "cuda": ("CUDAExecutionProvider", "cuda", "pip install rxt-edge[gpu]"),
    "dml": ("DmlExecutionProvider", "dml", "pip install rxt-edge[directml]"),
}
_ALIASES = {"directml": "dml"}
# CUDA provider options of a session whose runs may be captured and replayed as CUDA graphs (`gpu_graph_id`)
CUDA_GRAPH_OPTIONS = {"enable_cuda_graph": "1"}
PROVIDER_NAMES = tuple(_PROVIDERS)

_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ProviderUnavailableError(RuntimeError):
    """The requested execution provider is not in this onnxruntime build."""


def canonical_name(name: str) -> str:
    """'CUDA' -> 'cuda', 'directml' -> 'dml'; ValueError naming the choices for anything else."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _PROVIDERS:
        choices = ", ".join([*PROVIDER_NAMES, *_ALIASES])
        raise ValueError(f"unknown execution provider {name!r}; choose one of: {choices}")
    return key


def resolve_provider(name: str, device_id: int = 0) -> tuple[list[str], list[dict[str, str]]]:
    """(providers, provider_options) for `InferenceSession`, or ProviderUnavailableError."""
    key = canonical_name(name)
    ort_name, _, install = _PROVIDERS[key]
    available = ort.get_available_providers()
    if ort_name not in available:
        raise ProviderUnavailableError(
            f"execution provider {key!r} ({ort_name}) is not available in this onnxruntime build; "
            f"available: {', '.join(available) or 'none'}. Install it with `{install}` "
            "(only one onnxruntime package may be installed: uninstall the others first)"
        )
    if key == "cpu":
        return [ort_name], [{}]
    return [ort_name, "CPUExecutionProvider"], [{"device_id": str(int(device_id))}, {}]


def make_session_options(
    name: str,
    threads: int | None = None,
    optimization: str = "all",
    enable_profiling: bool = False,
) -> ort.SessionOptions:
    """SessionOptions suited to the provider; `threads` sets intra-op threads (None: onnxruntime's choice)."""
    key = canonical_name(name)
    if optimization not in _OPTIMIZATION:
        raise ValueError(f"optimization must be one of {list(_OPTIMIZATION)}, got {optimization!r}")
    so = ort.SessionOptions()
    so.graph_optimization_level = _OPTIMIZATION[optimization]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        so.intra_op_num_threads = threads  # CPU kernels (and CPU-fallback nodes of GPU providers)
        so.inter_op_num_threads = 1  # sequential execution: no parallel branches to feed
    if key == "dml":
        so.enable_mem_pattern = False  # DirectML requires both: no memory patterns, sequential execution
    so.enable_profiling = bool(enable_profiling)
    return so


def device_for(name: str, device_id: int = 0) -> tuple[str, int]:
    """(device type, device id) for `OrtValue.ortvalue_from_shape_and_type` and IOBinding."""
    key = canonical_name(name)
    return _PROVIDERS[key][1], 0 if key == "cpu" else int(device_id)


def check_session_provider(session: ort.InferenceSession, name: str) -> None:
    """Raise if the session silently fell back to the CPU (e.g. CUDA libraries missing at load time)."""
    key = canonical_name(name)
    ort_name = _PROVIDERS[key][0]
    active = session.get_providers()
    if ort_name not in active:
        raise ProviderUnavailableError(
            f"execution provider {key!r} ({ort_name}) was requested but the session runs on "
            f"{', '.join(active)}; check the {key} runtime libraries and drivers"
        )
