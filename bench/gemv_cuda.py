"""`python -m rxt_edge.bench.gemv_cuda`: one decode step's projections (M = 1) alone, in each layout onnxruntime's
CUDA provider can run them, timed on the GPU (CUPTI kernel time per product).

A captured alpha-mini fp16 step spends about 40% of its kernel time in 48 cuBLAS products of one row (2.5-5.5 us
each, docs/benchmarks.md), far from what the weights' bytes need at the card's bandwidth. cuBLAS picks its kernel
by the operands' layout, so the same product is timed as
- `matmul`: `MatMul(x [1, 1, K], W [K, N])` - what the exporter writes today;
- `fused-tb`: `com.microsoft.FusedMatMul(x, Wt [N, K], transB=1)` - the weight stored transposed, so that each
  output's K weights are contiguous (a dot product per output row);
- `gemm-tb`: ONNX `Gemm(x [1, K], Wt [N, K], transB=1)`;
- `nbits8`: `MatMulNBits` with 8-bit weights (block 128), for scale: weight-only int8, not fp16.
Each graph holds `copies` different weights of the shape (enough to exceed the GPU's L2 cache, as the step's 200 MB
of weights do), every product reading the same x, so the figures are products streaming weights from HBM, as in
the step. Every variant is checked against numpy. Needs torch (CUPTI) and onnxruntime-gpu in one process.
"""

from __future__ import annotations

import argparse

import numpy as np

from .cupti import kernel_us

SHAPES = {  # preset -> [(name, K, N)]: one layer's products and the LM head
    "alpha-mini": [
        ("qkv", 512, 512),
        ("attn-out", 256, 512),
        ("cross-q", 512, 256),
        ("cross-out", 256, 512),
        ("ffn-in", 512, 4608),
        ("ffn-out", 2304, 512),
        ("lm-head", 512, 32000),
    ],
    "alpha-micro": [
        ("qkv", 256, 256),
        ("attn-out", 128, 256),
        ("ffn-in", 256, 1536),
        ("ffn-out", 768, 256),
        ("lm-head", 256, 7500),
    ],
}
VARIANTS = ("matmul", "fused-tb", "gemm-tb", "nbits8")
L2_BYTES = 64 << 20  # more than an H100/H200's L2 (50-60 MB)


def _model(variant: str, ws: list[np.ndarray]):
    """A graph of len(ws) independent products x @ W_i in `variant`'s layout (float16)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    k, n = ws[0].shape
    nodes, inits, outs = [], [], []
    x_shape = [1, k] if variant == "gemm-tb" else [1, 1, k]
    for i, w in enumerate(ws):
        y = f"y{i}"
        outs.append(h.make_tensor_value_info(y, T.FLOAT16, None))
        if variant == "matmul":
            inits.append(nh.from_array(w, f"w{i}"))
            nodes.append(h.make_node("MatMul", ["x", f"w{i}"], [y]))
        elif variant == "fused-tb":
            inits.append(nh.from_array(np.ascontiguousarray(w.T), f"w{i}"))
            nodes.append(h.make_node("FusedMatMul", ["x", f"w{i}"], [y], domain="com.microsoft", transB=1))
        elif variant == "gemm-tb":
            inits.append(nh.from_array(np.ascontiguousarray(w.T), f"w{i}"))
            nodes.append(h.make_node("Gemm", ["x", f"w{i}"], [y], transB=1))
        elif variant == "nbits8":
            q, scales, block = _quantize8(w)
            inits += [nh.from_array(q, f"w{i}"), nh.from_array(scales, f"s{i}")]
            nodes.append(h.make_node("MatMulNBits", ["x", f"w{i}", f"s{i}"], [y], domain="com.microsoft",
                                     K=k, N=n, bits=8, block_size=block))  # fmt: skip
        else:
            raise SystemExit(f"unknown variant {variant}")
    graph = h.make_graph(nodes, variant, [h.make_tensor_value_info("x", T.FLOAT16, x_shape)], outs, inits)
    opsets = [h.make_opsetid("", 21), h.make_opsetid("com.microsoft", 1)]
    return onnx.helper.make_model(graph, opset_imports=opsets, ir_version=10)


def _quantize8(w: np.ndarray, block: int = 128) -> tuple[np.ndarray, np.ndarray, int]:
    """Symmetric 8-bit blocks along K in MatMulNBits' layout: data [N, K/block, block] uint8 (zero point 128),
    scales [N * K/block] in w's type."""
    k, n = w.shape
    block = min(block, k)
    wt = w.T.astype(np.float32).reshape(n, k // block, block)
    scales = np.abs(wt).max(-1) / 127.0
    scales[scales == 0] = 1.0
    q = np.clip(np.round(wt / scales[..., None]), -127, 127).astype(np.int16) + 128
    return q.astype(np.uint8), scales.reshape(-1).astype(w.dtype), block


def run_variant(variant: str, k: int, n: int, runs: int) -> dict:
    import onnxruntime as ort

    copies = int(min(64, max(2, -(-L2_BYTES // (k * n * 2)))))
    rng = np.random.default_rng(0)
    ws = [(rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float16) for _ in range(copies)]
    x = rng.standard_normal((1, k)).astype(np.float16)
    try:
        sess = ort.InferenceSession(
            _model(variant, ws).SerializeToString(), providers=[("CUDAExecutionProvider", {"device_id": "0"})]
        )
    except Exception as e:  # noqa: BLE001 - a variant this build cannot run: say so, go on
        return {"variant": variant, "error": str(e).splitlines()[0][:160]}
    binding = sess.io_binding()
    feed = x if variant == "gemm-tb" else x[None]
    binding.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(feed), "cuda", 0))
    for i in range(copies):
        binding.bind_output(f"y{i}", "cuda", 0)
    for _ in range(5):
        sess.run_with_iobinding(binding)
    ys = binding.copy_outputs_to_cpu()
    ref = x.astype(np.float32) @ ws[-1].astype(np.float32)
    err = float(np.abs(ys[-1].astype(np.float32).reshape(ref.shape) - ref).max())
    per = kernel_us(lambda: sess.run_with_iobinding(binding), runs, copies)
    return {
        "variant": variant,
        "copies": copies,
        "max_err": err,
        "us": sum(per.values()),
        "kernels": per,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m rxt_edge.bench.gemv_cuda", description=__doc__)
    p.add_argument("--shapes", default="alpha-mini")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--runs", type=int, default=50)
    args = p.parse_args(argv)
    import torch

    torch.cuda.init()
    for preset in args.shapes.split(","):
        print(f"\n## {preset}: us per product (kernel time), weights streamed from HBM")
        for name, k, n in SHAPES[preset]:
            mb = k * n * 2 / 1e6
            for variant in args.variants.split(","):
                r = run_variant(variant, k, n, args.runs)
                if "error" in r:
                    print(f"{name:9s} {k}x{n} {variant:9s} error: {r['error']}")
                    continue
                ks = "; ".join(
                    f"{kn[:70]} {t:.2f}" for kn, t in sorted(r["kernels"].items(), key=lambda x: -x[1])
                )
                gbs = mb * 1e3 / r["us"] if r["us"] else 0.0
                print(
                    f"{name:9s} {k}x{n} ({mb:.2f} MB fp16) {variant:9s} {r['us']:6.2f} us ({gbs:5.0f} GB/s) "
                    f"err {r['max_err']:.1e}  [{ks}]"
                )


if __name__ == "__main__":
    main()
