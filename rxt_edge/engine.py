"""The four onnxruntime sessions of a package and the device buffers one conversation binds to them.

Buffers live on the execution provider's device as OrtValues. The decoder's self-attention cache is one
preallocated `[max_seq_len, 1, kv_heads, head_dim]` buffer per layer and direction: each step binds its first
`past` rows as `past_*` and the next rows as the `new_*` outputs, so the graph writes new keys/values in place
(nothing copied or reallocated per token; inputs and outputs never overlap). Only token ids go in and one row of
logits comes out per step.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext

import numpy as np
import onnxruntime as ort

from . import contract
from .contract import ModelDims
from .manifest import ManifestError
from .package import ModelPackage
from .runtimes import providers

# onnxruntime's exception types (onnxruntime_pybind11_state) that mean "this graph is bad", as opposed to a
# provider or environment failure (EPFail, RuntimeException, anything else).
_GRAPH_ERRORS = frozenset(
    {"Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NotImplemented"}
)


class GraphSet:
    """One InferenceSession per graph, checked against the manifest's declared I/O."""

    def __init__(self, package: ModelPackage, provider: str = "cpu", threads: int | None = None):
        plist, popts = providers.resolve_provider(provider)
        self.provider = provider
        self.device, self.device_id = providers.device_for(provider)
        self.sessions: dict[str, ort.InferenceSession] = {}
        for name in contract.GRAPH_NAMES:
            opts = providers.make_session_options(provider, threads=threads)
            file = package.manifest.graphs[name].file
            try:
                sess = ort.InferenceSession(
                    str(package.graph_path(name)), opts, providers=plist, provider_options=popts
                )
            except Exception as e:  # onnxruntime raises its own exception types
                if type(e).__name__ in _GRAPH_ERRORS:
                    raise ManifestError(f"graphs.{name}: onnxruntime cannot load {file}: {e}") from e
                raise providers.ProviderUnavailableError(
                    f"graphs.{name}: the {provider!r} execution provider failed to create a session for "
                    f"{file}: {type(e).__name__}: {e}"
                ) from e
            providers.check_session_provider(sess, provider)
            self._check_io(name, sess, package)
            self.sessions[name] = sess
        # DirectML allows one Run at a time per session; other providers are thread-safe.
        self._locks = {n: threading.Lock() if provider == "dml" else nullcontext() for n in self.sessions}

    @staticmethod
    def _check_io(name: str, sess: ort.InferenceSession, package: ModelPackage) -> None:
        entry = package.manifest.graphs[name]
        for kind, declared, actual in (
            ("inputs", entry.inputs, sess.get_inputs()),
            ("outputs", entry.outputs, sess.get_outputs()),
        ):
            got = [a.name for a in actual]
            want = [s.name for s in declared]
            if got != want:
                raise ManifestError(
                    f"graphs.{name}.{kind}: the graph has {got}, the manifest declares {want}"
                )

    def run(self, name: str, binding: ort.IOBinding) -> None:
        with self._locks[name]:
            self.sessions[name].run_with_iobinding(binding)

    def binding(self, name: str) -> ort.IOBinding:
        return self.sessions[name].io_binding()


class DeviceBuffers:
    """Allocation helpers for one device: OrtValues keep their memory alive while referenced."""

    def __init__(self, device: str, device_id: int, dtype: np.dtype):
        self.device, self.device_id, self.dtype = device, device_id, np.dtype(dtype)

    def empty(self, shape: tuple[int, ...]) -> ort.OrtValue:
        if self.device == "cpu":  # aliases numpy memory; zeroed so unused rows are finite
            return ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, self.dtype))
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), self.dtype, self.device, self.device_id)

    def from_numpy(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(
            np.ascontiguousarray(array, self.dtype), self.device, self.device_id
        )


class KVCache:
    """The decoder's self-attention cache: one preallocated sequence-major buffer per layer and direction.

    `bind(binding, past, n)` binds rows [0, past) as `past_*` and rows [past, past+n) as the `new_*` outputs,
    so the graph writes the new keys/values in place: per step only pointers change (names, row size and base
    addresses are computed once here)."""

    def __init__(self, buf: DeviceBuffers, layers: int, max_len: int, kv_heads: int, head_dim: int):
        self.max_len, self._buf = max_len, buf
        self._tail = [1, kv_heads, head_dim]  # batch 1
        self._row_bytes = kv_heads * head_dim * buf.dtype.itemsize
        self.keys = [buf.empty((max_len, *self._tail)) for _ in range(layers)]
        self.values = [buf.empty((max_len, *self._tail)) for _ in range(layers)]
        self._slots = [
            (
                contract.past_key(i),
                contract.past_value(i),
                contract.new_key(i),
                contract.new_value(i),
                k.data_ptr(),
                v.data_ptr(),
            )
            for i, (k, v) in enumerate(zip(self.keys, self.values, strict=True))
        ]

    def bind(self, binding: ort.IOBinding, past: int, n: int) -> None:
        if past + n > self.max_len:
            raise ValueError(f"KV cache overflow: {past} + {n} positions > max_seq_len {self.max_len}")
        dev, dev_id, dt, tail, off = (
            self._buf.device,
            self._buf.device_id,
            self._buf.dtype,
            self._tail,
            past * self._row_bytes,
        )
        for past_k, past_v, new_k, new_v, k_ptr, v_ptr in self._slots:
            binding.bind_input(past_k, dev, dev_id, dt, [past, *tail], k_ptr)
            binding.bind_input(past_v, dev, dev_id, dt, [past, *tail], v_ptr)
            binding.bind_output(new_k, dev, dev_id, dt, [n, *tail], k_ptr + off)
            binding.bind_output(new_v, dev, dev_id, dt, [n, *tail], v_ptr + off)


class StateBuffers:
    """Double-buffered STM and its cross-attention K/V: an update writes the spare set, then the sets swap."""

    def __init__(self, dims: ModelDims, buf: DeviceBuffers):
        stm_shape = (dims.memory_layers, 1, dims.stm_slots, dims.dim)
        kv_shape = (1, dims.cross_kv_heads, dims.stm_slots, dims.head_dim)
        self.stm = [buf.empty(stm_shape) for _ in range(2)]
        self.keys = [[buf.empty(kv_shape) for _ in range(dims.memory_layers)] for _ in range(2)]
        self.values = [[buf.empty(kv_shape) for _ in range(dims.memory_layers)] for _ in range(2)]
        self.active = 0

    @property
    def spare(self) -> int:
        return 1 - self.active

    def bind_kv_outputs(self, binding: ort.IOBinding, which: int) -> None:
        for i, (k, v) in enumerate(zip(self.keys[which], self.values[which], strict=True)):
            binding.bind_ortvalue_output(contract.memory_key(i), k)
            binding.bind_ortvalue_output(contract.memory_value(i), v)

    def bind_kv_inputs(self, binding: ort.IOBinding, which: int) -> None:
        for i, (k, v) in enumerate(zip(self.keys[which], self.values[which], strict=True)):
            binding.bind_ortvalue_input(contract.memory_key(i), k)
            binding.bind_ortvalue_input(contract.memory_value(i), v)
