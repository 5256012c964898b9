"""The greedy pick as a decoder output: `next_token = ArgMax(logits)` in the graph (contract.NEXT_TOKEN).

On a GPU a decode step's own work is a fraction of a millisecond; copying a row of logits to the host (64 KB at
32k tokens in float16) and scanning it there costs a tenth of that again. With the pick in the graph a greedy
step copies one id (the runtime's `DecodeSlot.step_greedy`); sampling still reads the logits, which stay an
output. Written into the GPU packages (float16: `rxt-edge quantize --scheme fp16`, `rxt-edge export --dtype
fp16`); on a CPU the host reads the logits in place and the extra node would only cost time.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from rxt_edge import contract


def writes_next_token(graph: str, float_dtype: str) -> bool:
    """Whether an exported graph carries the pick: float16 decoders (the packages made for GPUs)."""
    return graph == contract.DECODER and float_dtype == "float16"


def add_next_token(model: onnx.ModelProto) -> None:
    """Append the ArgMax over the vocabulary of `logits` ([batch, vocab]) as the last graph output."""
    names = [o.name for o in model.graph.output]
    if "logits" not in names or contract.NEXT_TOKEN in names:
        raise ValueError(f"expected a decoder with a logits output and no {contract.NEXT_TOKEN}, got {names}")
    model.graph.node.append(
        helper.make_node("ArgMax", ["logits"], [contract.NEXT_TOKEN], name="GreedyPick", axis=-1, keepdims=0)
    )
    model.graph.output.append(
        helper.make_tensor_value_info(contract.NEXT_TOKEN, TensorProto.INT64, ["batch"])
    )


def add_next_token_file(path: Path) -> None:
    """`add_next_token` on a graph file in place (its external data, if any, stays where it is)."""
    model = onnx.load(str(path), load_external_data=False)
    add_next_token(model)
    onnx.save(model, str(path))
