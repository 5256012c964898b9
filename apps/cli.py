"""The `rxt-edge` command line: export, verify, chat, info, quantize, bench.

The only place where the torch side (rxt_edge.export), the runtime (rxt_edge) and the terminal UI meet. Heavy
imports happen inside each command so `rxt-edge chat` never imports torch.

Conventions: `-h`/`--help` everywhere; `--json` is always a flag (print JSON to stdout), a JSON file is
`--json-out PATH`; plain click help (no boxed tables), so descriptions wrap at any terminal width.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape

from rxt_edge.sampling import GenerationConfig

from .console import err, fail
from .kernels_cli import app as kernels_app
from .quantize_options import (
    DEFAULT_QUANT_PRESET,
    QUANT_PRESETS,
    QUANT_SCHEMES,
    refused_combination,
)

app = typer.Typer(
    name="rxt-edge",
    help="Run Reactive Transformer (RxT) models on laptops and edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's help: no metavar column, readable at 80 columns
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
# the MODEL_DIR argument of the commands that default to the shipped demo (chat, info, serve)
DemoOrPackage = Annotated[
    Path | None,
    typer.Argument(metavar="MODEL_DIR", help="Model package directory (default: the shipped demo model)."),
]
GENERATION = GenerationConfig()  # chat's defaults are the API's
app.add_typer(kernels_app, name="kernels", short_help="Build and check rxt-edge's own CPU kernels.")


def _print_version(value: bool) -> None:
    if value:
        from rxt_edge import __version__

        print(f"rxt-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Run Reactive Transformer (RxT) models on laptops and edge devices."""


def _import_torch(what: str) -> None:
    """Show a spinner from the first second while torch imports (5-15 s cold), and say if it is missing."""
    with err.status(f"{what}: importing torch"):
        try:
            import torch  # noqa: F401
        except ImportError:
            raise fail(
                f"{what} needs the export extra (torch): pip install 'rxt-edge[export]' "
                "(CPU-only torch: add --index-url https://download.pytorch.org/whl/cpu)"
            ) from None


@app.command(short_help="Export a checkpoint to a model package.")
def export(
    checkpoint: Annotated[
        str,
        typer.Argument(
            metavar="CHECKPOINT", help="Checkpoint directory (rxlm or native) or a Hugging Face hub id."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model package directory to create.")],
    dtype: Annotated[str, typer.Option(help="Graph precision: fp32 or fp16.")] = "fp32",
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            help="Tokenizer file (tokenizer.json or .model), if the checkpoint directory has none "
            "(rxlm's save_pretrained writes none)."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing package (only one rxt-edge wrote; never the source).")
    ] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Allow .bin/.pt weights (runs pickle: trusted files only).")
    ] = False,
    fuse: Annotated[
        bool,
        typer.Option(
            help="Fuse RoPE into onnxruntime's RotaryEmbedding op and q/k/v projections into one MatMul (--no-fuse: standard ONNX ops, one MatMul each)."
        ),
    ] = True,
    kv_cache: Annotated[
        str,
        typer.Option(
            help="Decoder KV cache: static (updated in place by GroupQueryAttention; fastest), dynamic (for CUDA "
            "fp32 and other runtimes), or auto (static where the model allows it)."
        ),
    ] = "auto",
) -> None:
    """Export a checkpoint to a model package: decoder, encoder, memory-update and memory-kv graphs + manifest.

    The package keeps the checkpoint's licence; export prints the one the checkpoint declares."""
    _import_torch("export")
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rxt_edge.apps.licence import declared_licence
    from rxt_edge.export.checkpoints import CheckpointError, load_checkpoint
    from rxt_edge.export.onnx_export import ExportError, export_package

    try:
        with err.status(f"reading the checkpoint {checkpoint}"):
            model, source = load_checkpoint(checkpoint, allow_pickle=allow_pickle)
    except CheckpointError as e:
        raise fail(str(e)) from None
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task("loading", total=None)
        try:
            manifest = export_package(
                model,
                source,
                output,
                precision=dtype,
                opset=opset,
                tokenizer=tokenizer,
                overwrite=overwrite,
                progress=lambda step: bar.update(task, description=step),
                fuse=fuse,
                kv_cache=kv_cache,
                release_weights=True,  # the model is not used after: its memory goes to the graph checks
            )
        except ExportError as e:
            raise fail(str(e)) from None
    d = manifest.model
    err.print(
        f"[green]exported[/] {output}: {d.memory_layers} memory layers, {d.stm_slots} slots x {d.dim}, "
        f"vocab {d.vocab_size}, {manifest.precision}, {manifest.graphs['decoder'].kv_cache} KV cache"
    )
    licence = declared_licence(Path(source.path))
    if licence:
        err.print(
            f"licence: the checkpoint declares {escape(licence)}; the package keeps the model's licence "
            "(rxt-edge's Apache-2.0 covers rxt-edge, not the model)",
            highlight=False,
        )


@app.command(short_help="Compare a package with its checkpoint.")
def verify(
    model_dir: Annotated[Path, typer.Argument(metavar="MODEL_DIR", help="Model package directory.")],
    against: Annotated[str, typer.Option(help="The checkpoint the package was exported from.")],
    turns: Annotated[int, typer.Option(min=1, help="Conversation turns to compare.")] = 5,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Longest answer per turn, in tokens.")] = 24,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Allow .bin/.pt weights (runs pickle: trusted files only).")
    ] = False,
    reference: Annotated[
        str,
        typer.Option(
            help="torch: our model read from the checkpoint, graph by graph; rxlm: rxlm itself loads the "
            "checkpoint and answers, token for token (needs rxlm installed)."
        ),
    ] = "torch",
) -> None:
    """Compare a package with its source checkpoint over a multi-turn greedy conversation (exit 1 if out of tolerance)."""
    if reference not in ("torch", "rxlm"):
        raise fail(f"--reference must be torch or rxlm, got {reference!r}")
    _import_torch("verify")
    from rxt_edge.apps.verify_view import print_rxlm_verify, print_verify
    from rxt_edge.export.checkpoints import CheckpointError, load_checkpoint
    from rxt_edge.export.verify import verify_package
    from rxt_edge.export.verify_rxlm import RxlmUnavailableError, verify_against_rxlm

    from rxt_edge.manifest import ManifestError

    try:
        with err.status(f"verify: reading {against}, then comparing {turns} turns with {reference}"):
            if reference == "rxlm":
                report = verify_against_rxlm(model_dir, against, turns=turns, max_new_tokens=max_new_tokens)
            else:
                model, _ = load_checkpoint(against, allow_pickle=allow_pickle, narrow_experts=True)
                report = verify_package(model_dir, model, turns=turns, max_new_tokens=max_new_tokens)
    except (CheckpointError, ManifestError, RxlmUnavailableError) as e:
        raise fail(str(e)) from None
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    elif reference == "rxlm":
        print_rxlm_verify(report)
    else:
        print_verify(report)
    raise typer.Exit(0 if report.passed else 1)


@app.command(short_help="Chat with a model (default: the demo).")
def chat(
    model_dir: DemoOrPackage = None,
    provider: Annotated[str, typer.Option(help="Execution provider: cpu, cuda or dml.")] = "cpu",
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads per graph (default: ORT's).")
    ] = None,
    system: Annotated[str | None, typer.Option(help="System prompt, written into the memory first.")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue from a snapshot saved with /save or --save.")
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option(
            help="When the chat ends, save the memory to this snapshot file (replaced if it exists: "
            "a script can --resume and --save one file)."
        ),
    ] = None,
    message: Annotated[
        list[str] | None,
        typer.Option(
            "--message",
            "-m",
            metavar="TEXT",
            help="Ask this and exit (repeat for several turns; one answer per line).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Non-interactive; one JSON object per turn: query, answer, stats.")
    ] = False,
    max_new_tokens: Annotated[
        int, typer.Option(help="Longest answer, in tokens (a turn's length limit may cut it sooner).")
    ] = GENERATION.max_new_tokens,
    temperature: Annotated[
        float, typer.Option(help="0 = greedy (the default); higher = more varied answers.")
    ] = GENERATION.temperature,
    top_k: Annotated[int, typer.Option(help="Sample from the k best tokens (0 = off).")] = GENERATION.top_k,
    top_p: Annotated[
        float, typer.Option(help="Nucleus sampling mass in (0, 1] (1 = off).")
    ] = GENERATION.top_p,
    repetition_penalty: Annotated[
        float, typer.Option(help="Penalise tokens already in the answer: > 1 repeats less (1 = off).")
    ] = GENERATION.repetition_penalty,
    seed: Annotated[
        int | None, typer.Option(help="Random seed for sampling (reproducible runs).")
    ] = GENERATION.seed,
    truncate: Annotated[
        bool,
        typer.Option(
            "--truncate",
            help="Keep the end of a message longer than the model's turn (and the start of a long "
            "--system prompt) instead of refusing it; `rxt-edge info` shows the limit.",
        ),
    ] = False,
) -> None:
    """Chat with a model (the shipped demo by default): streamed answers, slash commands, saved memories.

    With --message, --json or piped stdin (one message per line) it answers and exits: one answer per line
    (line breaks become spaces), or with --json one object per turn with the exact answer and its stats.
    Piped lines are all messages, "/save x" too: slash commands work at a terminal only; scripts keep the
    memory with --resume and --save."""
    from rxt_edge.apps.chat import ChatError, generation_config, run

    try:
        options = generation_config(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            seed=seed,
            truncate=truncate,
        )
    except ChatError as e:
        raise fail(str(e)) from None
    raise typer.Exit(run(model_dir, provider, threads, options, system, resume, message, as_json, save))


@app.command(short_help="Show what a model package is.")
def info(
    model_dir: DemoOrPackage = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False,
) -> None:
    """What a model package is: dims, per-turn limits, files and sizes, quantization, tokenizer, provenance."""
    from rxt_edge.apps.demo import DemoModelMissing, find_demo_model
    from rxt_edge.apps.info import info_lines, package_info

    from rxt_edge.manifest import ManifestError

    try:
        facts = package_info(find_demo_model() if model_dir is None else model_dir)
    except (ManifestError, DemoModelMissing) as e:
        raise fail(str(e)) from None
    print(json.dumps(facts, indent=2) if as_json else "\n".join(info_lines(facts)))


@app.command(short_help="Measure latency, speed and memory use.")
def bench(
    model_dir: Annotated[
        Path | None, typer.Argument(metavar="MODEL_DIR", help="Model package to benchmark (or use --config).")
    ] = None,
    config: Annotated[
        str | None, typer.Option(help="Random-weight preset: alpha-micro, alpha-mini, beta-like-moe, tiny.")
    ] = None,
    provider: Annotated[str, typer.Option(help="Execution provider: cpu, cuda or dml.")] = "cpu",
    turns: Annotated[int, typer.Option(min=2, help="Conversation turns of the latency curves.")] = 64,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Write the full report to this JSON file.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the latency curves as a PNG (matplotlib).")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the tables as Markdown.")] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="onnxruntime and torch threads (default: all CPUs).")
    ] = None,
    query_tokens: Annotated[int, typer.Option(min=1, help="Scripted query length, in tokens.")] = 32,
    answer_tokens: Annotated[int, typer.Option(min=2, help="Fixed answer length ([EOS] ignored).")] = 32,
    typing_delays: Annotated[
        str, typer.Option(help="Scripted typing delays in seconds, comma-separated.")
    ] = "0,0.05,0.5",
    baseline: Annotated[
        str, typer.Option(help="Stateless baseline: reread, cached, both or none.")
    ] = "reread",
    reference: Annotated[bool, typer.Option(help="PyTorch eager rows (needs torch).")] = True,
    peer: Annotated[
        bool, typer.Option(help="onnxruntime-genai rows: a same-dims Llama (needs rxt-edge[peer]).")
    ] = True,
    quantize: Annotated[
        str,
        typer.Option(
            help="Quantized rows: `rxt-edge quantize` schemes, comma-separated (e.g. int8,int4), or none."
        ),
    ] = "int8",
    quant_preset: Annotated[
        Literal[(*QUANT_PRESETS, "auto")],
        typer.Option(
            help="int8-dynamic preset, as quantize's --preset; auto: this CPU's.",
        ),
    ] = DEFAULT_QUANT_PRESET,
    per_tensor: Annotated[
        bool,
        typer.Option(
            help="int8-dynamic rows: one weight scale per matrix (as `rxt-edge quantize --per-tensor`)."
        ),
    ] = False,
    workdir: Annotated[Path | None, typer.Option(help="Keep exported packages here and reuse them.")] = None,
    speed_turns: Annotated[
        int | None, typer.Option(min=1, help="Turns of the decode-speed rows (default: min(8, --turns)).")
    ] = None,
    update_turns: Annotated[
        int | None, typer.Option(min=2, help="Turns of the memory-update timing (default: min(16, --turns)).")
    ] = None,
) -> None:
    """Measure per-turn latency against a stateless baseline, speed against PyTorch, the memory update, memory use."""
    from rxt_edge.bench.options import BenchError, BenchOptions
    from rxt_edge.bench.report import markdown_report, plot_available, print_report, write_json, write_plot
    from rxt_edge.bench.run import run_bench

    if plot and not plot_available():
        raise fail("--plot needs matplotlib: pip install 'rxt-edge[bench]'")
    try:
        delays = tuple(float(x) for x in typing_delays.split(",") if x.strip())
        opts = BenchOptions(
            model_dir=model_dir, config=config, provider=provider, threads=threads, turns=turns,
            query_tokens=query_tokens, answer_tokens=answer_tokens, typing_delays=delays, update_turns=update_turns,
            speed_turns=speed_turns, baseline=baseline, reference=reference, peer=peer,
            quantize=None if quantize == "none" else quantize, quant_preset=quant_preset, quant_per_tensor=per_tensor,
            workdir=workdir,
        )  # fmt: skip
        report = run_bench(opts, console=err)
        if json_out:
            write_json(report, json_out)
        if plot:
            write_plot(report, plot)
        if markdown:
            markdown.write_text(markdown_report(report), encoding="utf-8")
    except (BenchError, ValueError) as e:
        raise fail(str(e)) from None
    print_report(report, Console())


@app.command(short_help="Quantize a model package (int8, int4, fp16).")
def quantize(
    model_dir: Annotated[Path, typer.Argument(metavar="MODEL_DIR", help="fp32 model package directory.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Quantized package directory to create.")],
    scheme: Annotated[
        Literal[QUANT_SCHEMES],
        typer.Option(
            help="int8, int4 (MatMulNBits, the measured defaults), int8-dynamic, int8-block, int4-block (block "
            "32) or fp16 (GPU).",
        ),
    ] = "int8",
    preset: Annotated[
        Literal[QUANT_PRESETS] | None,
        typer.Option(
            help=f"int8-dynamic only: the target CPU (default {DEFAULT_QUANT_PRESET}: runs on every x86-64 CPU).",
        ),
    ] = None,
    per_tensor: Annotated[
        bool,
        typer.Option(
            help="int8-dynamic: one weight scale per matrix, not per output channel (faster, less exact)."
        ),
    ] = False,
    block_size: Annotated[
        int | None,
        typer.Option(
            help="int8/int4/*-block: weights per scale along K (16, 32, 64, 128, 256; default: the scheme's)."
        ),
    ] = None,
    accuracy_level: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=4,
            help="int8/int4/*-block: MatMulNBits compute (4: int8 activations, fastest on CPU; 0-3: float).",
        ),
    ] = None,
    graphs: Annotated[
        str | None, typer.Option(help="Comma-separated graphs to quantize (default: the measured choice).")
    ] = None,
    memory_kv: Annotated[
        Literal["auto", "float", "int8", "expanded"],
        typer.Option(
            help="The STM's K/V every token reads: int8 (a quarter of the bytes; CPU, static-cache exports), "
            "expanded (repeated per query head: CUDA's decode attention kernel) or float. auto: int8 where it "
            "runs and pays (2 MB a token or more), expanded for fp16, else float (docs/quantization.md)."
        ),
    ] = "auto",
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing package (only one rxt-edge wrote; never the source).")
    ] = False,
    report: Annotated[bool, typer.Option(help="Compare with the source on a 6-turn script.")] = True,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for the report.")] = None,
    provider: Annotated[
        str, typer.Option(help="Execution provider of the report: cpu, cuda or dml.")
    ] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result and report as JSON.")] = False,
) -> None:
    """Quantize a model package (new directory, manifest updated) and report quality and speed against it."""
    refused = refused_combination(scheme, preset, per_tensor, graphs, block_size, accuracy_level)
    if refused:  # before anything loads or any spinner shows
        raise fail(refused)
    from rxt_edge.bench.quant_report import compare_packages, print_quant_report
    from rxt_edge.export.quantize import DEFAULT_SCOPES, QuantizeError, Scope, quantize_package

    from rxt_edge.manifest import ManifestError

    try:
        scope = None
        if graphs and scheme in DEFAULT_SCOPES:
            scope = Scope(tuple(g.strip() for g in graphs.split(",") if g.strip()), head=True)
        with err.status(f"quantizing ({scheme})"):
            result = quantize_package(
                model_dir,
                output,
                scheme,
                preset,
                scope,
                overwrite=overwrite,
                per_channel=False if per_tensor else None,
                block_size=block_size,
                accuracy_level=accuracy_level,
                memory_kv=None if memory_kv == "auto" else memory_kv,
            )
        with err.status("measuring the report (quality, then speed)"):
            rep = compare_packages(model_dir, output, threads=threads, provider=provider) if report else None
    except (QuantizeError, ManifestError) as e:
        raise fail(str(e)) from None
    if as_json:
        out = {"output": str(output), "quantization": result.manifest.quantization}
        print(json.dumps({**out, "report": rep.to_json() if rep else None}, indent=2))
        return
    kv = result.manifest.quantization.get("memory_kv", "float")
    err.print(
        f"[green]wrote[/] {output} ({scheme}, graphs: {', '.join(result.scope.graphs)}; memory K/V: {kv})"
    )
    if rep:
        print_quant_report(rep, Console())


@app.command(short_help="Serve a model over an OpenAI-compatible HTTP API (stateful).")
def serve(
    model_dir: DemoOrPackage = None,
    host: Annotated[
        str, typer.Option(help="Address to bind (loopback unless you mean otherwise).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    store: Annotated[
        str | None,
        typer.Option(
            help="State store: a SQLite file path (default ~/.local/state/rxt-edge/serve.sqlite3) or redis://host:port/db."
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="RXT_EDGE_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1/."),
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="Model id clients send (default: from the package).")
    ] = None,
    provider: Annotated[str, typer.Option(help="Execution provider: cpu, cuda or dml.")] = "cpu",
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads per graph (default: ORT's).")
    ] = None,
    max_concurrent: Annotated[int, typer.Option(min=1, help="Turns decoding at once (decode slots).")] = 8,
    max_waiting: Annotated[int, typer.Option(min=0, help="Turns queued beyond those before 429.")] = 32,
    max_output_tokens: Annotated[
        int | None, typer.Option(min=1, help="Largest answer a request may ask for.")
    ] = None,
    max_body_kb: Annotated[int, typer.Option(min=1, help="Largest request body, in KiB.")] = 1024,
    ttl: Annotated[
        float | None, typer.Option(min=1, help="Forget stored states after this many seconds.")
    ] = None,
    max_states: Annotated[
        int | None, typer.Option(min=1, help="Keep at most this many states (SQLite).")
    ] = None,
    state_dtype: Annotated[
        str, typer.Option(help="Stored STM precision: float32 or float16 (half the bytes).")
    ] = "float32",
) -> None:
    """Serve a model over OpenAI's Responses, Conversations and Chat Completions APIs, with a web chat at /.

    Each conversation's state is its fixed-size STM, stored after every turn (docs/serve.md)."""
    try:
        from rxt_edge.apps.serve import run
        from rxt_edge.apps.serve.app import ServeOptions, default_store_path
        from rxt_edge.apps.serve.store import StoreError
    except ImportError as e:
        raise fail(f"rxt-edge serve needs the serve extra: pip install 'rxt-edge[serve]' ({e})") from None
    from rxt_edge.apps.demo import DemoModelMissing, find_demo_model
    from rxt_edge.runtimes.providers import ProviderUnavailableError

    from rxt_edge.manifest import ManifestError

    if state_dtype not in ("float32", "float16"):
        raise fail(f"--state-dtype must be float32 or float16, got {state_dtype!r}")
    try:
        package = find_demo_model() if model_dir is None else model_dir
    except DemoModelMissing as e:
        raise fail(str(e)) from None
    if store is None:
        store = str(default_store_path())
        Path(store).parent.mkdir(parents=True, exist_ok=True)
    name = model_name or ("rxt-edge-demo" if model_dir is None else Path(package).resolve().name)
    options = ServeOptions(
        name, api_key, max_body_kb * 1024, max_output_tokens, max_concurrent, max_waiting, state_dtype
    )
    try:
        run(Path(package), options, store, host, port, provider, threads, ttl, max_states)
    except (StoreError, ManifestError, ProviderUnavailableError) as e:
        raise fail(str(e)) from None


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
