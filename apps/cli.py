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

    table = Table(title=f"verify ({report.precision})")
    for col in (
        "turn",
        "decoder logits",
        "memory_kv",
        "encoder",
        "memory update",
        "tokens agree",
        "runtime STM drift",
    ):
        table.add_column(col, justify="right")
    for t in report.turns:
        table.add_row(
            str(t.turn),
            f"{t.decoder_logits_max_diff:.2e}",
            f"{t.memory_kv_max_diff:.2e}",
            f"{t.encoder_max_diff:.2e}",
            f"{t.memory_update_max_diff:.2e}",
            f"{t.token_agreement:.0%}",
            f"{t.runtime_stm_max_diff:.2e}",
        )
    Console().print(table)
    if report.passed:
        Console().print(f"[green]PASS[/] within tolerances {report.tolerances}")
    else:
        for f in report.failures:
            err.print(f"[red]FAIL[/] {f}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
