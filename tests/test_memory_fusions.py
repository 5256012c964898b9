"""The per-turn graphs (encoder, memory update, memory K/V) fused: every attention one com.microsoft.MultiHeadAttention
(export/turn_attention.py), the grouped-head re-layout folded into the weights, repeated subexpressions, Constant
nodes and Reshape chains cleaned up (export/memory_fusions.py), the numbers those of the torch model.

Checked: the lowering against the torch reference through onnxruntime's kernel (grouped heads, padding), the
Reshape clean-up on a hand-made graph (including the chain it must keep), and tiny exports (the session's
tiny_package; one grouped memory attention exported alone) against the torch model with a padded batch row.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from rxt_edge.export import turn_attention


def _ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def _padded_mask(batch: int, length: int, keep: int) -> torch.Tensor:
    """All ones but the last batch row, which has `keep` tokens and padding after them."""
    mask = torch.ones(batch, length, dtype=torch.int64)
    mask[-1, keep:] = 0
    return mask


class _Attend(torch.nn.Module):
    def __init__(self, q_heads: int, kv_heads: int, masked: bool):
        super().__init__()
        self.heads, self.masked = (q_heads, kv_heads), masked

    def forward(self, q, k, v, mask):
        return turn_attention.turn_attention(q, k, v, mask if self.masked else None, *self.heads)


@pytest.mark.parametrize("q_heads, kv_heads, masked", [(4, 2, True), (2, 2, False)])
def test_lowering_matches_the_reference(q_heads: int, kv_heads: int, masked: bool, tmp_path: Path) -> None:
    import onnxruntime as ort
    from torch.export import Dim

    hd, batch = 8, 2
    gen = torch.Generator().manual_seed(q_heads * 10 + kv_heads + masked)

    def inputs(t: int, s: int):
        return (
            torch.randn(batch, t, q_heads * hd, generator=gen),
            torch.randn(batch, s, kv_heads * hd, generator=gen),
            torch.randn(batch, s, kv_heads * hd, generator=gen),
            _padded_mask(batch, s, s - 2),
        )

    seq, keys = Dim("seq", max=64), Dim("keys", max=64)
    with turn_attention.fused_export():
        program = torch.onnx.export(
            _Attend(q_heads, kv_heads, masked).eval(), inputs(3, 5),
            dynamic_shapes=({1: seq}, {1: keys}, {1: keys}, {1: keys}), input_names=["q", "k", "v", "mask"],
            custom_translation_table=turn_attention.translation_table(), dynamo=True, verbose=False,
        )  # fmt: skip
    path = tmp_path / "attend.onnx"
    program.save(str(path))
    ops = _ops(path)
    assert ops["MultiHeadAttention"] == 1 and ops["Softmax"] == 0
    assert ops["Transpose"] == (2 if q_heads > kv_heads else 0)  # the query regrouping and back
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for t, s in ((1, 4), (6, 9)):  # query rows must not mix with head rows; padded keys must get no weight
        q, k, v, mask = inputs(t, s)
        want = turn_attention.turn_attention_reference(q, k, v, mask if masked else None, q_heads, kv_heads)
        feeds = {"q": q, "k": k, "v": v, "mask": mask}
        got = sess.run(None, {n: feeds[n].numpy() for n in names})[0]
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5, err_msg=f"T={t} S={s}")


def test_reshape_chains_collapse_but_keep_a_copied_dim(tmp_path: Path) -> None:
    """x [2, 3, 4]: a view into heads and back is dropped, a chain ending in a constant shape becomes one
    Reshape, a chain whose last shape copies a dim (0) of the middle shape is kept; the outputs are unchanged."""
    import onnx_ir as ir
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from rxt_edge.export.memory_fusions import _collapse_reshapes

    def shape(name: str, *dims: int):
        return numpy_helper.from_array(np.array(dims, dtype=np.int64), name)

    nodes = [
        helper.make_node("Reshape", ["x", "s_heads"], ["heads"]),  # [2, 3, 2, 2]
        helper.make_node("Reshape", ["heads", "s_back"], ["back"]),  # [2, 3, 4] again
        helper.make_node("Relu", ["back"], ["y0"]),
        helper.make_node("Reshape", ["x", "s_flat"], ["flat"]),  # [6, 4]
        helper.make_node("Reshape", ["flat", "s_rows"], ["y1"]),  # [4, 6]: constant, collapsible
        helper.make_node("Reshape", ["x", "s_swap"], ["swap"]),  # [3, 2, 4]
        helper.make_node("Reshape", ["swap", "s_copy"], ["y2"]),  # [3, 8]: its 0 copies swap's dim 0
    ]
    graph = helper.make_graph(
        nodes, "chains", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y0", "y1", "y2")],
        [shape("s_heads", 2, 3, 2, 2), shape("s_back", 2, 3, 4), shape("s_flat", 6, 4), shape("s_rows", 4, 6),
         shape("s_swap", 3, 2, 4), shape("s_copy", 0, -1)],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto = onnx.shape_inference.infer_shapes(proto)
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)

    def run(p: onnx.ModelProto) -> list[np.ndarray]:
        return ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x}
        )

    model = ir.from_proto(proto)
    assert _collapse_reshapes(model.graph) == 3  # 2 (heads and back) + 1 (flat)
    fused = ir.to_proto(model)
    assert Counter(n.op_type for n in fused.graph.node)["Reshape"] == 3  # y1's, and y2's two
    for got, want in zip(run(fused), run(proto), strict=True):
        np.testing.assert_array_equal(got, want)


def _turn_inputs(dims, batch: int = 2, length: int = 7, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, dims.vocab_size, (batch, length), generator=gen)
    stm = torch.randn(dims.memory_layers, batch, dims.stm_slots, dims.dim, generator=gen)
    return ids, _padded_mask(batch, length, length - 3), stm


def test_package_turn_graphs_are_fused_and_match_the_model(tiny_package: Path) -> None:
    import onnxruntime as ort
    from rxt_edge.export.checkpoints import load_checkpoint
    from rxt_edge.export.graphs import wrapper

    from rxt_edge import contract
    from rxt_edge.manifest import load_manifest

    dims = load_manifest(tiny_package).model
    model, _ = load_checkpoint(tiny_package.parent / "checkpoint")
    encoder_attn = model.cfg.encoder.layers[0].self_attn
    assert encoder_attn.q_heads > encoder_attn.kv_heads  # grouped: the regrouping exists, and was folded away
    aux = model.cfg.memory.variant != "simple"
    kv_outputs = 2 * dims.memory_layers  # memory_key.i / memory_value.i, head-first: one Transpose each
    for name, attentions, transposes in (
        (contract.ENCODER, len(model.cfg.encoder.layers), 0),
        (contract.MEMORY_UPDATE, dims.memory_layers * (2 if aux else 1), kv_outputs),
        (contract.MEMORY_KV, 0, kv_outputs),
    ):
        ops = _ops(tiny_package / f"{name}.onnx")
        assert ops["MultiHeadAttention"] == attentions, name
        assert ops["Softmax"] == 0 and ops["Constant"] == 0, name
        assert ops["Transpose"] == transposes, name

    ids, mask, stm = _turn_inputs(dims)
    with torch.no_grad():
        encoded = model.encoder(ids, mask)
        want = [encoded, *wrapper(model, contract.MEMORY_UPDATE)(stm, encoded, mask)]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1

    def run(name: str, feeds: dict) -> list[np.ndarray]:
        sess = ort.InferenceSession(
            str(tiny_package / f"{name}.onnx"), options, providers=["CPUExecutionProvider"]
        )
        return sess.run(None, {k: v.numpy() for k, v in feeds.items()})

    got = run(contract.ENCODER, {"input_ids": ids, "attention_mask": mask})
    got += run(contract.MEMORY_UPDATE, {"stm": stm, "encoded": encoded, "attention_mask": mask})
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=2e-4, rtol=1e-4)


def test_unfused_export_keeps_standard_attention(cli_unfused_export) -> None:
    result, package = cli_unfused_export
    assert result.exit_code == 0, result.output
    for name in ("encoder", "memory_update"):
        ops = _ops(package / f"{name}.onnx")
        assert ops["MultiHeadAttention"] == 0 and ops["Softmax"] > 0, name


def test_grouped_memory_attention_folds_into_the_weights(tmp_path: Path) -> None:
    """Memory attention of 4 query heads over 2 K/V heads (queries unrotated: no RotaryEmbedding to fold
    across), the "self" variant (a maskless slot self-attention too): fused, folded, equal to the model."""
    import onnxruntime as ort
    from model_configs import SPECIAL
    from rxt_edge.export.config import build_config
    from rxt_edge.export.graphs import model_dims, wrapper
    from rxt_edge.export.model import RxTModel
    from rxt_edge.export.onnx_export import export_graph

    from rxt_edge import contract

    config = build_config(
        vocab=32, dim=16, layers=1, heads=2, kv_heads=2, ffn=32, slots=4, special_tokens=SPECIAL,
        variant="self", memory_heads=(4, 2), max_seq_len=32,
    )  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = RxTModel(config).eval()
        with torch.no_grad():
            for p in model.memory.parameters():
                p.normal_(0.0, 0.5)
    path = tmp_path / "memory_update.onnx"
    with torch.no_grad():
        export_graph(model, contract.MEMORY_UPDATE, path, "fp32", 18)
    ops = _ops(path)
    assert ops["MultiHeadAttention"] == 2 and ops["Softmax"] == 0
    assert ops["Transpose"] == 2  # the K/V outputs' only: both attentions' regroupings were folded

    dims = model_dims(model)
    _, mask, stm = _turn_inputs(dims, seed=4)
    encoded = torch.randn(dims.memory_layers, 2, mask.shape[1], dims.dim)
    with torch.no_grad():
        want = wrapper(model, contract.MEMORY_UPDATE)(stm, encoded, mask)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"stm": stm.numpy(), "encoded": encoded.numpy(), "attention_mask": mask.numpy()})
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-5, rtol=1e-5)


def test_fp16_turn_graphs_fuse_rope_and_attention(exported) -> None:
    """float16 per-turn graphs: RoPE (its cos/sin cast to float16 before use) becomes RotaryEmbedding too, so
    the grouped encoder attention folds as in float32; the decoder's float16 RoPE is left as it was."""
    pkg = exported("self_interlayer_fp16").package
    encoder, memory = _ops(pkg / "encoder.onnx"), _ops(pkg / "memory_update.onnx")
    layers = exported("self_interlayer_fp16").model.cfg.memory_layers
    assert encoder["MultiHeadAttention"] == layers and encoder["RotaryEmbedding"] == 2 * layers
    assert encoder["Transpose"] == 0 and encoder["Sin"] == 1  # the angles, computed once
    assert memory["MultiHeadAttention"] == 2 * layers and memory["RotaryEmbedding"] == layers
    assert memory["Softmax"] == 0 and memory["Transpose"] == 2 * layers  # the K/V outputs' only
