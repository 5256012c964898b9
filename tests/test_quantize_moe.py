"""Quantized routed experts (export/quantize_moe.py): MoE nodes become QMoE nodes that compute our MoE.

The reference is the torch layer (rxlm's routing: softmax over all experts, top-k renormalised, SwiGLU with the
linear half first, bias modes, shared experts) with its expert weights replaced by the dequantized ones, read
back from the QMoE initializers through the inverse of the exporter's layout. Against it only the kernel's
int8 activation rounding remains; against the fp32 layer the weight quantization adds its own error. A wrong
layout (interleave order, nibble order, transposition) or routing gives errors of the order of the output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from rxt_edge.bench.quant_report import compare_packages
from rxt_edge.export.quantize import quantize_package
from rxt_edge.export.quantize_moe import STACKED_NOTE, block_dequantize, block_quantize, quantize_experts
from test_moe import CASES, DIM, _export, _layer

# bits -> (max error vs the dequantized-weight layer, max error vs the fp32 layer), relative to max |output|
BOUNDS = {8: (0.03, 0.04), 4: (0.03, 0.25)}


def _qmoe(graph: onnx.ModelProto, k: int) -> onnx.NodeProto:
    """The QMoE node choosing k experts (the routed experts' top-k, or the number of shared experts)."""
    (node,) = [
        n
        for n in graph.graph.node
        if n.op_type == "QMoE" and next(a.i for a in n.attribute if a.name == "k") == k
    ]
    return node


def _dequantized_canonical(graph: onnx.ModelProto, k: int, gated: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights of the QMoE node choosing k experts as the canonical w1 [E, D, H'] (linear half first) and
    w2 [E, H, D]."""
    node = _qmoe(graph, k)
    inits = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    bits = next(a.i for a in node.attribute if a.name == "expert_weight_bits")

    def weights(i: int) -> np.ndarray:  # scales [E, N, K / block], or [E, N]: one per row (block 0)
        q = inits[node.input[i]]
        return block_dequantize(q, inits[node.input[i + 1]].reshape(*q.shape[:2], -1), bits)

    fc1, fc2 = weights(2), weights(5)  # [E, H', D], [E, D, H]
    if gated:  # rows interleaved gate, linear, gate, ... -> [linear | gate]
        fc1 = np.concatenate([fc1[:, 1::2], fc1[:, 0::2]], axis=1)
    return torch.from_numpy(fc1.transpose(0, 2, 1).copy()), torch.from_numpy(fc2.transpose(0, 2, 1).copy())


@pytest.fixture(scope="module")
def exported_layer(tmp_path_factory: pytest.TempPathFactory):
    """case -> (torch layer, path of its exported graph), each exported once."""
    done: dict[int, tuple] = {}

    def get(case: int):
        if case not in done:
            layer = _layer(11 + case, **CASES[case])
            path = tmp_path_factory.mktemp(f"moe_layer{case}") / "moe.onnx"
            _export(layer, True, path)
            done[case] = layer, path
        return done[case]

    return get


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("case", [0, 1, 3])  # SwiGLU global / local bias + weighted shared; relu experts
def test_qmoe_computes_our_moe_up_to_quantization(
    exported_layer, case: int, bits: int, tmp_path: Path
) -> None:
    kw = CASES[case]
    layer, path = exported_layer(case)
    graph = onnx.load(str(path))
    moes = [n for n in graph.graph.node if n.op_type == "MoE"]
    fp32_weights = {n.input[i] for n in moes for i in (2, 4)}
    record = quantize_experts(graph, f"int{bits}-block")
    # several shared experts are a MoE node of their own: quantized too, nothing kept fp32
    shared = kw.get("num_shared_experts", 0) > 1
    assert record["qmoe_nodes"] == 1 + shared and record["bits"] == bits
    assert record["kept_fp32"] == {}
    assert not [n for n in graph.graph.node if n.op_type == "MoE"]
    assert not fp32_weights & {t.name for t in graph.graph.initializer}  # stored once, quantized
    onnx.save(graph, str(tmp_path / "q.onnx"))
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])

    gated = kw.get("gated", True)
    deq = _layer(11 + case, **kw)
    with torch.no_grad():
        for w, k, prefix in [
            (deq.w1, kw["top_k"], ""),
            (deq.shared_w1, kw.get("num_shared_experts"), "shared_"),
        ]:
            if w is not None:
                w1, w2 = _dequantized_canonical(graph, k, gated)
                getattr(deq, f"{prefix}w1").copy_(w1)
                getattr(deq, f"{prefix}w2").copy_(w2)
    gen = torch.Generator().manual_seed(12)
    for shape in [(1, 1), (2, 3), (1, 40)]:
        x = torch.randn(*shape, DIM, generator=gen)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            exact, near = layer(x).numpy(), deq(x).numpy()
        scale = np.abs(exact).max()
        to_deq, to_fp32 = BOUNDS[bits]
        assert np.abs(got - near).max() <= to_deq * scale
        assert np.abs(got - exact).max() <= to_fp32 * scale


def test_stacked_experts_of_the_standard_export_are_named_as_kept_fp32(tmp_path: Path) -> None:
    """--no-fuse: routed and shared experts are MatMuls over [E, K, N] weights, which stay fp32 and say so."""
    _export(_layer(11, **CASES[0]), False, tmp_path / "moe.onnx")
    record = quantize_experts(onnx.load(str(tmp_path / "moe.onnx")), "int8-block")
    assert record["qmoe_nodes"] == 0
    assert list(record["kept_fp32"].values()) == [STACKED_NOTE] * 4  # fc1 and fc2, routed and shared


def test_block_quantize_matches_onnxruntime_quantizer() -> None:
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    w = np.random.default_rng(0).standard_normal((48, 64)).astype(np.float32)  # [N, K]
    for bits, fn in ((4, quantize_matmul_4bits), (8, quantize_matmul_8bits)):
        packed = np.zeros((48, 2, 32 * bits // 8), np.uint8)
        scales = np.zeros((48, 2), np.float32)
        fn(packed, np.ascontiguousarray(w.T), scales, np.zeros((48, 2), np.uint8), 32, 48, 64, True)
        q, s = block_quantize(w, bits, 32)
        np.testing.assert_array_equal(s, scales)
        codes = [np.stack([a & 15, a >> 4], -1) if bits == 4 else a for a in (q, packed.reshape(48, -1))]
        diff = np.abs(codes[0].astype(int) - codes[1].reshape(codes[0].shape).astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # a rounding tie at most, here and there
        assert np.abs(block_dequantize(q, s, bits) - w).max() <= np.abs(s).max() * (1 if bits == 4 else 0.51)


def _moe_graph(swiglu_fusion: int = 1, hidden: int = 32, fc3: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    e, d = 16, 32
    inits = {
        "fc1": rng.standard_normal((e, 2 * hidden, d)).astype(np.float32),
        "fc2": rng.standard_normal((e, d, hidden)).astype(np.float32),
    }
    inputs = ["x", "router", "fc1", "", "fc2", ""] + (["fc1", ""] if fc3 else [])
    node = helper.make_node(
        "MoE", inputs, ["y"], name="moe0", domain="com.microsoft", k=4, activation_type="swiglu",
        swiglu_fusion=swiglu_fusion, normalize_routing_weights=1,
    )  # fmt: skip
    g = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["N", s])
            for n, s in (("x", d), ("router", e))
        ],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", d])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    )


@pytest.mark.parametrize(
    ("kw", "scheme", "why"),
    [
        (dict(swiglu_fusion=2), "int8-block", "swiglu_fusion=2"),
        (dict(fc3=True), "int4-block", "fc3"),
        (dict(hidden=9), "int4-block", "byte-aligned"),
    ],
)
def test_unsupported_nodes_stay_fp32_with_a_reason(kw: dict, scheme: str, why: str) -> None:
    graph = _moe_graph(**kw)
    record = quantize_experts(graph, scheme)
    assert record["qmoe_nodes"] == 0 and why in record["kept_fp32"]["moe0"]
    assert [n.op_type for n in graph.graph.node] == ["MoE"]
    assert {t.name for t in graph.graph.initializer} == {"fc1", "fc2"}


def test_odd_hidden_uses_one_scale_per_row_at_8_bits() -> None:
    graph = _moe_graph(hidden=9)
    record = quantize_experts(graph, "int8-dynamic")
    assert record["qmoe_nodes"] == 1 and record["block_sizes"] == [0]
    assert quantize_experts(_moe_graph(), "fp16") is None


@pytest.mark.parametrize(
    ("scheme", "bits", "min_top1", "max_kl"), [("int8-dynamic", 8, 0.85, 1e-3), ("int4-block", 4, 0.7, 5e-2)]
)
def test_package_schemes_cover_the_experts(exported, tmp_path: Path, scheme, bits, min_top1, max_kl) -> None:
    """Every MoE node of an exported package becomes QMoE; the manifest records it; the report covers it."""
    src = exported("moe_stateless_revsqa").package
    moe_nodes = sum(n.op_type == "MoE" for n in onnx.load(str(src / "decoder.onnx")).graph.node)
    assert moe_nodes >= 2
    out = quantize_package(src, tmp_path / scheme, scheme).output
    ops = [n.op_type for n in onnx.load(str(out / "decoder.onnx")).graph.node]
    assert ops.count("QMoE") == moe_nodes and "MoE" not in ops
    record = json.loads((out / "manifest.json").read_text())["quantization"]["experts"]
    assert record == {
        "decoder": {
            "op": "com.microsoft.QMoE",
            "qmoe_nodes": moe_nodes,
            "bits": bits,
            "block_sizes": [32],
            "accuracy_level": 4,
            "symmetric": True,
            "kept_fp32": {},
        }
    }
    report = compare_packages(src, out, max_new_tokens=12, threads=1, speed=False)
    assert report.teacher_forced_top1_agreement >= min_top1 and report.mean_kl <= max_kl
    assert report.notes == [f"decoder: {moe_nodes} MoE node(s) as QMoE, {bits}-bit, block 32"]
