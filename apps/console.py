"""The command line's stderr console and its one error form, shared by the `rxt-edge` commands and sub-commands."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, soft_wrap=True)  # an error line wraps where the terminal does: paths stay whole


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` to stderr; returns the Exit to raise (`raise fail(...) from None`)."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)
