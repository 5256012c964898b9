"""`python -m rxt_edge.bench.decode_compare`: rxt-edge against onnxruntime-genai on a same-dims Llama, decode
speed side by side in one process call (the table issue 15's targets are measured with).

Per preset and precision: our random-weight package (`prepare`: fp32 export, then `rxt_edge.export.quantize`
with the library's default scheme of that precision, `RXT_SCHEMES`) and the genai peer (`peer`: a same-dims
Llama from genai's builder, its defaults). The two engines are timed in alternation, each run in a fresh
torch-free child process (`child`), the order flipped every round so drift on a shared machine hits both.
Printed: one Markdown table of median decode ms/token (range over rounds), prompt TTFT and the bytes each engine
reads per token (`bytes_per_token`: the decoder's weights as bench/active_weights.py counts them, plus, for RxT,
the STM keys and values its memory cross-attention reads; the self-attention caches are the same size in both,
same dims and positions, and are left out), with the time ratio per byte read; `--json-out` keeps every round. `--reference` adds PyTorch eager rxlm (fp32) on the same provider (CUDA: torch on the GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import peer
from .child import run_child
from .machine import decoder_bytes_per_token, load_average, machine_info
from .options import BenchError, BenchOptions, quantize_module
from .report import write_json
from .run import rxt_job
from .stats import median, speed_from_turns

SCHEMA = "rxt-edge-decode-compare/1"
DEFAULT_CONFIGS = ("alpha-micro", "alpha-mini")
DEFAULT_PRECISIONS = {"cpu": ("fp32", "int8", "int4"), "cuda": ("fp16", "fp32")}
QUERY_TOKENS, ANSWER_TOKENS = 32, 32  # the bench protocol: 35-token prompts, 32 tokens decoded

# The one place a precision becomes an `rxt-edge quantize` scheme: the library's default of that kind. Libraries
# that predate the `int8`/`int4` default names get the earlier defaults (`LEGACY_SCHEMES`).
RXT_SCHEMES = {"fp32": None, "fp16": "fp16", "int8": "int8", "int4": "int4"}
LEGACY_SCHEMES = {"int8": "int8-dynamic", "int4": "int4-block"}


def rxt_scheme(precision: str) -> str | None:
    """The quantize scheme of our package at `precision` (None: the fp32 export itself)."""
    if precision not in RXT_SCHEMES:
        raise BenchError(f"unknown precision {precision!r}; choose from {', '.join(RXT_SCHEMES)}")
    scheme, q = RXT_SCHEMES[precision], quantize_module()
    if scheme is not None and q is not None and scheme not in q.SCHEMES:
        scheme = LEGACY_SCHEMES.get(scheme, scheme)
    return scheme


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _bench_options(args: argparse.Namespace, config: str, scheme_list: list[str]) -> BenchOptions:
    return BenchOptions(
        config=config, provider=args.provider, threads=args.threads, turns=args.turns, speed_turns=args.turns,
        query_tokens=QUERY_TOKENS, answer_tokens=ANSWER_TOKENS, quantize=",".join(scheme_list) or None,
        quant_preset=None, baseline="none", reference=args.reference, peer=True,
        quant_memory_kv=None if args.memory_kv == "auto" else args.memory_kv,
    )  # fmt: skip


def _cells(args: argparse.Namespace, workdir: Path, notes: list[str]) -> tuple[list[dict[str, Any]], dict]:
    """Packages and peers of every (preset, precision): the cells of the table; and the torch models."""
    from rxt_edge.manifest import load_manifest

    from .prepare import prepare

    cells, models = [], {}
    for config in args.configs:
        schemes = {p: rxt_scheme(p) for p in args.precisions}
        opts = _bench_options(args, config, [s for s in schemes.values() if s])
        prep = prepare(opts, workdir, _log)
        notes += [f"{config}: {n}" for n in prep.notes]
        models[config] = (prep.model, opts)
        packages = {load_manifest(q).precision: q for q in prep.quantized}
        cfg = prep.model.cfg
        dims, mapping, peer_notes = peer.peer_plan(cfg, list(args.precisions), args.provider)
        notes += [f"{config}: {n}" for n in peer_notes]
        built: dict[str, Path] = {}
        if mapping:
            try:
                built = peer.build_peers(
                    dims, list(dict.fromkeys(mapping.values())), args.provider, workdir / "peers",
                    cfg.special_tokens, _log,
                )  # fmt: skip
            except BenchError as e:
                notes.append(f"{config}: {e}")
        for precision, scheme in schemes.items():
            package = prep.package if scheme is None else packages.get(scheme)
            genai = mapping.get(precision)
            jobs = {}
            if package is not None:
                jobs["rxt-edge"] = rxt_job(package, opts, args.turns, ANSWER_TOKENS, None)
            if genai in built:
                jobs["genai"] = peer.genai_job(
                    built[genai], provider=args.provider, threads=args.threads, turns=args.turns,
                    query_tokens=QUERY_TOKENS, answer_tokens=ANSWER_TOKENS, special=cfg.special_tokens,
                )  # fmt: skip
            cells.append(
                {
                    "config": config,
                    "precision": precision,
                    "rxt_scheme": scheme,
                    "rxt_package": str(package) if package else None,
                    "genai_precision": genai if genai in built else None,
                    "peer_dir": str(built[genai]) if genai in built else None,
                    "peer_dims": asdict(dims) if dims else None,
                    "peer_graph": peer.read_stamp(built[genai])["graph"] if genai in built else None,
                    "jobs": jobs,
                    "rounds": [],
                    "bytes_per_token": _bytes_per_token(package, built.get(genai)),
                }
            )
    return cells, models


def _bytes_per_token(package: Path | None, peer_dir: Path | None) -> dict[str, dict[str, int]]:
    """Per engine: `weights` a decode step reads, `stm_kv` (RxT's memory K/V; 0 for the Llama) and `total`."""
    out = {}
    if package is not None:
        ours = decoder_bytes_per_token(package)
        out["rxt-edge"] = {"weights": ours["weights"], "stm_kv": ours["stm_kv"]}
    if peer_dir is not None:
        out["genai"] = {"weights": peer.weight_bytes_per_token(peer_dir)["weights"], "stm_kv": 0}
    return {k: {**v, "total": v["weights"] + v["stm_kv"]} for k, v in out.items()}


def _time_rounds(cells: list[dict[str, Any]], rounds: int, notes: list[str]) -> None:
    """Each round times every cell's engines back to back, in the opposite order to the round before."""
    for r in range(rounds):
        for cell in cells:
            order = list(cell["jobs"].items())
            result: dict[str, Any] = {}
            for engine, job in order[::-1] if r % 2 else order:
                _log(f"round {r + 1}/{rounds}: {cell['config']} {cell['precision']} {engine}")
                try:
                    res = run_child(job)
                except BenchError as e:
                    notes.append(f"{cell['config']} {cell['precision']} {engine}, round {r + 1}: {e}")
                    continue
                result[engine] = {
                    **speed_from_turns(res["turns"]),
                    "answer_tokens": [t["answer_tokens"] for t in res["turns"]],
                    "peak_rss_mb": res["peak_rss_mb"],
                    "device_memory": res["device_memory"],
                    "load_average_after": res["load_average_after"],
                }
            cell["rounds"].append(result)


def _reference(models: dict, notes: list[str]) -> dict[str, dict[str, Any]]:
    """PyTorch eager rxlm (fp32, its cached decode path, our weights) per preset, on the same provider."""
    from rxt_edge.export.checkpoints.rxlm_twin import rxlm_twin

    from .eager import rxlm_eager_speed

    out = {}
    for config, (model, opts) in models.items():
        rx, why = rxlm_twin(model)
        if rx is None:
            notes.append(f"{config}: no PyTorch eager rxlm reference: {why}")
            continue
        _log(f"PyTorch eager rxlm, {config}")
        out[config] = rxlm_eager_speed(model, rx, opts)
    return out


def _span(values: list[float], spec: str = ".2f") -> str:
    """Median of the rounds' medians, with their range: `2.71 (2.67-2.89)`."""
    if not values:
        return "-"
    m = f"{median(values):{spec}}"
    return m if len(values) == 1 else f"{m} ({min(values):{spec}}-{max(values):{spec}})"


def summarize(cells: list[dict[str, Any]]) -> None:
    """Per cell and engine: median and range over rounds of decode ms/token and prompt TTFT."""
    for cell in cells:
        s = {}
        for engine in cell["jobs"]:
            decode = [r[engine]["decode_ms_per_token"] for r in cell["rounds"] if engine in r]
            prompt = [r[engine]["prompt_ms"] for r in cell["rounds"] if engine in r]
            s[engine] = {
                "decode_ms_per_token": median(decode) if decode else None,
                "decode_ms_per_token_rounds": decode,
                "prompt_ms": median(prompt) if prompt else None,
                "prompt_ms_rounds": prompt,
            }
        ours, theirs = (s.get(e, {}).get("decode_ms_per_token") for e in ("rxt-edge", "genai"))
        s["rxt_over_genai"] = ours / theirs if ours and theirs else None
        # each round's own ratio (the two engines ran back to back): drift between rounds cancels out, which a
        # ratio of the two medians does not do on a host whose speed moves
        paired = [r["rxt-edge"]["decode_ms_per_token"] / r["genai"]["decode_ms_per_token"]
                  for r in cell["rounds"] if "rxt-edge" in r and "genai" in r]  # fmt: skip
        s["paired_ratio"] = {"median": median(paired), "rounds": paired} if paired else None
        b = cell.get("bytes_per_token", {})
        both = "rxt-edge" in b and "genai" in b and b["genai"]["total"]
        s["bytes_ratio"] = b["rxt-edge"]["total"] / b["genai"]["total"] if both else None
        # time per byte read, ours over genai's: below 1, we read each byte faster than the peer does
        s["per_byte_ratio"] = s["rxt_over_genai"] / s["bytes_ratio"] if s["rxt_over_genai"] and both else None
        cell["summary"] = s


def markdown_table(report: dict[str, Any]) -> str:
    """One row per preset and precision: decode ms/token (range over rounds), the ratio, prompt TTFT."""
    st = report["settings"]
    ref = report.get("reference", {})
    head = (
        f"Decode ms/token, median over {st['turns']} turns per round, {st['rounds']} round(s) alternated "
        f"(range over rounds); {st['provider']}, {st['threads']} thread(s); {QUERY_TOKENS + 3}-token prompt, "
        f"{ANSWER_TOKENS} tokens. Machine: {report['machine']['cpu']}. rxt-edge's CPU kernels: "
        f"{report['machine'].get('rxt_edge_kernels', 'unknown')}. onnxruntime-genai "
        f"{report['versions']['onnxruntime_genai']}, same-dims Llama from its builder.\n"
    )
    cols = ["preset", "precision", "rxt-edge", "onnxruntime-genai", "rxt-edge / genai", "per round: median (range)", "TTFT rxt-edge (ms)",
            "TTFT genai (ms)", "MB read / token, rxt-edge (STM K/V) / genai", "ratio per byte"] + (["PyTorch eager rxlm fp32 (x rxt-edge)"] if st["reference"] else [])  # fmt: skip
    out = [head, "| " + " | ".join(cols) + " |", "|---|---|" + "---:|" * (len(cols) - 2)]
    for cell in report["cells"]:
        s = cell["summary"]
        rx, ge = s.get("rxt-edge", {}), s.get("genai", {})
        ratio = s["rxt_over_genai"]
        row = [
            cell["config"],
            cell["precision"] + ("" if cell["genai_precision"] in (None, cell["precision"]) else f" / genai {cell['genai_precision']}"),
            _span(rx.get("decode_ms_per_token_rounds", [])),
            _span(ge.get("decode_ms_per_token_rounds", [])),
            "-" if ratio is None else f"{ratio:.2f}",
            "-" if s.get("paired_ratio") is None else _span(s["paired_ratio"]["rounds"]),
            _span(rx.get("prompt_ms_rounds", []), ".1f"),
            _span(ge.get("prompt_ms_rounds", []), ".1f"),
            _bytes_cell(cell.get("bytes_per_token", {})),
            "-" if s.get("per_byte_ratio") is None else f"{s['per_byte_ratio']:.2f}",
        ]  # fmt: skip
        if st["reference"]:  # the same fp32 eager figure on every row, with how many times slower it is
            r, ours = ref.get(cell["config"]), rx.get("decode_ms_per_token_rounds", [])
            eager = r and r.get("decode_ms_per_token")
            row.append(f"{eager:.2f} ({eager / statistics.median(ours):.0f}x)" if eager and ours else "")
        out.append("| " + " | ".join(row) + " |")
    out += [f"\nNote: {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"


def _bytes_cell(b: dict[str, dict[str, int]]) -> str:
    mb = lambda n: f"{n / 1e6:.2f}"  # noqa: E731
    ours = f"{mb(b['rxt-edge']['total'])} ({mb(b['rxt-edge']['stm_kv'])})" if "rxt-edge" in b else "-"
    return f"{ours} / {mb(b['genai']['total'])}" if "genai" in b else ours


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Build what is missing, time the rounds, and return the report (the JSON document)."""
    from rxt_edge.runtimes import providers

    try:
        providers.resolve_provider(args.provider)
    except (ValueError, providers.ProviderUnavailableError) as e:
        raise BenchError(str(e)) from None
    notes: list[str] = []
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "load_average_start": load_average(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json_out", "workdir")}
        | {"query_tokens": QUERY_TOKENS, "answer_tokens": ANSWER_TOKENS, "rxt_schemes": RXT_SCHEMES},
        "versions": peer.versions(),
        "peer_settings": peer.peer_settings(args.threads, args.provider),
        "notes": notes,
    }
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="rxt-edge-decode-compare-")
    workdir = Path(args.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        cells, models = _cells(args, workdir, notes)
        with pinned(args.pin):  # builds above use every core; the timed children only the pinned ones
            _time_rounds(cells, args.rounds, notes)
        if args.reference:
            report["reference"] = _reference(models, notes)
    finally:
        if tmp is not None:
            tmp.cleanup()
    summarize(cells)
    report["cells"] = [{k: v for k, v in c.items() if k != "jobs"} for c in cells]
    report["load_average_end"] = load_average()
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rxt_edge.bench.decode_compare",
        description="rxt-edge against onnxruntime-genai on a same-dims Llama: decode ms/token side by side.",
    )
    p.add_argument("--provider", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of both engines (and torch)")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="presets, comma-separated")
    p.add_argument(
        "--precisions",
        default=None,
        help="comma-separated; default fp32,int8,int4 on cpu, fp16,fp32 on cuda (genai: fp16 only there)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="keep packages and peers here, reuse them")
    p.add_argument("--rounds", type=int, default=2, help="alternated rounds of both engines")
    p.add_argument(
        "--turns", type=int, default=8, help="measured turns per engine and round (after a warm-up)"
    )
    p.add_argument("--reference", action="store_true", help="add PyTorch eager rxlm (fp32) on the provider")
    p.add_argument("--json-out", type=Path, default=None, help="write every round's figures here")
    p.add_argument(
        "--memory-kv",
        choices=("auto", "float", "int8"),
        default="auto",
        help="our int8/int4 packages' memory cross-attention K/V form (rxt-edge quantize --memory-kv)",
    )
    p.add_argument(
        "--pin",
        type=parse_cpus,
        default=None,
        help="run both engines' timed processes on these CPUs only, e.g. 3 or 2-3 (Linux); on a many-core "
        "host where a process lands moves its figures by up to 2x",
    )
    return p


def parse_cpus(spec: str) -> list[int]:
    """'3', '2-3' or '1,4-5' -> sorted CPU numbers."""
    cpus: set[int] = set()
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"CPU list like 3, 2-3 or 1,4-5 expected, got {spec!r}") from None
    if not cpus or min(cpus) < 0:
        raise argparse.ArgumentTypeError(f"CPU list like 3, 2-3 or 1,4-5 expected, got {spec!r}")
    return sorted(cpus)


@contextlib.contextmanager
def pinned(cpus: list[int] | None) -> Iterator[None]:
    """This process, and the children it starts meanwhile (they inherit it), on `cpus` only; restored after.

    On the lent 16-core host the same engine, unpinned, gave 3.0 or 7.4 ms/token from one process to the next
    (where it landed: its core's caches, its memory's node), enough to flip a comparison."""
    if not cpus:
        yield
        return
    if not hasattr(os, "sched_setaffinity"):
        raise BenchError("--pin needs os.sched_setaffinity (Linux)")
    before = os.sched_getaffinity(0)
    if not set(cpus) <= before:
        raise BenchError(f"--pin {cpus}: this process may run on CPUs {sorted(before)} only")
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    args.precisions = [
        p.strip()
        for p in (args.precisions or ",".join(DEFAULT_PRECISIONS[args.provider])).split(",")
        if p.strip()
    ]
    try:
        if min(args.threads, args.rounds, args.turns) < 1:
            raise BenchError("--threads, --rounds and --turns must be at least 1")
        for p in args.precisions:
            rxt_scheme(p)
        report = compare(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json_out:
        write_json(report, args.json_out)
    print(markdown_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
