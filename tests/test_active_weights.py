"""Weight bytes per decode step (bench/active_weights.py): what the bandwidth floor divides by the bandwidth.

Hand-built graphs, so every expected number follows from the shapes alone: routed experts at their top-k share
(scales included), shared experts and dense weights whole, embedding tables one row, a tied LM head whole.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from rxt_edge.bench.active_weights import decoder_weight_bytes

V, D, E, K, H = 100, 32, 16, 4, 8


def _init(name: str, shape: tuple[int, ...], dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, dtype), name)


def _graph(tied: bool) -> onnx.ModelProto:
    inits = [
        _init("embed", (V, D)),
        _init("w", (D, D)),
        _init("router", (D, E)),
        # QMoE routed experts, 8-bit blocks of 16: weights [E, N, K] uint8, scales [E, N, K / 16]
        _init("fc1_q", (E, 2 * H, D), np.uint8),
        _init("fc1_s", (E, 2 * H, D // 16)),
        _init("fc2_q", (E, D, H), np.uint8),
        _init("fc2_s", (E, D, 1)),
        # two shared experts through a MoE node with k = 2
        _init("shared_gate", (D, 2)),
        _init("sh1", (2, 2 * H, D)),
        _init("sh2", (2, D, H)),
        _init("unused", (1000,)),
    ]
    if not tied:
        inits.append(_init("lm_head", (D, V)))
    ms = "com.microsoft"
    nodes = [
        helper.make_node("Gather", ["embed", "ids"], ["x0"]),
        helper.make_node("MatMul", ["x0", "w"], ["x"]),
        helper.make_node("MatMul", ["x", "router"], ["logits"]),
        helper.make_node(
            "QMoE", ["x", "logits", "fc1_q", "fc1_s", "", "fc2_q", "fc2_s"], ["routed"], domain=ms, k=K,
            expert_weight_bits=8, activation_type="swiglu", swiglu_fusion=1,
        ),
        helper.make_node("MatMul", ["x", "shared_gate"], ["slog"]),
        helper.make_node(
            "MoE", ["x", "slog", "sh1", "", "sh2"], ["shared"], domain=ms, k=2, normalize_routing_weights=0,
            activation_type="swiglu", swiglu_fusion=1,
        ),
        helper.make_node("Add", ["routed", "shared"], ["h"]),
        helper.make_node("MatMul", ["h", "embed" if tied else "lm_head"], ["logits_out"]),
    ]  # fmt: skip
    if tied:  # [V, D] used as the head: x @ embed^T
        nodes[-1] = helper.make_node("Gemm", ["h", "embed"], ["logits_out"], transB=1)
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("logits_out", onnx.TensorProto.FLOAT, ["N", V])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(ms, 1)])


def test_routed_experts_count_at_their_top_k_share() -> None:
    got = decoder_weight_bytes(_graph(tied=False))
    routed = E * (2 * H * D + 2 * H * (D // 16) * 4 + D * H + D * 4)  # uint8 weights + float32 scales
    assert got["routed_experts_stored"] == routed
    assert got["routed_experts"] == routed * K // E
    assert got["shared_experts"] == 4 * 2 * (2 * H * D + D * H)
    assert got["embedding"] == 4 * D  # one row of the table
    assert got["other"] == 4 * (D * D + D * E + D * 2 + D * V)  # w, router, shared gate, LM head
    assert got["weights"] == sum(
        got[k] for k in ("routed_experts", "shared_experts", "embedding", "rope", "other")
    )
    assert (
        got["stored"]
        == got["routed_experts_stored"] + got["shared_experts"] + 4 * (V * D + 1000) + got["other"]
    )


def test_a_tied_lm_head_reads_the_whole_table() -> None:
    got = decoder_weight_bytes(_graph(tied=True))
    assert got["embedding"] == 0
    assert got["other"] == 4 * (D * D + D * E + D * 2 + V * D)
