"""RoPE on the static decoder's cross-attention queries as one com.microsoft.RotaryEmbedding, at positions formed on
the device (export/rotary.py): the lowerings through onnxruntime's kernels against the unfused formulation the
dynamic decoder exports, and the positions against their definition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from rxt_edge.export.layers import apply_rope, rope_angles, rope_tables
from rxt_edge.export.rotary import rotate_queries, step_positions, translation_table


class _Rotate(torch.nn.Module):
    def __init__(self, heads: int):
        super().__init__()
        self.heads = heads

    def forward(self, q, positions, cos_cache, sin_cache):
        return rotate_queries(q, positions, cos_cache, sin_cache, self.heads)


class _Positions(torch.nn.Module):
    def forward(self, input_ids, seqlens_k):
        return step_positions(input_ids, seqlens_k)


def _export(module: torch.nn.Module, args: tuple, shapes: tuple, names: list[str], path: Path) -> list[str]:
    program = torch.onnx.export(
        module.eval(), args, dynamic_shapes=shapes, input_names=names, custom_translation_table=translation_table(),
        dynamo=True, verbose=False,
    )  # fmt: skip
    program.save(str(path))
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_lowering_matches_the_unfused_rope(dtype: torch.dtype, tmp_path: Path) -> None:
    import onnxruntime as ort
    from torch.export import Dim

    heads, hd, max_len, base = 3, 16, 64, 10000.0
    gen = torch.Generator().manual_seed(3)
    cos_t, sin_t = rope_tables(max_len, hd, base, dtype)
    q = torch.randn(1, 2, heads * hd, generator=gen).to(dtype)
    seq = Dim("seq", max=32)
    ops = _export(
        _Rotate(heads), (q, torch.tensor([[0, 1]]), cos_t, sin_t), ({1: seq}, {1: seq}, None, None),
        ["q", "positions", "cos", "sin"], tmp_path / "rotate.onnx",
    )  # fmt: skip
    assert ops == ["RotaryEmbedding"]
    sess = ort.InferenceSession(str(tmp_path / "rotate.onnx"), providers=["CPUExecutionProvider"])
    for start, t in [(0, 5), (37, 1), (max_len - 3, 3)]:  # a prompt, a step, the table's last rows
        q = torch.randn(1, t, heads * hd, generator=gen).to(dtype)
        positions = torch.arange(start, start + t)[None]
        cos, sin = rope_angles(positions[0], hd, base, dtype)
        want = apply_rope(q.view(1, t, heads, hd), cos, sin).reshape(1, t, -1)  # the exported unfused form
        feeds = {"q": q.numpy(), "positions": positions.numpy(), "cos": cos_t.numpy(), "sin": sin_t.numpy()}
        got = sess.run(None, feeds)[0]
        tol = 1e-6 if dtype == torch.float32 else 2e-3
        np.testing.assert_allclose(
            got.astype(np.float32), want.float().numpy(), atol=tol, err_msg=f"{start=}"
        )
        eager = rotate_queries(q, positions, cos_t, sin_t, heads)
        np.testing.assert_allclose(eager.float().numpy(), want.float().numpy(), atol=tol)


def test_positions_are_formed_on_the_device_in_four_kernels(tmp_path: Path) -> None:
    """seqlens_k + 1 - T .. seqlens_k per row, from the ids' count: no host read of a shape value, no Slices."""
    import onnxruntime as ort
    from torch.export import Dim

    ids, lens = torch.zeros(2, 3, dtype=torch.int64), torch.tensor([2, 9], dtype=torch.int32)
    ops = _export(
        _Positions(), (ids, lens), ({0: Dim("batch", max=8), 1: Dim("seq", max=64)}, {0: Dim("batch", max=8)}),
        ["input_ids", "seqlens_k"], tmp_path / "positions.onnx",
    )  # fmt: skip
    assert ops == [
        "Shape",
        "ConstantOfShape",
        "CumSum",
        "Cast",
        "Unsqueeze",
        "Sub",
    ]  # Shape: metadata, no copy
    sess = ort.InferenceSession(str(tmp_path / "positions.onnx"), providers=["CPUExecutionProvider"])
    for lens, t in [([4, 4], 5), ([37, 12], 1), ([63], 3)]:  # prompts, a step, rows at other positions
        ids = np.zeros((len(lens), t), np.int64)
        got = sess.run(None, {"input_ids": ids, "seqlens_k": np.array(lens, np.int32)})[0]
        want = np.array([[n + 1 - t + i for i in range(t)] for n in lens])
        np.testing.assert_array_equal(got, want)
        eager = step_positions(torch.from_numpy(ids), torch.tensor(lens, dtype=torch.int32))
        np.testing.assert_array_equal(eager.numpy(), want)
