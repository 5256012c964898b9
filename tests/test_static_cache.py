"""The static-cache decoder (export/cached_attention.py, docs/graph-contract.md "Decoder variants").

Its self-attention is onnxruntime's GroupQueryAttention over a fixed-size cache updated in place. Checked here:
the torch reference of that op against onnxruntime's kernel itself (so the translation's attributes mean what
the reference does), the static decoder against the dynamic one in torch, a static package against a dynamic
package of the same checkpoint through the runtime, and the refusals. tests/test_export.py drives the exported
graph at the sizes the exporter could freeze (rows written, rows kept).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_configs import tiny_config
from rxt_edge.export.cached_attention import cached_attention_reference
from rxt_edge.export.layers import rope_tables
from rxt_edge.export.model import RxTModel


def _gqa_session(q_heads: int, kv_heads: int, head_dim: int, max_len: int):
    """One GroupQueryAttention node as the exporter emits it (interleaved rotary, total = max_len)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    cos, sin = rope_tables(max_len, head_dim, 10000.0, torch.float32)
    node = helper.make_node(
        "GroupQueryAttention",
        ["q", "k", "v", "pk", "pv", "seqlens_k", "total", "cos", "sin"],
        ["out", "present_k", "present_v"],
        domain="com.microsoft",
        num_heads=q_heads,
        kv_num_heads=kv_heads,
        do_rotary=1,
        rotary_interleaved=1,
        scale=head_dim**-0.5,
    )
    cache = [1, kv_heads, max_len, head_dim]
    graph = helper.make_graph(
        [node],
        "gqa",
        [
            helper.make_tensor_value_info("q", f, [1, "t", q_heads * head_dim]),
            helper.make_tensor_value_info("k", f, [1, "t", kv_heads * head_dim]),
            helper.make_tensor_value_info("v", f, [1, "t", kv_heads * head_dim]),
            helper.make_tensor_value_info("pk", f, cache),
            helper.make_tensor_value_info("pv", f, cache),
            helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
        ],
        [
            helper.make_tensor_value_info("out", f, [1, "t", q_heads * head_dim]),
            helper.make_tensor_value_info("present_k", f, cache),
            helper.make_tensor_value_info("present_v", f, cache),
        ],
        [
            onnx.numpy_helper.from_array(np.array(max_len, np.int32), "total"),
            onnx.numpy_helper.from_array(cos.numpy(), "cos"),
            onnx.numpy_helper.from_array(sin.numpy(), "sin"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    )
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]), cos, sin


@pytest.mark.parametrize("q_heads, kv_heads", [(4, 2), (2, 2), (6, 1)])
def test_reference_matches_onnxruntime_group_query_attention(q_heads, kv_heads):
    hd, max_len = 16, 24
    sess, cos, sin = _gqa_session(q_heads, kv_heads, hd, max_len)
    gen = torch.Generator().manual_seed(q_heads * 10 + kv_heads)
    ck = torch.randn(1, kv_heads, max_len, hd, generator=gen)  # noise: rows past the length are never read
    cv = torch.randn(1, kv_heads, max_len, hd, generator=gen)
    onnx_k, onnx_v = ck.numpy().copy(), cv.numpy().copy()
    for start, n in [(0, 5), (5, 1), (6, 1), (7, 3)]:  # a prompt, steps, and a later chunk
        q = torch.randn(1, n, q_heads * hd, generator=gen)
        k = torch.randn(1, n, kv_heads * hd, generator=gen)
        v = torch.randn(1, n, kv_heads * hd, generator=gen)
        seqlens = torch.tensor([start + n - 1], dtype=torch.int32)
        out, ck, cv = cached_attention_reference(q, k, v, ck, cv, seqlens, cos, sin, q_heads, kv_heads)
        got = sess.run(
            None,
            {"q": q.numpy(), "k": k.numpy(), "v": v.numpy(), "pk": onnx_k, "pv": onnx_v,
             "seqlens_k": seqlens.numpy()},
        )  # fmt: skip
        np.testing.assert_allclose(got[0], out.numpy(), atol=1e-5, err_msg=f"rows {start}..{start + n}")
        onnx_k, onnx_v = got[1], got[2]
        np.testing.assert_allclose(onnx_k[:, :, : start + n], ck[:, :, : start + n].numpy(), atol=1e-5)
        np.testing.assert_allclose(onnx_v[:, :, : start + n], cv[:, :, : start + n].numpy(), atol=1e-6)


def test_static_decoder_equals_the_dynamic_one_in_torch():
    """Gated self-attention, memory-free layers before/after and a head norm: the static forward gives the dynamic
    forward's logits and caches, prompt then steps."""
    from rxt_edge.export.config import build_config

    cfg = build_config(
        vocab=61, dim=64, layers=2, heads=4, q_heads=4, kv_heads=2, ffn=64, slots=8, stateless=1,
        gated_attention=True, special_tokens={"pad": 0, "bos": 1, "eos": 2, "query": 3, "answer": 4},
        max_seq_len=24,
    )  # fmt: skip
    torch.manual_seed(3)
    model = RxTModel(cfg).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    dec = model.decoder
    stm = torch.randn(cfg.memory_layers, 1, cfg.stm_slots, cfg.dim)
    mk, mv = model.memory_kv(stm)
    ids = torch.randint(5, cfg.vocab_size, (1, 9))
    a = dec.blocks[0].self_attn.cfg
    n = len(dec.blocks)
    ck = [torch.zeros(1, a.kv_heads, cfg.decoder.max_seq_len, a.head_dim) for _ in range(n)]
    cv = [c.clone() for c in ck]
    pk, pv = model.empty_cache()
    with torch.no_grad():
        for start, stop in [(0, 6), (6, 7), (7, 8), (8, 9)]:
            logits, nk, nv = dec(ids[:, start:stop], pk, pv, mk, mv)
            pk = [torch.cat([p, x]) for p, x in zip(pk, nk, strict=True)]
            pv = [torch.cat([p, x]) for p, x in zip(pv, nv, strict=True)]
            seqlens = torch.tensor([stop - 1], dtype=torch.int32)
            static_logits, ck, cv = dec.forward_static(ids[:, start:stop], seqlens, ck, cv, mk, mv)
            torch.testing.assert_close(static_logits, logits, atol=1e-5, rtol=1e-5)
    for layer in range(n):
        torch.testing.assert_close(ck[layer][0, :, :9], pk[layer][:, 0].transpose(0, 1))
        torch.testing.assert_close(cv[layer][0, :, :9], pv[layer][:, 0].transpose(0, 1))


def test_static_and_dynamic_packages_answer_alike(tiny_package, tmp_path):
    """The same checkpoint exported with each cache layout: the same greedy tokens over three turns through the
    runtime, and the same STM after them."""
    from rxt_edge.export.checkpoints import load_checkpoint
    from rxt_edge.export.onnx_export import export_package

    from rxt_edge import RxTSession
    from rxt_edge.manifest import load_manifest

    assert load_manifest(tiny_package).graphs["decoder"].kv_cache == "static"  # the default, where allowed
    model, source = load_checkpoint(tiny_package.parent / "checkpoint")
    dynamic = export_package(model, source, tmp_path / "dynamic", kv_cache="dynamic")
    assert dynamic.graphs["decoder"].kv_cache == "dynamic"
    answers, stms = [], []
    for package in (tiny_package, tmp_path / "dynamic"):
        conv = RxTSession.load(package, threads=1).conversation()
        answers.append([conv.interact_ids([7 + t, 40, 90 + t], max_new_tokens=12) for t in range(3)])
        conv.wait_memory()
        stms.append(conv.stm())
    assert answers[0] == answers[1] and any(answers[0])
    np.testing.assert_allclose(stms[0], stms[1], atol=1e-5)


def test_static_cache_refusals(tiny_package):
    from rxt_edge.export.onnx_export import ExportError, resolve_kv_cache

    from rxt_edge import RxTSession

    revsqa = RxTModel(tiny_config(dim=64, heads=4, q_heads=2, kv_heads=4))
    assert resolve_kv_cache(revsqa, "auto") == "dynamic"  # fewer query than K/V heads: no GQA
    with pytest.raises(ExportError, match="query heads a multiple of K/V heads"):
        resolve_kv_cache(revsqa, "static")
    narrow = RxTModel(tiny_config(dim=32, heads=4))  # head dim 8
    assert resolve_kv_cache(narrow, "auto") == "dynamic"
    gqa = RxTModel(tiny_config(dim=32, heads=2, q_heads=2, kv_heads=1))  # head dim 16
    assert resolve_kv_cache(gqa, "auto") == "static"
    assert resolve_kv_cache(gqa, "auto", fuse=False) == "dynamic"
    with pytest.raises(ExportError, match="needs fusing on"):
        resolve_kv_cache(gqa, "static", fuse=False)
    with pytest.raises(ExportError, match="choose one of auto, dynamic, static"):
        resolve_kv_cache(gqa, "paged")
    with pytest.raises(ValueError, match="CUDA graphs need the cuda provider"):
        RxTSession.load(tiny_package, cuda_graph=True)


class _CopyAtBindBinding:
    """Records each input as onnxruntime's IOBinding does for a device session: a host input is copied when it
    is bound, so what a run sees is the value at the last bind, not at run time."""

    def __init__(self):
        self.seen: dict[str, np.ndarray] = {}

    def bind_input(self, name, device, device_id, dtype, shape, address):
        count = int(np.prod(shape))
        buffer = (np.ctypeslib.as_array((np.ctypeslib.ctypes.c_char * (count * np.dtype(dtype).itemsize))
                                        .from_address(address)))  # fmt: skip
        self.seen[name] = np.frombuffer(buffer.tobytes(), dtype=dtype).reshape(shape)

    def bind_ortvalue_input(self, name, value):
        self.seen[name] = value


def test_every_static_run_rebinds_its_length():
    """The CUDA EP reads `seqlens_k` from the device copy made at bind time: a length bound once per turn would
    stay at the prompt's (seen on an H200 as fp16 answers unlike the captured graph's)."""
    from rxt_edge import contract
    from rxt_edge.decoding import StaticKVCache
    from rxt_edge.engine import DeviceBuffers

    cache = StaticKVCache(DeviceBuffers("cpu", 0, np.float32), layers=2, max_len=16, kv_heads=2, head_dim=4)
    binding = _CopyAtBindBinding()
    cache.bind_inputs(binding)
    for past, n in [(0, 5), (5, 1), (6, 1), (7, 1)]:
        cache.bind(binding, past, n)
        assert binding.seen[contract.SEQLENS].tolist() == [past + n - 1]
    with pytest.raises(ValueError, match="KV cache overflow"):
        cache.bind(binding, 15, 2)
