"""Quantization benchmark (not a test): a random-weight preset, fp32 against every scheme, on this machine.

    python -m rxt_edge.bench.quant_bench --config alpha-mini --workdir /tmp/rxt-qbench --json qbench.json

Exports the preset once (torch; reused from `--workdir`), quantizes it with each scheme, then measures:
- decode ms/token, prompt ms, memory-update ms with the real runtime, the packages interleaved `--repeats`
  times so they share the machine's load (medians over all turns of all repeats), for each `--threads`;
- quality against fp32 with `quant_report.compare_packages` (teacher-forced KL, top-1, greedy agreement, drift);
- with `--scopes`, which graphs tolerate the scheme: quality and memory-update time per graph selection.
Random weights measure speed faithfully; their quality numbers only show numerical error, not task quality.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from rxt_edge.export.quantize import Scope, quantize_package

from rxt_edge import contract
from rxt_edge.package import load_package

from .quant_report import DEFAULT_QUERIES, SpeedProbe, compare_packages

# (label, scheme, preset)
VARIANTS = [
    ("int8", "int8", None),
    ("int4", "int4", None),
    ("int8-dynamic/avx2", "int8-dynamic", "avx2"),
    ("int8-dynamic/avx512_vnni", "int8-dynamic", "avx512_vnni"),
    ("int8-block", "int8-block", None),
    ("int4-block", "int4-block", None),
]
D, E, U, K = contract.DECODER, contract.ENCODER, contract.MEMORY_UPDATE, contract.MEMORY_KV
SCOPES = {
    "decoder": Scope((D,), head=True),
    "decoder-no-head": Scope((D,), head=False),
    "decoder+memory_kv": Scope((D, K), head=True),
    "decoder+encoder": Scope((D, E), head=True),
    "decoder+memory_update": Scope((D, U), head=True),
    "all": Scope(contract.GRAPH_NAMES, head=True),
    "all+embedding": Scope(contract.GRAPH_NAMES, head=True, embedding=True),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_source(config: str, seed: int, scale: float, workdir: Path) -> Path:
    """The fp32 package of a random-weight preset, exported once into `workdir`."""
    from .fixtures import export_checkpoint, preset_checkpoint

    root = workdir / f"{config}-seed{seed}-scale{scale:g}"
    pkg = root / "fp32"
    if (pkg / "manifest.json").is_file():
        return pkg
    log(f"building {config} (seed {seed}, scale {scale})")
    ckpt = preset_checkpoint(config, root / "checkpoint", seed=seed, scale=scale)
    export_checkpoint(ckpt, pkg, progress=log)
    return pkg


def speed_table(
    packages: dict[str, Path], queries: list[list[int]], max_new: int, threads: int | None, repeats: int
) -> dict[str, dict]:
    probes = {k: SpeedProbe(p, threads) for k, p in packages.items()}
    try:
        for r in range(repeats):
            for k, probe in probes.items():
                log(f"timing {k} (threads {threads or 'default'}, repeat {r + 1}/{repeats})")
                probe.run(queries, max_new)
    finally:
        for probe in probes.values():
            probe.close()
    return {k: {**asdict(p.samples.medians()), "samples": len(p.samples.decode)} for k, p in probes.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="alpha-mini")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--scale", type=float, default=0.04, help="random_model weight scale (0.04: varied greedy tokens)"
    )
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rxt-qbench"))
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts to time ('0' = default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--quality-tokens", type=int, default=24)
    ap.add_argument("--variants", default=",".join(v[0] for v in VARIANTS))
    ap.add_argument("--scopes", default="", help=f"scope study for these schemes ({', '.join(SCOPES)})")
    ap.add_argument("--scope-names", default="", help="limit the scope study to these (default: all)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    src = build_source(args.config, args.seed, args.scale, args.workdir)
    pkgs: dict[str, Path] = {"fp32": src}
    chosen = [v for v in VARIANTS if v[0] in args.variants.split(",")]
    for label, scheme, preset in chosen:
        dest = src.parent / label.replace("/", "-")
        if not (dest / "manifest.json").is_file():
            log(f"quantizing {label}")
            quantize_package(src, dest, scheme, preset=preset, overwrite=True)
        pkgs[label] = dest
    tok = load_package(src, verify_hashes=False).tokenizer
    queries = [tok.encode(q) for q in DEFAULT_QUERIES]
    result: dict = {"config": args.config, "seed": args.seed, "scale": args.scale, "speed": {}, "quality": {}}
    result["sizes_bytes"] = {k: sum(f.stat().st_size for f in p.glob("*.onnx*")) for k, p in pkgs.items()}

    for label, path in pkgs.items():
        if label == "fp32":
            continue
        log(f"quality {label}")
        rep = compare_packages(src, path, max_new_tokens=args.quality_tokens, speed=False, threads=None)
        q = rep.to_json()
        q.pop("answers")
        result["quality"][label] = q

    for t in [int(x) for x in args.threads.split(",") if x.strip()]:
        result["speed"][f"threads={t or 'default'}"] = speed_table(
            pkgs, queries, args.max_new_tokens, t or None, args.repeats
        )

    if args.scopes:
        result["scopes"] = {}
        for scheme in args.scopes.split(","):
            preset = "avx512_vnni" if scheme == "int8-dynamic" else None
            for name, scope in SCOPES.items():
                if args.scope_names and name not in args.scope_names.split(","):
                    continue
                if scope.embedding and scheme in ("int8", "int8-block"):
                    continue  # MatMulNBits' GatherBlockQuantized is 4-bit only
                dest = src.parent / "scopes" / f"{scheme}-{name}"
                if not (dest / "manifest.json").is_file():
                    log(f"quantizing {scheme} {name}")
                    quantize_package(src, dest, scheme, preset=preset, scope=scope, overwrite=True)
                log(f"scope {scheme} {name}")
                rep = compare_packages(
                    src, dest, queries=DEFAULT_QUERIES * 2, max_new_tokens=args.quality_tokens, speed=False
                ).to_json()
                rep.pop("answers")
                result["scopes"][f"{scheme}:{name}"] = rep

    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
