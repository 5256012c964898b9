"""The static decoder's memory cross-attention as one com.microsoft.MultiHeadAttention (export/memory_attention.py).

Checked: the lowering (grouped query heads folded into the query rows) against the torch reference through
onnxruntime's kernel, and the exported tiny package: one fused node per memory layer with the regrouping folded
into the projections (graph_fusions.fold_memory_head_groups), its decoder equal to the torch static decoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from rxt_edge.export.memory_attention import memory_attention, memory_attention_reference, translation_table


class _Cross(torch.nn.Module):
    def __init__(self, q_heads: int):
        super().__init__()
        self.q_heads = q_heads

    def forward(self, q, mem_k, mem_v):
        return memory_attention(q, mem_k, mem_v, self.q_heads)


@pytest.mark.parametrize("q_heads, kv_heads", [(6, 2), (2, 2)])
def test_lowering_matches_the_reference(q_heads: int, kv_heads: int, tmp_path: Path) -> None:
    import onnxruntime as ort
    from torch.export import Dim

    hd, slots = 16, 12
    gen = torch.Generator().manual_seed(q_heads + kv_heads)
    mem_k = torch.randn(1, kv_heads, slots, hd, generator=gen)
    mem_v = torch.randn(1, kv_heads, slots, hd, generator=gen)
    q = torch.randn(1, 3, q_heads * hd, generator=gen)
    program = torch.onnx.export(
        _Cross(q_heads).eval(), (q, mem_k, mem_v), dynamic_shapes=({1: Dim("seq", max=64)}, None, None),
        input_names=["q", "k", "v"], custom_translation_table=translation_table(), dynamo=True, verbose=False,
    )  # fmt: skip
    path = tmp_path / "cross.onnx"
    program.save(str(path))
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("MultiHeadAttention") == 1
    assert ops.count("Transpose") == (2 if q_heads > kv_heads else 0)  # the query regrouping and back
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for t in (1, 5):  # a decode step and a prompt: token rows must not mix with head rows
        q = torch.randn(1, t, q_heads * hd, generator=gen)
        want = memory_attention_reference(q, mem_k, mem_v, q_heads)
        got = sess.run(None, {"q": q.numpy(), "k": mem_k.numpy(), "v": mem_v.numpy()})[0]
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5, err_msg=f"T={t}")


def test_package_decoder_has_one_fused_cross_attention_per_memory_layer(tiny_package: Path) -> None:
    import onnxruntime as ort
    from rxt_edge.export.checkpoints import load_checkpoint

    from rxt_edge.manifest import load_manifest

    dims = load_manifest(tiny_package).model
    graph = onnx.load(str(tiny_package / "decoder.onnx"), load_external_data=False).graph
    producers = {out: n for n in graph.node for out in n.output}
    fused = [n for n in graph.node if n.op_type == "MultiHeadAttention"]
    assert len(fused) == dims.memory_layers and all(n.domain == "com.microsoft" for n in fused)
    model, _ = load_checkpoint(tiny_package.parent / "checkpoint")
    cross = model.decoder.memory_blocks[0].cross_attn.cfg
    assert cross.q_heads > cross.kv_heads  # grouped: the regrouping exists, and was folded away
    assert not any(producers[n.input[0]].op_type == "Transpose" for n in fused)
    assert not any(n.op_type == "Transpose" for n in graph.node)
    # the cross-attention queries rotate from the constant tables GroupQueryAttention reads (export/rotary.py):
    # one RotaryEmbedding per memory layer, no per-step angle computation
    rotary = [n for n in graph.node if n.op_type == "RotaryEmbedding"]
    assert len(rotary) == dims.memory_layers
    assert not any(n.op_type in ("Sin", "Cos") for n in graph.node)

    # the exported decoder (prompt, then a step fed its own cache) against the torch static decoder
    sess = ort.InferenceSession(str(tiny_package / "decoder.onnx"), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(5)
    stm = torch.randn(dims.memory_layers, 1, dims.stm_slots, dims.dim, generator=gen)
    shape = (1, dims.self_kv_heads, dims.max_seq_len, dims.head_dim)
    layers = dims.decoder_layers
    ck, cv = [torch.zeros(shape) for _ in range(layers)], [torch.zeros(shape) for _ in range(layers)]
    ids = torch.randint(5, dims.vocab_size, (1, 7), generator=gen)
    with torch.no_grad():
        mk, mv = model.memory_kv(stm)
        feeds = {f"memory_key.{i}": k.numpy() for i, k in enumerate(mk)}
        feeds |= {f"memory_value.{i}": v.numpy() for i, v in enumerate(mv)}
        onnx_k, onnx_v = [c.numpy() for c in ck], [c.numpy() for c in cv]
        for start, stop in [(0, 6), (6, 7)]:
            seqlens = torch.tensor([stop - 1], dtype=torch.int32)
            want, ck, cv = model.decoder.forward_static(ids[:, start:stop], seqlens, ck, cv, mk, mv)
            run = {"input_ids": ids[:, start:stop].numpy(), "seqlens_k": seqlens.numpy(), **feeds}
            run |= {f"past_key.{i}": k for i, k in enumerate(onnx_k)}
            run |= {f"past_value.{i}": v for i, v in enumerate(onnx_v)}
            out = sess.run(None, run)
            np.testing.assert_allclose(out[0], want.numpy(), atol=1e-4, err_msg=f"rows {start}..{stop}")
            onnx_k, onnx_v = out[1 : 1 + 2 * layers : 2], out[2 : 2 + 2 * layers : 2]
