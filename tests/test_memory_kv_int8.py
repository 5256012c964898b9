"""The int8 memory cross-attention K/V (`rxt-edge quantize --memory-kv int8`, export/quantize_memory_kv.py).

Checked against the same scheme with float memory K/V: the in-graph quantizer is exact to half a step, the
decoder's DynamicQuantizeMatMul attention stays close to the MultiHeadAttention it replaces, the runtime and the
manifest carry the form, and what cannot take it is refused by name."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from rxt_edge.export import quantize_memory_kv
from rxt_edge.export.graph_driver import GraphDriver
from rxt_edge.export.quantize import QuantizeError, default_memory_kv, quantize_package
from rxt_edge.export.quantize_memory_kv import dequantized

from rxt_edge import RxTSession, contract
from rxt_edge.manifest import ManifestError, load_manifest


@pytest.fixture(scope="module")
def forms(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("memory_kv")
    return {
        form: quantize_package(tiny_package, root / form, "int8", memory_kv=form).output
        for form in contract.MEMORY_KVS
    }


def test_manifest_declares_the_form_on_the_memory_graphs(forms: dict[str, Path]) -> None:
    m = load_manifest(forms["int8"])
    assert {g: e.memory_kv for g, e in m.graphs.items()} == {
        contract.DECODER: "int8",
        contract.ENCODER: "float",
        contract.MEMORY_UPDATE: "int8",
        contract.MEMORY_KV: "int8",
    }
    assert m.quantization["memory_kv"] == "int8"
    assert (m.format_version, load_manifest(forms["float"]).format_version) == (4, 3)  # only int8 needs 4
    key = next(t for t in m.graphs[contract.DECODER].inputs if t.name == contract.memory_key(0))
    d = m.model
    assert (key.dtype, key.shape) == ("int8", ("batch", d.cross_kv_heads, d.head_dim, d.stm_slots))
    for graph in (contract.DECODER, contract.MEMORY_UPDATE, contract.MEMORY_KV):  # valid ONNX, types inferred
        onnx.checker.check_model(str(forms["int8"] / f"{graph}.onnx"), full_check=True)
    decoder = onnx.load(str(forms["int8"] / "decoder.onnx"))
    ops, body = (
        {n.op_type for n in decoder.graph.node},
        {n.op_type for f in decoder.functions for n in f.node},
    )
    assert "MemoryAttentionInt8" in ops and "MultiHeadAttention" not in ops
    assert "DynamicQuantizeMatMul" in body  # the function's body: what onnxruntime runs without our kernel
    assert load_manifest(forms["float"]).graphs[contract.DECODER].memory_kv == "float"


def test_quantized_memory_kv_is_the_float_one_to_half_a_step(forms: dict[str, Path]) -> None:
    f, q = GraphDriver.load(forms["float"], threads=1), GraphDriver.load(forms["int8"], threads=1)
    rng = np.random.default_rng(0)
    stm = rng.standard_normal(np.load(forms["float"] / "initial_stm.npy").shape).astype(np.float32)
    ref, got = f.memory_kv(stm), q.memory_kv(stm)
    assert len(got) == 2 * len(ref)
    for i, (want, have) in enumerate(zip(ref, dequantized(got), strict=True)):
        scale = got[4 * (i // 2) + 1] if i % 2 == 0 else got[4 * (i // 2) + 3]
        step = scale[:, None] if i % 2 == 0 else scale  # keys: per slot; values: per channel
        assert np.all(np.abs(have - want) <= step / 2 + 1e-6), f"memory tensor {i}"
        assert np.abs(want).max() > 0.1  # not a vacuous comparison


def test_quantized_memory_kv_spans_seven_bits(forms: dict[str, Path]) -> None:
    """Every key slot and value channel uses [-63, 63] and reaches its end: 7 bits, so onnxruntime's AVX2 uint8 x
    int8 product (pairs summed in int16) cannot saturate (255 x 63 x 2 < 32768; with 127 it did, and the demo
    misspelt recalled values)."""
    q = GraphDriver.load(forms["int8"], threads=1)
    stm = np.random.default_rng(2).standard_normal(np.load(forms["int8"] / "initial_stm.npy").shape)
    got = q.memory_kv(stm.astype(np.float32))
    for key, value in zip(got[0::4], got[2::4], strict=True):
        for tensor, axes in (
            (key, (0, 1, 2)),
            (value, (0, 1, 2)),
        ):  # keys [B, H, hd, S], values [B, H, S, hd]
            peak = np.abs(tensor.astype(np.int32)).max(axis=axes)  # per slot (keys) / per channel (values)
            assert tensor.dtype == np.int8 and peak.max() == 63 and peak.min() == 63


def test_decoder_logits_stay_close_to_the_float_form(forms: dict[str, Path]) -> None:
    f, q = GraphDriver.load(forms["float"], threads=1), GraphDriver.load(forms["int8"], threads=1)
    shape = np.load(forms["float"] / "initial_stm.npy").shape  # (the tiny package's own STM is zeros)
    stm = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    prompt = f.prompt([5, 17, 42, 99, 7])
    answer, _ = f.answer_logits(stm, prompt, None, 12)
    (_, lf), (_, lq) = (d.answer_logits(stm, prompt, answer, 12) for d in (f, q))  # teacher-forced alike
    spread = float(np.abs(lf).max())
    assert float(np.abs(lf - lq).max()) < 0.05 * spread
    assert float(np.abs(lf - lq).max()) > 0  # the int8 path is really taken


def test_memory_attention_path_has_no_reshape_pairs_and_no_scale_mul(forms: dict[str, Path]) -> None:
    """Each memory layer reads its int8 K/V through the one `MemoryAttentionInt8` node and a Reshape: the
    exporter's Reshapes on either side are merged into the path's own and the softmax scale is in the query
    projection's weights (at one thread every node costs microseconds of a millisecond decode step)."""
    g = onnx.load(str(forms["int8"] / "decoder.onnx")).graph
    produced = {o: n for n in g.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    projections = ("MatMulNBits", "MatMul")
    for i in range(load_manifest(forms["int8"]).model.memory_layers):
        node = next(n for n in g.node if list(n.input[1:2]) == [contract.memory_key(i)])
        back = []
        while node.op_type not in ("RotaryEmbedding", *projections):
            node = produced[node.input[0]]
            back.append(node.op_type)
        node = next(n for n in g.node if contract.memory_value(i) in n.input)
        assert node.op_type == "MemoryAttentionInt8"
        forward = []
        while node.op_type not in projections:
            (node,) = readers[node.output[0]]
            forward.append(node.op_type)
        assert (back, forward) == (["RotaryEmbedding"], ["Reshape", "MatMulNBits"])


def _decoder_outputs(model: onnx.ModelProto, count: int) -> list[np.ndarray]:
    """The first `count` outputs of one decoder step (3 new tokens after 5 cached) on fixed random inputs."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng, feeds = np.random.default_rng(3), {}
    for spec in session.get_inputs():
        shape = [3 if d == "seq" else 1 if isinstance(d, str) else d for d in spec.shape]
        if spec.name == contract.SEQLENS:
            feeds[spec.name] = np.array([5 + 3 - 1], np.int32)
        elif spec.type == "tensor(int64)":
            feeds[spec.name] = rng.integers(0, 300, shape)
        elif spec.type == "tensor(int8)":
            feeds[spec.name] = rng.integers(-63, 64, shape).astype(np.int8)
        elif "scale" in spec.name:
            feeds[spec.name] = rng.uniform(0.01, 0.03, shape).astype(np.float32)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return session.run(None, feeds)[:count]


def test_rewrite_keeps_reshapes_and_scale_where_the_query_is_read_elsewhere(tiny_package: Path) -> None:
    """Merging the query's Reshapes or scaling its projection would change another reader of the query (here a
    graph output): that layer keeps its Reshape pair and the scale Mul, and the decoder computes the same."""
    m = load_manifest(tiny_package)
    folded = onnx.load(str(tiny_package / m.graphs[contract.DECODER].file))
    kept = onnx.ModelProto()
    kept.CopyFrom(folded)
    query = next(n for n in kept.graph.node if n.op_type == "MultiHeadAttention").input[0]
    kept.graph.output.append(onnx.helper.make_tensor_value_info(query, onnx.TensorProto.FLOAT, [None] * 3))
    for model in (folded, kept):
        quantize_memory_kv.rewrite(model, contract.DECODER, m.model, m.graphs[contract.DECODER].kv_cache)
        onnx.checker.check_model(model, full_check=True)
    ops, extra = Counter(n.op_type for n in folded.graph.node), Counter(n.op_type for n in kept.graph.node)
    assert ops["Mul"] + 1 == extra["Mul"] and ops["Reshape"] + 1 == extra["Reshape"]
    count = len(folded.graph.output)
    for want, have in zip(_decoder_outputs(kept, count), _decoder_outputs(folded, count), strict=True):
        assert np.abs(have - want).max() <= 1e-3 * np.abs(want).max()


def test_the_scale_fold_scales_weight_and_bias_and_copies_a_shared_weight() -> None:
    """`_fold_scale` through MatMul, bias Add and a view: the query comes out times the scale, and a weight that
    another MatMul also reads is scaled in a copy (that reader computes what it did)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    w, b = rng.standard_normal((8, 6)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["xb"]),
            helper.make_node("Reshape", ["xb", "shape"], ["q"]),
            helper.make_node("Identity", ["q"], ["y"]),  # the attention's place
            helper.make_node("MatMul", ["x", "w"], ["other"]),
        ],
        "fold",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "other")],
        [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (np.array([2, 3, 2]), "shape"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = {"x": rng.standard_normal((2, 8)).astype(np.float32)}
    before = ort.InferenceSession(model.SerializeToString()).run(None, x)
    index = quantize_memory_kv._Index(model.graph)
    assert quantize_memory_kv._fold_scale(model, index, "q", 0.25)
    after = ort.InferenceSession(model.SerializeToString()).run(None, x)
    np.testing.assert_allclose(after[0], 0.25 * before[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(after[1], before[1])
    assert not quantize_memory_kv._fold_scale(model, quantize_memory_kv._Index(model.graph), "y", 0.25)


def test_runtime_runs_a_conversation_with_int8_memory(forms: dict[str, Path]) -> None:
    session = RxTSession.load(forms["int8"], threads=1)
    try:
        conv = session.conversation()
        for query in ([5, 17, 42], [9, 8, 7, 6]):
            answer = list(conv.generate_ids(query, max_new_tokens=6, ignore_eos=True))
            assert len(answer) == 6
            conv.wait_memory()
        memory = conv._state  # the conversation's double-buffered STM and K/V
        assert memory.kv[memory.active][contract.memory_key(0)].data_type() == "tensor(int8)"
    finally:
        session.close()


def test_graphs_that_disagree_on_the_form_are_refused(forms: dict[str, Path], tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    shutil.copytree(forms["int8"], pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["graphs"][contract.MEMORY_KV]["memory_kv"] = "float"
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError):  # its outputs no longer match the contract, or the forms disagree
        load_manifest(pkg)
    manifest["graphs"][contract.ENCODER]["memory_kv"] = "int8"
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="encoder"):
        load_manifest(pkg)


def test_what_cannot_take_int8_memory_is_refused(tiny_package: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="CPU form"):
        quantize_package(tiny_package, tmp_path / "fp16", "fp16", memory_kv="int8")
    with pytest.raises(QuantizeError, match="memory_kv"):
        quantize_package(tiny_package, tmp_path / "bad", "int8", memory_kv="int4")
    assert not (tmp_path / "fp16").exists() and not (tmp_path / "bad").exists()


def test_int8_is_the_default_where_it_runs_and_pays(
    tiny_package: Path, cli_unfused_export, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not asked for a form, quantize writes int8 for a CPU scheme of a static-cache export whose K/V are large
    enough to pay, and float elsewhere: an unfused export (no fused memory attention to rewrite), small K/V (the
    tiny package's, the demo's, alpha-micro's: faster in float, docs/quantization.md); fp16 (GPUs) takes the
    expanded form (tests/test_memory_kv_expanded.py)."""

    def dims(layers: int, heads: int, slots: int, head_dim: int) -> contract.ModelDims:
        return contract.ModelDims(1000, 64, layers, layers, slots, head_dim, heads, heads, 128)

    pays = quantize_memory_kv.int8_memory_kv_pays
    assert not pays(dims(4, 2, 48, 32)) and not pays(dims(6, 4, 256, 16))  # the demo, alpha-micro
    assert pays(dims(8, 4, 1024, 32)) and pays(dims(21, 4, 4096, 32))  # alpha-mini, RxT-Beta
    assert [default_memory_kv(tiny_package, s) for s in ("int8", "int4", "fp16")] == [
        "float",
        "float",
        "expanded",
    ]

    monkeypatch.setattr(
        quantize_memory_kv, "INT8_MEMORY_KV_FROM_BYTES", 0
    )  # the tiny package's K/V now "pay"
    assert [default_memory_kv(tiny_package, s) for s in ("int8", "int4", "int8-dynamic", "fp16")] == [
        "int8",
        "int8",
        "int8",
        "expanded",
    ]
    m = quantize_package(tiny_package, tmp_path / "int4", "int4").manifest
    assert (m.quantization["memory_kv"], m.graphs[contract.MEMORY_UPDATE].memory_kv, m.format_version) == (
        "int8",
        "int8",
        4,
    )
    assert m.graphs[contract.MEMORY_UPDATE].precision == "fp32"  # rewritten for the form, weights untouched
    _, unfused = cli_unfused_export
    assert default_memory_kv(unfused, "int8") == "float"
    m = quantize_package(unfused, tmp_path / "unfused-int8", "int8").manifest
    assert (m.quantization["memory_kv"], m.graphs[contract.DECODER].memory_kv, m.format_version) == (
        "float",
        "float",
        3,
    )


def test_floor_ratio_counts_the_stm_kv_bytes_as_stored(forms: dict[str, Path]) -> None:
    """The bandwidth floor's STM K/V share (bench/machine.py) follows the package's form: int8 keys and values
    plus their float32 scales, a quarter of float32's and a little more."""
    from rxt_edge.bench.machine import decoder_bytes_per_token

    d = load_manifest(forms["float"]).model
    values = 2 * d.memory_layers * d.cross_kv_heads * d.stm_slots * d.head_dim
    scales = d.memory_layers * (d.stm_slots + d.head_dim) * 4
    assert decoder_bytes_per_token(forms["float"])["stm_kv"] == 4 * values
    assert decoder_bytes_per_token(forms["int8"])["stm_kv"] == values + scales
