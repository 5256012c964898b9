"""MoE against dense at equal active width (not a test): decode cost of a Beta-shaped MoE layer, per scheme.

    python -m rxt_edge.bench.moe_bench --workdir /tmp/rxt-moebench --threads 1 --json moe.json

Two random-weight models that differ only in their decoder feed-forward layers: 2 memory layers of RxT-Beta's
MoE (384 SwiGLU experts of 192, top-10, 2 shared experts of 192) and the same with one dense SwiGLU of
(10 + 2) x 192 = 2304, the MoE's active width. Both are exported, quantized with every `--schemes` entry (the
experts through `export/quantize_moe.py`'s QMoE), and timed with the real runtime, all packages interleaved
`--repeats` times so they share the machine's load; decode ms/token is the median over every turn. The ratio
MoE / dense per scheme is the issue-16 target (<= 1.5x, fp32 and int8). Random weights: speed only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .options import cpu_preset
from .quant_report import DEFAULT_QUERIES, SpeedProbe

EXPERTS, TOP_K, EXPERT_FFN, SHARED = 384, 10, 192, 2
DEFAULT_SCHEMES = "fp32,int8-dynamic,int8-block,int4-block"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def configs() -> dict:
    """The two configurations: Beta's MoE layer shape, and the dense layer of its active width."""
    from rxt_edge.export.config import build_config
    from rxt_edge.export.presets import SPECIAL

    common = dict(vocab=32000, dim=512, layers=2, heads=16, q_heads=8, kv_heads=4, slots=1024)
    common.update(special_tokens=SPECIAL, max_seq_len=1024)
    moe = dict(experts=EXPERTS, top_k=TOP_K, shared_experts=SHARED, expert_ffn=EXPERT_FFN)
    return {
        "moe": build_config(ffn=EXPERT_FFN, **moe, **common),
        "dense": build_config(ffn=(TOP_K + SHARED) * EXPERT_FFN, **common),
    }


def build(name: str, cfg, workdir: Path) -> Path:
    """The fp32 package of one configuration (weights N(0, 1/fan_in)), exported once into `workdir`."""
    from .fixtures import export_checkpoint, random_checkpoint

    pkg = workdir / name / "fp32"
    if (pkg / "manifest.json").is_file():
        return pkg
    ckpt = workdir / name / "checkpoint"
    random_checkpoint(cfg, ckpt)
    log(f"exporting {name}")
    export_checkpoint(ckpt, pkg)
    return pkg


def quantized(src: Path, scheme: str) -> Path:
    from rxt_edge.export.quantize import quantize_package

    out = src.parent / scheme
    if not (out / "manifest.json").is_file():
        log(f"quantizing {src.parent.name} {scheme}")
        preset = cpu_preset() if scheme == "int8-dynamic" else None
        quantize_package(src, out, scheme, preset, overwrite=True)
    return out


def _size(pkg: Path) -> int:
    return sum(p.stat().st_size for p in pkg.glob("decoder.onnx*"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rxt-moebench"))
    ap.add_argument("--schemes", default=DEFAULT_SCHEMES)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    pkgs: dict[tuple[str, str], Path] = {}
    for name, cfg in configs().items():
        src = build(name, cfg, args.workdir)
        for scheme in schemes:
            pkgs[(name, scheme)] = src if scheme == "fp32" else quantized(src, scheme)
    probes = {k: SpeedProbe(p, args.threads) for k, p in pkgs.items()}
    tok = next(iter(probes.values())).session.package.tokenizer
    queries = [tok.encode(q)[:200] for q in DEFAULT_QUERIES]
    try:
        for r in range(args.repeats):
            log(f"timing, repeat {r + 1}/{args.repeats}")
            for probe in probes.values():
                probe.run(queries, args.max_new_tokens)
    finally:
        for probe in probes.values():
            probe.close()
    rows = []
    print(f"decode ms/token, {args.threads} thread(s), medians over {args.repeats} x {len(queries)} turns")
    print(
        f"{'scheme':14s} {'MoE':>9s} {'dense':>9s} {'MoE/dense':>10s} {'MoE file':>10s} {'dense file':>10s}"
    )
    for scheme in schemes:
        m, d = (probes[(n, scheme)].samples.medians().decode_ms_per_token for n in ("moe", "dense"))
        sm, sd = _size(pkgs[("moe", scheme)]), _size(pkgs[("dense", scheme)])
        rows.append(
            {"scheme": scheme, "moe_ms": m, "dense_ms": d, "ratio": m / d, "moe_bytes": sm, "dense_bytes": sd}
        )
        print(f"{scheme:14s} {m:9.2f} {d:9.2f} {m / d:9.2f}x {sm / 1e6:8.0f}MB {sd / 1e6:8.0f}MB")
    if args.json:
        args.json.write_text(
            json.dumps({"threads": args.threads, "repeats": args.repeats, "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
