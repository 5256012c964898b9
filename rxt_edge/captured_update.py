"""The memory update (encoder + memory attention) on fixed shapes and addresses, replayed from CUDA graphs.

On a GPU the update is launch-bound: hundreds of small kernels per interaction, each launched from the host
(alpha-mini on an H200: ~4 ms, almost all launches). onnxruntime can capture a graph's run once and replay it
with one launch when every run sees the same shapes and device addresses, so this updater pins both:

- the interaction is padded to a length bucket (a power of two from 64, up to the model's `max_seq_len`) with
  attention_mask 0 on the padding, which the encoder and the memory write ignore (the same STM up to rounding);
  one captured graph per bucket, whose graph id is the bucket length;
- ids, mask, encoder output and the STM in and out are buffers of this updater, bound once; the conversation's
  STM is copied in before and the new STM out after, by an Identity graph on the device (onnxruntime's
  `copy_tensors` has no device-to-device path for the built-in CUDA provider). The memory graph's K/V
  outputs land in scratch buffers: a captured decode slot projects its own K/V from the STM at each turn.

Every step runs under the engine's one CUDA-graph lock (a copy or an allocation from another thread would break a
capture in progress). With `capture=False` the same path runs uncaptured on any provider (what the tests check).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from . import contract
from ._protobuf import encode_field
from .contract import ModelDims

if TYPE_CHECKING:
    from .engine import DeviceBuffers, GraphSet, MemoryState

MIN_BUCKET = 64
_ONNX_ELEM_TYPES = {np.dtype(np.float32): 1, np.dtype(np.float16): 10}


def bucket_length(n: int, max_seq_len: int) -> int:
    """The padded length of an n-token interaction: the next power of two >= 64, at most max_seq_len (an
    interaction longer than that keeps its own length)."""
    bucket = max(MIN_BUCKET, 1 << max(0, n - 1).bit_length())
    return max(n, min(bucket, max_seq_len))


class PaddedMemoryUpdate:
    """Encoder + memory update of one engine on padded, fixed buffers (captured as CUDA graphs when `capture`)."""

    def __init__(
        self,
        graphs: GraphSet,
        buffers: DeviceBuffers,
        dims: ModelDims,
        scratch: MemoryState,
        capture: bool = True,
    ):
        self._graphs, self._buffers, self._dims, self._capture = graphs, buffers, dims, capture
        self._stm_in, self._stm_out = scratch.stm  # fixed addresses: bound into every bucket's graphs
        self._kv_scratch = scratch.kv[0]
        self._buckets: dict[int, _Bucket] = {}
        self._copier = _identity_session(graphs, buffers.dtype)

    def __call__(self, memory: MemoryState, interaction: list[int]) -> int:
        """Write the update of `memory`'s active STM by `interaction` into its spare STM; return the spare index
        (the caller swaps). The spare K/V are not written (see the module docstring)."""
        n = len(interaction)
        length = bucket_length(n, self._dims.max_seq_len)
        with self._graphs.lock(contract.ENCODER):  # one lock for every graph of a CUDA-graph engine
            b = self._bucket(length)
            b.ids[0, :n], b.ids[0, n:] = interaction, 0
            b.mask[0, :n], b.mask[0, n:] = 1, 0
            b.ids_dev.update_inplace(b.ids)
            b.mask_dev.update_inplace(b.mask)
            self._copy(memory.stm[memory.active], self._stm_in)
            self._graphs.run(contract.ENCODER, b.encoder, b.options)
            self._graphs.run(contract.MEMORY_UPDATE, b.update, b.options)
            spare = memory.spare
            self._copy(self._stm_out, memory.stm[spare])
        return spare

    def _bucket(self, length: int) -> _Bucket:
        if length not in self._buckets:
            self._buckets[length] = _Bucket(self, length)
        return self._buckets[length]

    def _copy(self, src: ort.OrtValue, dst: ort.OrtValue) -> None:
        binding = self._copier.io_binding()
        binding.bind_ortvalue_input("x", src)
        binding.bind_ortvalue_output("y", dst)
        self._copier.run_with_iobinding(binding)


class _Bucket:
    """One padded length's host and device buffers, its two bindings and its graph id."""

    def __init__(self, update: PaddedMemoryUpdate, length: int):
        buffers, dims, graphs = update._buffers, update._dims, update._graphs
        self.ids = np.zeros((1, length), np.int64)
        self.mask = np.zeros((1, length), np.int64)
        self.ids_dev = ort.OrtValue.ortvalue_from_numpy(self.ids, buffers.device, buffers.device_id)
        self.mask_dev = ort.OrtValue.ortvalue_from_numpy(self.mask, buffers.device, buffers.device_id)
        self.encoded = buffers.empty((dims.memory_layers, 1, length, dims.dim))
        self.encoder = graphs.binding(contract.ENCODER)
        self.encoder.bind_ortvalue_input("input_ids", self.ids_dev)
        self.encoder.bind_ortvalue_input("attention_mask", self.mask_dev)
        self.encoder.bind_ortvalue_output("encoded", self.encoded)
        self.update = graphs.binding(contract.MEMORY_UPDATE)
        self.update.bind_ortvalue_input("stm", update._stm_in)
        self.update.bind_ortvalue_input("encoded", self.encoded)
        self.update.bind_ortvalue_input("attention_mask", self.mask_dev)
        self.update.bind_ortvalue_output("new_stm", update._stm_out)
        for name, buffer in update._kv_scratch.items():
            self.update.bind_ortvalue_output(name, buffer)
        self.options = ort.RunOptions()
        self.options.add_run_config_entry("gpu_graph_id", str(length if update._capture else -1))


def _identity_session(graphs: GraphSet, dtype: np.dtype) -> ort.InferenceSession:
    """A one-node Identity graph on the engine's provider: a device-to-device copy into a bound output."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the node
    plist, popts = graphs.provider_list
    return ort.InferenceSession(identity_model(_ONNX_ELEM_TYPES[np.dtype(dtype)]), options, plist, popts)


def identity_model(elem_type: int, rank: int = 4) -> bytes:
    """ModelProto bytes of y = Identity(x), x a tensor of ONNX `elem_type` and `rank` free dimensions (opset 13,
    IR 8), written here: the runtime has no `onnx` package."""
    f = encode_field
    shape = b"".join(f(1, f(2, f"d{i}")) for i in range(rank))  # TensorShapeProto.dim.dim_param
    tensor = f(1, f(1, elem_type) + f(2, shape))  # TypeProto.tensor_type: elem_type, shape

    def value(name: str) -> bytes:  # ValueInfoProto: name, type
        return f(1, name) + f(2, tensor)

    node = f(1, "x") + f(2, "y") + f(4, "Identity")  # NodeProto: input, output, op_type
    graph = f(1, node) + f(2, "copy") + f(11, value("x")) + f(12, value("y"))  # node, name, input, output
    return f(1, 8) + f(7, graph) + f(8, f(2, 13))  # ir_version, graph, opset_import.version
