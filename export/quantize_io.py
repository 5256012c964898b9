"""Graph files in and out of `rxt-edge quantize` at sizes past protobuf's 2 GB (a Beta-sized decoder is 11 GB).

Two things break or blow up there with a plain `onnx.load(load_external_data=True)`:
- `ModelProto.ByteSize()` raises EncodeError past 2 GB, so "is it big?" is asked per initializer instead;
- the routed experts (almost all the bytes) would be read whole, and protobuf keeps a removed initializer's
  bytes in its arena until the whole model goes: the fp32 experts stay resident while their QMoE replacements
  are added. So the expert weights are left on disk at load (`defer_experts`) and `quantize_moe` reads them
  one at a time; whatever is still on disk after that is read in by `load_deferred`.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data
from rxt_edge.runtimes.operators import MS_DOMAIN

_EXPERT_INPUTS = (2, 3, 4, 5)  # fc1 weights and bias, fc2 weights and bias of com.microsoft.MoE


def graph_bytes(model: onnx.ModelProto) -> int:
    """The serialized size of the initializers (what decides external data), without serializing the model."""
    return sum(t.ByteSize() for t in model.graph.initializer)


def _expert_tensors(model: onnx.ModelProto) -> set[str]:
    names: set[str] = set()
    for n in model.graph.node:
        if n.domain == MS_DOMAIN and n.op_type == "MoE":
            names.update(n.input[i] for i in _EXPERT_INPUTS if i < len(n.input) and n.input[i])
    return names


def _read_in(t: onnx.TensorProto, base_dir: str) -> None:
    load_external_data_for_tensor(t, base_dir)
    t.data_location = onnx.TensorProto.DEFAULT
    del t.external_data[:]


def load_graph(path: Path, defer_experts: bool = False) -> onnx.ModelProto:
    """The graph with its external data read in, except (`defer_experts`) the MoE expert tensors, which stay
    references into the file beside `path` (read them with `numpy_helper.to_array(t, base_dir)`)."""
    model = onnx.load(str(path), load_external_data=False)
    keep = _expert_tensors(model) if defer_experts else set()
    for t in model.graph.initializer:
        if uses_external_data(t) and t.name not in keep:
            _read_in(t, str(path.parent))
    return model


def load_deferred(model: onnx.ModelProto, base_dir: Path) -> int:
    """Read in every initializer still on disk (experts `quantize_moe` kept fp32); returns how many."""
    left = [t for t in model.graph.initializer if uses_external_data(t)]
    for t in left:
        _read_in(t, str(base_dir))
    return len(left)
