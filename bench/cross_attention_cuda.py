"""`python -m rxt_edge.bench.cross_attention_cuda`: the memory cross-attention of one decode step, alone, in each
formulation onnxruntime's CUDA provider offers, timed on the GPU (CUPTI kernel time per run).

One query token over the STM's keys and values `[1, Hkv, S, hd]` (float16), Hq query heads in groups of
G = Hq / Hkv. The formulations (`--variants`):
- `mha-fold`: `com.microsoft.MultiHeadAttention` with Hkv heads, the G query heads of a group folded into the
  query sequence ([1, G, Hkv*hd]) - what the decoder exports today (export/memory_attention.py);
- `mha-expand`: MultiHeadAttention with Hq heads over K/V repeated to Hq heads ([1, Hq, S, hd]);
- `attn-4d`: ONNX `Attention` (opset 23), grouped natively: Q [1, Hq, 1, hd], K/V [1, Hkv, S, hd];
- `attn-3d`: the same with Q [1, 1, Hq*hd] and K/V [1, S, Hkv*hd] (3-D, heads from the attributes).
Each variant runs under each `--sdpa-kernel` bitmask (onnxruntime's CUDA provider option: 0 its default, 1
flash, 2 memory-efficient, 8 cuDNN, 16 unfused) and is checked against numpy. Needs torch (CUPTI) and
onnxruntime-gpu in one process.
"""

from __future__ import annotations

import argparse

import numpy as np

from .cupti import kernel_us

SHAPES = {  # preset -> (Hq, Hkv, hd, S)
    "alpha-micro": (8, 4, 16, 256),
    "alpha-mini": (8, 4, 32, 1024),
    "rxt-beta": (8, 4, 32, 4096),
}


def _model(variant: str, hq: int, hkv: int, hd: int, s: int):
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    g = hq // hkv
    scale = 1.0 / np.sqrt(hd)
    if variant == "mha-fold":
        q, k = [1, g, hkv * hd], [1, hkv, s, hd]
        node = h.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft",
                           num_heads=hkv, scale=scale)  # fmt: skip
    elif variant == "mha-expand":
        q, k = [1, 1, hq * hd], [1, hq, s, hd]
        node = h.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft",
                           num_heads=hq, scale=scale)  # fmt: skip
    elif variant == "attn-4d":
        q, k = [1, hq, 1, hd], [1, hkv, s, hd]
        node = h.make_node("Attention", ["q", "k", "v"], ["y"], scale=scale)
    elif variant == "attn-3d":
        q, k = [1, 1, hq * hd], [1, s, hkv * hd]
        node = h.make_node("Attention", ["q", "k", "v"], ["y"], scale=scale, q_num_heads=hq, kv_num_heads=hkv)
    else:
        raise SystemExit(f"unknown variant {variant}")
    graph = h.make_graph(
        [node], variant,
        [h.make_tensor_value_info("q", T.FLOAT16, q), h.make_tensor_value_info("k", T.FLOAT16, k),
         h.make_tensor_value_info("v", T.FLOAT16, k)],
        [h.make_tensor_value_info("y", T.FLOAT16, None)],
    )  # fmt: skip
    opsets = [h.make_opsetid("", 23), h.make_opsetid("com.microsoft", 1)]
    return onnx.helper.make_model(graph, opset_imports=opsets, ir_version=10), q, k


def _inputs(variant: str, qh: np.ndarray, kh: np.ndarray, vh: np.ndarray) -> dict[str, np.ndarray]:
    """The per-head query [Hq, hd] and K/V [Hkv, S, hd] in the variant's layout (group g of head kv: kv*G+g)."""
    hq, hd = qh.shape
    hkv, s, _ = kh.shape
    g = hq // hkv
    if variant == "mha-fold":  # row g of the folded query holds, per K/V head, that head's g-th query
        q = qh.reshape(hkv, g, hd).transpose(1, 0, 2).reshape(1, g, hkv * hd)
        return {"q": q, "k": kh[None], "v": vh[None]}
    if variant == "mha-expand":
        return {
            "q": qh.reshape(1, 1, hq * hd),
            "k": np.repeat(kh, g, 0)[None],
            "v": np.repeat(vh, g, 0)[None],
        }
    if variant == "attn-4d":
        return {"q": qh[None, :, None], "k": kh[None], "v": vh[None]}
    k3 = kh.transpose(1, 0, 2).reshape(1, s, hkv * hd)
    v3 = vh.transpose(1, 0, 2).reshape(1, s, hkv * hd)
    return {"q": qh.reshape(1, 1, hq * hd), "k": k3, "v": v3}


def _output_heads(variant: str, y: np.ndarray, hq: int, hkv: int, hd: int) -> np.ndarray:
    g = hq // hkv
    if variant == "mha-fold":
        return y.reshape(g, hkv, hd).transpose(1, 0, 2).reshape(hq, hd)
    return y.reshape(hq, hd)


def run_variant(variant: str, shape: tuple[int, int, int, int], sdpa: int, runs: int) -> dict:
    import onnxruntime as ort

    hq, hkv, hd, s = shape
    rng = np.random.default_rng(0)
    qh = rng.standard_normal((hq, hd)).astype(np.float16)
    kh = rng.standard_normal((hkv, s, hd)).astype(np.float16)
    vh = rng.standard_normal((hkv, s, hd)).astype(np.float16)
    model, _, _ = _model(variant, hq, hkv, hd, s)
    opts = {"device_id": "0", **({"sdpa_kernel": str(sdpa)} if sdpa else {})}
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=[("CUDAExecutionProvider", opts)])
    except Exception as e:  # noqa: BLE001 - a variant this build cannot run: say so, go on
        return {"variant": variant, "sdpa": sdpa, "error": str(e).splitlines()[0][:160]}
    binding = sess.io_binding()
    for name, arr in _inputs(variant, qh, kh, vh).items():
        binding.bind_ortvalue_input(
            name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), "cuda", 0)
        )
    binding.bind_output("y", "cuda", 0)
    for _ in range(10):
        sess.run_with_iobinding(binding)
    y = binding.copy_outputs_to_cpu()[0].astype(np.float32)
    # numpy reference: head h reads K/V head h // G
    kf, vf = np.repeat(kh, hq // hkv, 0).astype(np.float32), np.repeat(vh, hq // hkv, 0).astype(np.float32)
    sc = np.einsum("hd,hsd->hs", qh.astype(np.float32), kf) / np.sqrt(hd)
    p = np.exp(sc - sc.max(-1, keepdims=True))
    ref = np.einsum("hs,hsd->hd", p / p.sum(-1, keepdims=True), vf)
    err = float(np.abs(_output_heads(variant, y, hq, hkv, hd) - ref).max())
    per = kernel_us(lambda: sess.run_with_iobinding(binding), runs)
    return {"variant": variant, "sdpa": sdpa, "max_err": err, "us": sum(per.values()), "kernels": per}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m rxt_edge.bench.cross_attention_cuda", description=__doc__)
    p.add_argument("--shapes", default="alpha-micro,alpha-mini,rxt-beta")
    p.add_argument("--variants", default="mha-fold,mha-expand,attn-4d,attn-3d")
    p.add_argument("--sdpa-kernel", default="0,1,2,8,16")
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args(argv)
    import torch

    torch.cuda.init()
    for shape in args.shapes.split(","):
        print(f"\n## {shape}: Hq, Hkv, hd, S = {SHAPES[shape]}")
        for variant in args.variants.split(","):
            for sdpa in (int(x) for x in args.sdpa_kernel.split(",")):
                r = run_variant(variant, SHAPES[shape], sdpa, args.runs)
                if "error" in r:
                    print(f"{variant:11s} sdpa={sdpa:<3d} error: {r['error']}")
                    continue
                ks = "; ".join(
                    f"{n[:60]} {t:.1f}" for n, t in sorted(r["kernels"].items(), key=lambda x: -x[1])
                )
                print(f"{variant:11s} sdpa={sdpa:<3d} {r['us']:6.1f} us  err {r['max_err']:.1e}  [{ks}]")


if __name__ == "__main__":
    main()
