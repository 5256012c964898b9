"""`rxt-edge kernels build | status`: rxt-edge's own CPU kernels (runtimes/native_kernels.py), built on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .console import err, fail

app = typer.Typer(
    help="Build and check rxt-edge's own CPU kernels (int8 memory attention, int4 products; optional).",
    no_args_is_help=True,
    subcommand_metavar="COMMAND [ARGS]",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.command(short_help="Compile the kernel library for this machine.")
def build(
    headers: Annotated[
        Path | None,
        typer.Option(
            help="onnxruntime's include folder (default: Debian's libonnxruntime-dev 1.21, downloaded)."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Where to write it (default: where CPU sessions look)."),
    ] = None,
) -> None:
    """Compile runtimes/native/*.cc with this machine's C++ compiler; CPU sessions use the library from then on
    (RXT_EDGE_KERNELS=off turns it off). Needs g++ or clang++ and an x86-64 CPU with AVX2."""
    from rxt_edge.runtimes.kernel_build import KernelBuildError
    from rxt_edge.runtimes.kernel_build import build as build_library

    try:
        path = build_library(output, headers, say=lambda line: err.print(escape(line), highlight=False))
    except KernelBuildError as e:
        raise fail(str(e)) from None
    print(f"built {path}")
    if output is not None:
        print(f"CPU sessions use it with RXT_EDGE_KERNELS={path}")


@app.command(short_help="Say whether CPU sessions use the kernels.")
def status() -> None:
    """Whether CPU sessions register the kernel library, and where it is (or why not)."""
    from rxt_edge.runtimes.native_kernels import status as kernel_status

    print(f"kernels: {kernel_status()}")
