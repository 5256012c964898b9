"""Export-time rewrites (export/graph_fusions.py): every interleaved RoPE becomes com.microsoft.RotaryEmbedding,
projections of one input become one MatMul, and the fused package answers exactly as the unfused one (standard
ONNX ops, `--no-fuse`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper


def _ops(path: Path) -> list[onnx.NodeProto]:
    return list(onnx.load(str(path), load_external_data=False).graph.node)


def _pair_swap_matmuls(path: Path) -> int:
    model = onnx.load(str(path))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    count = 0
    for n in model.graph.node:
        r = consts.get(n.input[1]) if n.op_type == "MatMul" else None
        if (
            r is not None
            and r.ndim == 2
            and r.shape[0] == r.shape[1]
            and set(np.unique(r)) <= {-1.0, 0.0, 1.0}
        ):
            count += int(np.abs(r).sum() == r.shape[0])  # a signed permutation
    return count


@pytest.fixture(scope="module")
def unfused_package(cli_unfused_export) -> Path:
    """tiny_package's checkpoint exported with --no-fuse (through the CLI: the export test_cli also reads)."""
    result, package = cli_unfused_export
    assert result.exit_code == 0, result.output + repr(result.exception)
    return package


def test_every_rope_is_fused(tiny_package: Path, unfused_package: Path) -> None:
    from rxt_edge.manifest import load_manifest

    manifest = load_manifest(tiny_package)
    dims = manifest.model
    # decoder: self-attention queries and keys in every layer, memory cross-attention queries in memory layers
    ropes = 2 * dims.decoder_layers + dims.memory_layers
    fused = [n for n in _ops(tiny_package / "decoder.onnx") if n.op_type == "RotaryEmbedding"]
    assert manifest.graphs["decoder"].kv_cache == "static"  # self-attention RoPE inside GroupQueryAttention
    gqa = [n for n in _ops(tiny_package / "decoder.onnx") if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == dims.decoder_layers
    assert all(a.i == 1 for n in gqa for a in n.attribute if a.name in ("do_rotary", "rotary_interleaved"))
    assert len(fused) == dims.memory_layers
    assert all(n.domain == "com.microsoft" for n in fused)
    for graph in ("decoder", "encoder", "memory_update"):
        assert _pair_swap_matmuls(tiny_package / f"{graph}.onnx") == 0, graph
    assert _pair_swap_matmuls(unfused_package / "decoder.onnx") == ropes
    assert not any(n.domain for n in _ops(unfused_package / "decoder.onnx"))


def _weight_matmuls_by_input(path: Path) -> dict[str, int]:
    model = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    counts: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type == "MatMul" and n.input[1] in weights:
            counts[n.input[0]] = counts.get(n.input[0], 0) + 1
    return counts


@pytest.mark.parametrize("graph", ["decoder", "encoder", "memory_update", "memory_kv"])
def test_projections_of_one_input_are_one_matmul(
    tiny_package: Path, unfused_package: Path, graph: str
) -> None:
    fused = _weight_matmuls_by_input(tiny_package / f"{graph}.onnx")
    plain = _weight_matmuls_by_input(unfused_package / f"{graph}.onnx")
    shared = [name for name, count in plain.items() if count >= 2]  # queries/keys/values (or keys/values)
    # one weight MatMul per input (names differ where a fused norm now produces the input)
    assert shared and set(fused.values()) == {1}
    ops = _ops(tiny_package / f"{graph}.onnx")
    splits = sum(n.op_type == "Split" for n in ops)
    # a merged q/k/v projection feeds GroupQueryAttention whole (packed QKV: key and value left empty)
    packed = sum(n.op_type == "GroupQueryAttention" and n.input[1] == "" and n.input[2] == "" for n in ops)
    assert splits + packed >= len(shared)
    if graph == "decoder":
        assert packed == sum(n.op_type == "GroupQueryAttention" for n in ops) > 0


def test_residual_add_and_rms_norm_are_one_op(tiny_package: Path, unfused_package: Path) -> None:
    """Every RMSNorm that reads a residual sum is one SkipSimplifiedLayerNormalization (the decoder's first norm
    reads the embedding: no sum to fuse)."""
    for graph in ("decoder", "encoder"):
        norms = sum(n.op_type == "Sqrt" for n in _ops(unfused_package / f"{graph}.onnx"))
        ops = _ops(tiny_package / f"{graph}.onnx")
        skip = [n for n in ops if n.op_type == "SkipSimplifiedLayerNormalization"]
        assert len(skip) == norms - 1, graph
        assert all(n.domain == "com.microsoft" for n in skip)
        assert sum(n.op_type == "Sqrt" for n in ops) == 1, graph


def test_silu_is_one_quickgelu(tiny_package: Path, unfused_package: Path) -> None:
    """Every SwiGLU SiLU (x * Sigmoid(x)) is one QuickGelu with alpha 1 in the decoder and the encoder; other
    sigmoids (gates: sigmoid(g) * y) stay."""
    for graph in ("decoder", "encoder"):
        plain = _ops(unfused_package / f"{graph}.onnx")
        sigmoid_of = {n.output[0]: n.input[0] for n in plain if n.op_type == "Sigmoid"}
        silus = sum(
            n.op_type == "Mul" and sigmoid_of.get(n.input[1], sigmoid_of.get(n.input[0])) in n.input
            for n in plain
        )
        ops = _ops(tiny_package / f"{graph}.onnx")
        quick = [n for n in ops if n.op_type == "QuickGelu"]
        assert silus > 0 and len(quick) == silus, graph
        assert all(n.domain == "com.microsoft" and n.attribute[0].f == 1.0 for n in quick)
        assert sum(n.op_type == "Sigmoid" for n in ops) == len(sigmoid_of) - silus, graph


def test_fused_package_answers_as_the_unfused(tiny_package: Path, unfused_package: Path) -> None:
    from rxt_edge import RxTSession

    runs = []
    for package in (tiny_package, unfused_package):
        with RxTSession.load(package) as session:
            conv = session.conversation()
            answers = [
                list(conv.generate_ids(list(range(7, 7 + 5 * t)), max_new_tokens=12)) for t in (1, 3, 9)
            ]
            conv.wait_memory()
            runs.append((answers, conv.stm().copy()))
    (a_fused, stm_fused), (a_plain, stm_plain) = runs
    assert a_fused == a_plain
    np.testing.assert_allclose(stm_fused, stm_plain, rtol=0, atol=1e-5)


def test_fp16_graphs_fuse_norms_and_keep_unfused_rope(exported) -> None:
    """In float16 graphs a residual sum and the RMSNorm after it (computed in float32 between two Casts) are one
    float16 SkipSimplifiedLayerNormalization, as in float32 graphs; RoPE's cos/sin are cast before use, so the
    RoPE pattern does not match and stays standard ops."""
    pkg = exported("self_interlayer_fp16").package
    for graph in ("decoder", "encoder"):
        ops = _ops(pkg / f"{graph}.onnx")
        skip = [n for n in ops if n.op_type == "SkipSimplifiedLayerNormalization"]
        assert skip and all(n.domain == "com.microsoft" for n in skip), graph
        # only the first norm is left: no residual sum before it
        assert sum(n.op_type == "Sqrt" for n in ops) == 1, graph
        weights = {t.name: t for t in onnx.load(str(pkg / f"{graph}.onnx")).graph.initializer}
        assert all(weights[n.input[2]].data_type == onnx.TensorProto.FLOAT16 for n in skip), graph
    assert not any(n.op_type == "RotaryEmbedding" for n in _ops(pkg / "decoder.onnx"))
