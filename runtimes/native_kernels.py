"""rxt-edge's own CPU kernels: where the library is, whether this machine can run it, and registering it.

Graphs name our kernels as ONNX functions (`rxt_edge.MemoryAttentionInt8`, `rxt_edge.MatMulInt4[Bias]`;
docs/graph-contract.md *Our own kernels*): onnxruntime runs the library's kernel where a session registered it
and the function's body (its own operators) everywhere else, so a package runs with or without the library and
gives the same answers within quantization error. The library is built on the user's machine (`rxt-edge kernels build`, runtimes/
kernel_build.py) into the user cache directory; the runtime registers it in CPU sessions when it is there.

`RXT_EDGE_KERNELS`: unset, the built library if there is one; `off` (or `0`), never; a path, that library (an
error if it cannot be used: it was asked for by name).

The 4-bit product kernel (`rxt_edge.MatMulInt4[Bias]`) is used only where it measured faster than onnxruntime's
MatMulNBits: CPUs without VNNI (AVX2 only: alpha-mini's products 5.1-6.2 -> 4.5-5.9 ms on an EPYC). With
AVX-VNNI or AVX512-VNNI, onnxruntime's own kernel was as fast or faster (a Xeon with both), so there the library
registers its other kernels only and the function's body runs. `RXT_EDGE_KERNEL_MATMUL_INT4=on|off` overrides.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import cache
from pathlib import Path

import onnxruntime as ort

from . import providers

ENV = "RXT_EDGE_KERNELS"
DOMAIN = "rxt_edge"  # the ONNX domain of our functions / kernels
LIBRARY_NAME = {"linux": "librxt_edge_kernels.so", "darwin": "librxt_edge_kernels.dylib"}.get(
    sys.platform, "rxt_edge_kernels.dll"
)
MATMUL_ENV = "RXT_EDGE_KERNEL_MATMUL_INT4"  # on | off | auto (default)
MATMUL_CONFIG_KEY = "rxt_edge.matmul_int4"  # the session config entry the library reads: "1" or "0"
VNNI_FLAGS = frozenset({"avx_vnni", "avx512_vnni"})
MIN_ONNXRUNTIME = (1, 21)  # the C API version the library is built against (Debian's 1.21 headers)
_OFF = {"off", "0", "no", "false"}


class KernelLibraryError(RuntimeError):
    """The kernel library asked for (RXT_EDGE_KERNELS=path) cannot be used; the message says why."""


def cache_dir() -> Path:
    """Where `rxt-edge kernels build` puts the library: $XDG_CACHE_HOME/rxt-edge/kernels (~/.cache by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rxt-edge" / "kernels"


def default_library() -> Path:
    return cache_dir() / LIBRARY_NAME


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def unsupported_reason() -> str | None:
    """Why this machine cannot run the kernels (x86-64 with AVX2 and FMA, onnxruntime >= 1.21), or None."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the kernels are written for x86-64 (AVX2); this machine is {platform.machine() or 'unknown'}"
    if _version(ort.__version__) < MIN_ONNXRUNTIME:
        need = ".".join(map(str, MIN_ONNXRUNTIME))
        return f"onnxruntime {ort.__version__} is older than {need}, the API the kernels are built for"
    flags = _cpu_flags()
    if flags is not None and not {"avx2", "fma"} <= flags:
        return "this CPU lacks AVX2/FMA, which the kernels use"
    return None


@cache  # read once a process: every session's options ask
def _cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags on Linux; None where they cannot be read (then the build's own check decides)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return None


def matmul_int4_choice() -> tuple[bool, str]:
    """Whether sessions run our 4-bit product kernel, and why (RXT_EDGE_KERNEL_MATMUL_INT4, else the CPU)."""
    setting = os.environ.get(MATMUL_ENV, "auto").strip().lower()
    if setting in ("on", "1", "yes", "true"):
        return True, f"{MATMUL_ENV}={setting}"
    if setting in _OFF:
        return False, f"{MATMUL_ENV}={setting}"
    if setting not in ("", "auto"):
        raise KernelLibraryError(f"{MATMUL_ENV}={setting}: use on, off or auto")
    flags = _cpu_flags()
    if flags is None:
        return False, "the CPU's features are unknown"
    if flags & VNNI_FLAGS:
        return False, "this CPU has VNNI, where onnxruntime's MatMulNBits is as fast"
    return True, "this CPU has no VNNI, where ours is faster"


def chosen_library() -> Path | None:
    """The library CPU sessions register: RXT_EDGE_KERNELS's path, else the built one if present; None if off,
    absent or unusable on this machine. KernelLibraryError where a path was named and cannot be used."""
    setting = os.environ.get(ENV, "").strip()
    if setting.lower() in _OFF:
        return None
    if setting:
        path = Path(setting).expanduser()
        if not path.is_file():
            raise KernelLibraryError(
                f"{ENV}={setting}: no such file (build one with `rxt-edge kernels build`)"
            )
        reason = unsupported_reason()
        if reason:
            raise KernelLibraryError(f"{ENV}={setting}: {reason}")
        return path
    path = default_library()
    return path if path.is_file() and unsupported_reason() is None else None


def register(options: ort.SessionOptions) -> Path | None:
    """Register the chosen library in `options` (a CPU session's); returns it, or None where there is none.
    A built library that onnxruntime refuses is skipped (the graphs' function bodies run instead); a library
    named in RXT_EDGE_KERNELS that it refuses is an error."""
    path = chosen_library()
    if path is None:
        return None
    options.add_session_config_entry(MATMUL_CONFIG_KEY, "1" if matmul_int4_choice()[0] else "0")
    try:
        options.register_custom_ops_library(str(path))
    except Exception as e:  # noqa: BLE001 - onnxruntime raises plain RuntimeErrors (Fail) for a bad library
        if os.environ.get(ENV, "").strip():
            raise KernelLibraryError(f"{ENV}={path}: onnxruntime cannot load it: {e}") from e
        return None
    return path


def session_options(provider: str, threads: int | None = None) -> ort.SessionOptions:
    """`providers.make_session_options`, with our kernel library registered in a CPU session's options."""
    options = providers.make_session_options(provider, threads=threads)
    if providers.canonical_name(provider) == "cpu":
        register(options)
    return options


def status() -> str:
    """One line for `rxt-edge kernels status` and `rxt-edge info`: whether CPU sessions use our kernels."""
    setting = os.environ.get(ENV, "").strip()
    if setting.lower() in _OFF:
        return f"off ({ENV}={setting})"
    reason = unsupported_reason()
    try:
        path = chosen_library()
    except KernelLibraryError as e:
        return f"unusable: {e}"
    if path is not None:
        try:
            matmul, why = matmul_int4_choice()
        except KernelLibraryError as e:
            return f"unusable: {e}"
        who = "ours" if matmul else "onnxruntime's"
        return f"on: {path} (4-bit products: {who}, {why})"
    if reason:
        return f"not available: {reason}"
    return f"not built (`rxt-edge kernels build` puts it at {default_library()})"
