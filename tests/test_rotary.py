"""RoPE on the static decoder's cross-attention queries as one com.microsoft.RotaryEmbedding (export/rotary.py):
the lowering through onnxruntime's kernel against the unfused formulation the dynamic decoder exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from rxt_edge.export.layers import apply_rope, rope_angles, rope_tables
from rxt_edge.export.rotary import rotate_queries, translation_table


class _Rotate(torch.nn.Module):
    def __init__(self, heads: int):
        super().__init__()
        self.heads = heads

    def forward(self, q, start, cos_cache, sin_cache):
        return rotate_queries(q, start, cos_cache, sin_cache, self.heads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_lowering_matches_the_unfused_rope(dtype: torch.dtype, tmp_path: Path) -> None:
    import onnxruntime as ort
    from torch.export import Dim

    heads, hd, max_len, base = 3, 16, 64, 10000.0
    gen = torch.Generator().manual_seed(3)
    cos_t, sin_t = rope_tables(max_len, hd, base, dtype)
    q = torch.randn(1, 2, heads * hd, generator=gen).to(dtype)
    program = torch.onnx.export(
        _Rotate(heads).eval(), (q, torch.tensor([0]), cos_t, sin_t), dynamic_shapes=({1: Dim("seq", max=32)}, None,
        None, None), input_names=["q", "start", "cos", "sin"], custom_translation_table=translation_table(),
        dynamo=True, verbose=False,
    )  # fmt: skip
    path = tmp_path / "rotate.onnx"
    program.save(str(path))
    assert [n.op_type for n in onnx.load(str(path)).graph.node] == ["RotaryEmbedding"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for start, t in [(0, 5), (37, 1), (max_len - 3, 3)]:  # a prompt, a step, the table's last rows
        q = torch.randn(1, t, heads * hd, generator=gen).to(dtype)
        cos, sin = rope_angles(torch.arange(start, start + t), hd, base, dtype)
        want = apply_rope(q.view(1, t, heads, hd), cos, sin).reshape(1, t, -1)  # the exported unfused form
        feeds = {"q": q.numpy(), "start": np.array([start]), "cos": cos_t.numpy(), "sin": sin_t.numpy()}
        got = sess.run(None, feeds)[0]
        tol = 1e-6 if dtype == torch.float32 else 2e-3
        np.testing.assert_allclose(
            got.astype(np.float32), want.float().numpy(), atol=tol, err_msg=f"{start=}"
        )
        eager = rotate_queries(q, torch.tensor([start]), cos_t, sin_t, heads)
        np.testing.assert_allclose(eager.float().numpy(), want.float().numpy(), atol=tol)
