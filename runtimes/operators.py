"""Which ONNX operators the installed onnxruntime can run, to refuse a package it cannot run before loading graphs.

A package's manifest lists the operators its graphs use (`requires.ops`: domain -> op types). onnxruntime
would otherwise fail only while creating a session, with a message about one node of one graph; checking the
whole list first names everything missing at once, with what to do about it.

The registry is onnxruntime's schema list (`get_all_operator_schema`, contrib domains included): an operator is
available when onnxruntime knows its schema (every kernel has one; a schema without a kernel is a function that
onnxruntime expands into other operators). The kernel list (`get_all_opkernel_def`) is not asked: it crashed the
process (a segmentation fault) in onnxruntime-gpu 1.31.1 on a machine without TensorRT's libraries. Builds that
do not expose the registry skip the check (session creation still fails then). The bottom layer: imports
nothing from rxt_edge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache

import onnxruntime as ort

from .providers import ProviderUnavailableError

DEFAULT_DOMAINS = ("", "ai.onnx")  # one domain, two spellings
MS_DOMAIN = "com.microsoft"  # onnxruntime's contrib operators (GroupQueryAttention, MoE, MatMulNBits, ...)


class OperatorUnavailableError(ProviderUnavailableError):
    """The package's graphs use operators (or whole operator domains) this onnxruntime build does not have."""


@cache
def available_operators() -> dict[str, frozenset[str]] | None:
    """domain -> operator types this onnxruntime build can run; None when the build does not say."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as capi

        entries = [(s.domain, s.name) for s in capi.get_all_operator_schema()]
    except Exception:  # noqa: BLE001 - a minimal or unusual build: no registry to ask
        return None
    ops: dict[str, set[str]] = {}
    for domain, op in entries:
        ops.setdefault("" if domain in DEFAULT_DOMAINS else domain, set()).add(op)
    return {d: frozenset(o) for d, o in ops.items()}


def missing_operators(
    required: Mapping[str, Iterable[str]], available: Mapping[str, Iterable[str]] | None = None
) -> dict[str, list[str]]:
    """domain -> the required op types `available` (default: this onnxruntime) lacks; {} if none or unknown.

    A domain the runtime does not know at all maps to every op required from it."""
    have = available_operators() if available is None else available
    if have is None:
        return {}
    missing: dict[str, list[str]] = {}
    for domain, ops in required.items():
        known = set(have.get("" if domain in DEFAULT_DOMAINS else domain, ()))
        lacking = sorted(set(ops) - known)
        if lacking:
            missing[domain] = lacking
    return missing


def check_operators(required: Mapping[str, Iterable[str]] | None, what: str = "the package") -> None:
    """OperatorUnavailableError naming every domain and operator `required` that this onnxruntime lacks."""
    if not required:
        return
    have = available_operators()
    missing = missing_operators(required, have)
    if not missing or have is None:
        return
    parts = []
    for domain, ops in sorted(missing.items()):
        name = domain or "ai.onnx"
        if domain not in have and not (domain in DEFAULT_DOMAINS and "" in have):
            parts.append(f"the operator domain {name!r} (needed for {', '.join(ops)})")
        else:
            parts.append(f"{name} operators {', '.join(ops)}")
    raise OperatorUnavailableError(
        f"{what} needs {'; '.join(parts)}, which onnxruntime {ort.__version__} does not provide. "
        "Upgrade onnxruntime (pip install -U onnxruntime), or re-export the model for standard ONNX only "
        "(`rxt-edge export --no-fuse`)"
    )
