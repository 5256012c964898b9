"""The `rxt-edge` command line: export, verify, chat, quantize, bench.

The only place where the torch side (rxt_edge.export), the runtime (rxt_edge) and the terminal UI meet. Heavy
imports happen inside each command so `rxt-edge chat` never imports torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="rxt-edge",
    help="Run Reactive Transformer (RxT) models on laptops and edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@app.command()
def export(
    checkpoint: Annotated[
        str, typer.Argument(help="Checkpoint directory (rxlm or native) or a Hugging Face hub id.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model package directory to create.")],
    dtype: Annotated[str, typer.Option(help="Graph precision: fp32 or fp16.")] = "fp32",
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    tokenizer: Annotated[
        Path | None, typer.Option(help="Tokenizer file, if the checkpoint has none.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing package directory.")] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Allow .bin/.pt weights (runs pickle: trusted files only).")
    ] = False,
    fuse: Annotated[
        bool,
        typer.Option(
            help="Fuse RoPE into onnxruntime's RotaryEmbedding op and q/k/v projections into one MatMul (--no-fuse: standard ONNX ops, one MatMul each)."
        ),
    ] = True,
) -> None:
    """Export a checkpoint to a model package: decoder, encoder, memory-update and memory-kv graphs + manifest."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rxt_edge.export.checkpoints import CheckpointError, load_checkpoint
    from rxt_edge.export.onnx_export import ExportError, export_package

    try:
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
                progress=lambda name: bar.update(task, description=f"exporting the {name} graph"),
                fuse=fuse,
            )
        except ExportError as e:
            raise fail(str(e)) from None
    d = manifest.model
    err.print(
        f"[green]exported[/] {output}: {d.memory_layers} memory layers, {d.stm_slots} slots x {d.dim}, "
        f"vocab {d.vocab_size}, {manifest.precision}"
    )


@app.command()
def verify(
    model_dir: Annotated[Path, typer.Argument(help="Model package directory.")],
    against: Annotated[str, typer.Option(help="The checkpoint the package was exported from.")],
    turns: Annotated[int, typer.Option(min=1, help="Conversation turns to compare.")] = 5,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 24,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle")] = False,
) -> None:
    """Compare a package with its source checkpoint over a multi-turn greedy conversation (exit 1 if out of tolerance)."""
    from rxt_edge.export.checkpoints import CheckpointError, load_checkpoint
    from rxt_edge.export.verify import verify_package

    from rxt_edge.manifest import ManifestError

    try:
        model, _ = load_checkpoint(against, allow_pickle=allow_pickle)
        report = verify_package(model_dir, model, turns=turns, max_new_tokens=max_new_tokens)
    except (CheckpointError, ManifestError) as e:
        raise fail(str(e)) from None
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_verify(report)
    raise typer.Exit(0 if report.passed else 1)


def _print_verify(report) -> None:
    from rich.table import Table

    table = Table(title=f"verify ({report.precision}): max abs differences per graph; drift is informational")
    for col in (
        "turn",
        "logits",
        "mem kv",
        "encoder",
        "update",
        "tokens",
        "STM write",
        "drift",
    ):
        table.add_column(col, justify="right")
    for t in report.turns:
        table.add_row(
            str(t.turn),
            f"{t.decoder_logits_max_diff:.1e}",
            f"{t.memory_kv_max_diff:.1e}",
            f"{t.encoder_max_diff:.1e}",
            f"{t.memory_update_max_diff:.1e}",
            f"{t.token_agreement:.0%}" + ("" if t.comparable else " (n/a)"),
            f"{t.runtime_stm_step_diff:.1e}",
            f"{t.runtime_stm_max_diff:.1e}",
        )
    Console().print(table)
    if report.passed:
        Console().print(f"[green]PASS[/] within tolerances {report.tolerances}")
    else:
        for f in report.failures:
            err.print(f"[red]FAIL[/] {f}")


@app.command()
def chat(
    model_dir: Annotated[
        Path | None, typer.Argument(help="Model package directory (default: the shipped demo model).")
    ] = None,
    provider: Annotated[str, typer.Option(help="Execution provider: cpu, cuda or dml.")] = "cpu",
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads per graph (default: ORT's).")
    ] = None,
    system: Annotated[str | None, typer.Option(help="System prompt, written into the memory first.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue from a snapshot saved with /save.")] = None,
    message: Annotated[
        list[str] | None,
        typer.Option(
            "--message", "-m", help="Ask this and exit (repeat for several turns; one answer per line)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Non-interactive; one JSON object per turn: query, answer, stats.")
    ] = False,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Longest answer, in tokens.")] = 256,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy (the default).")] = 0.0,
    top_k: Annotated[int, typer.Option(min=0, help="Sample from the k best tokens (0 = off).")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass in (0, 1] (1 = off).")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Random seed for sampling (reproducible runs).")] = None,
) -> None:
    """Chat with a model (the shipped demo by default): streamed answers, slash commands, saved memories.

    With --message, --json or piped stdin (one message per line) it answers and exits: one answer per line
    (line breaks become spaces), or with --json one object per turn with the exact answer and its stats."""
    from rxt_edge.apps.chat import Generation, run

    options = Generation(max_new_tokens, temperature, top_k, top_p, seed=seed)
    raise typer.Exit(run(model_dir, provider, threads, options, system, resume, message, as_json))


@app.command()
def bench(
    model_dir: Annotated[
        Path | None, typer.Argument(help="Model package to benchmark (or use --config).")
    ] = None,
    config: Annotated[
        str | None, typer.Option(help="Random-weight preset: alpha-micro, alpha-mini, beta-like-moe, tiny.")
    ] = None,
    provider: Annotated[str, typer.Option(help="Execution provider: cpu, cuda or dml.")] = "cpu",
    turns: Annotated[int, typer.Option(min=2, help="Conversation turns of the latency curves.")] = 64,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the latency curves as a PNG (matplotlib).")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the tables as Markdown.")] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="onnxruntime and torch threads (default: all CPUs).")
    ] = None,
    query_tokens: Annotated[int, typer.Option(min=1)] = 32,
    answer_tokens: Annotated[int, typer.Option(min=2, help="Fixed answer length ([EOS] ignored).")] = 32,
    typing_delays: Annotated[
        str, typer.Option(help="Scripted typing delays in seconds, comma-separated.")
    ] = "0,0.05,0.5",
    baseline: Annotated[
        str, typer.Option(help="Stateless baseline: reread, cached, both or none.")
    ] = "reread",
    reference: Annotated[bool, typer.Option(help="PyTorch eager rows (needs torch).")] = True,
    quantize: Annotated[
        str,
        typer.Option(
            help="Quantized rows: `rxt-edge quantize` schemes, comma-separated (int8-dynamic,int4-block), or none."
        ),
    ] = "int8-dynamic",
    quant_preset: Annotated[
        str, typer.Option(help="int8-dynamic preset (avx2, avx512, avx512_vnni, arm64) or auto (this CPU's).")
    ] = "auto",
    per_tensor: Annotated[
        bool,
        typer.Option(
            help="int8-dynamic rows: one weight scale per matrix (as `rxt-edge quantize --per-tensor`)."
        ),
    ] = False,
    workdir: Annotated[Path | None, typer.Option(help="Keep exported packages here and reuse them.")] = None,
    speed_turns: Annotated[int, typer.Option(min=1)] = 8,
    update_turns: Annotated[int, typer.Option(min=2)] = 16,
) -> None:
    """Measure per-turn latency against a stateless baseline, speed against PyTorch, the memory update, memory use."""
    from rxt_edge.export.bench import (
        BenchError,
        BenchOptions,
        markdown_report,
        plot_available,
        print_report,
        run_bench,
        write_json,
        write_plot,
    )

    if plot and not plot_available():
        raise fail("--plot needs matplotlib: pip install 'rxt-edge[bench]'")
    try:
        delays = tuple(float(x) for x in typing_delays.split(",") if x.strip())
        opts = BenchOptions(
            model_dir=model_dir, config=config, provider=provider, threads=threads, turns=turns,
            query_tokens=query_tokens, answer_tokens=answer_tokens, typing_delays=delays, update_turns=update_turns,
            speed_turns=speed_turns, baseline=baseline, reference=reference,
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


@app.command()
def quantize(
    model_dir: Annotated[Path, typer.Argument(help="fp32 model package directory.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Quantized package directory to create.")],
    scheme: Annotated[
        str, typer.Option(help="int8-dynamic, int8-block, int4-block (CPU) or fp16 (GPU).")
    ] = "int8-dynamic",
    preset: Annotated[
        str | None, typer.Option(help="int8-dynamic target: avx2 (default), avx512, avx512_vnni, arm64.")
    ] = None,
    per_tensor: Annotated[
        bool,
        typer.Option(
            help="int8-dynamic: one weight scale per matrix, not per output channel (faster, less exact)."
        ),
    ] = False,
    graphs: Annotated[
        str | None, typer.Option(help="Comma-separated graphs to quantize (default: the measured choice).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    report: Annotated[bool, typer.Option(help="Compare with the source on a 6-turn script.")] = True,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for the report.")] = None,
    provider: Annotated[
        str, typer.Option(help="Execution provider of the report: cpu, cuda or dml.")
    ] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result and report as JSON.")] = False,
) -> None:
    """Quantize a model package (new directory, manifest updated) and report quality and speed against it."""
    from rxt_edge.export.quant_report import compare_packages, print_quant_report
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
            )
        with err.status("measuring the report (quality, then speed)"):
            rep = compare_packages(model_dir, output, threads=threads, provider=provider) if report else None
    except (QuantizeError, ManifestError) as e:
        raise fail(str(e)) from None
    if as_json:
        out = {"output": str(output), "quantization": result.manifest.quantization}
        print(json.dumps({**out, "report": rep.to_json() if rep else None}, indent=2))
        return
    err.print(f"[green]wrote[/] {output} ({scheme}, graphs: {', '.join(result.scope.graphs)})")
    if rep:
        print_quant_report(rep, Console())


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
