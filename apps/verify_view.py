"""Terminal views of `rxt-edge verify` reports (rich tables); the checks themselves live in rxt_edge.export."""

from __future__ import annotations

from rich.console import Console

err = Console(stderr=True)


def print_verify(report) -> None:
    """Per-graph differences and runtime agreement against our torch model, then PASS or the failures."""
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
    _verdict(table, report, f"within tolerances {report.tolerances}")


def print_rxlm_verify(report) -> None:
    """Token agreement and STM difference against rxlm itself, turn by turn, then PASS or the failures."""
    from rich.table import Table

    table = Table(title=f"verify ({report.precision}) against {report.reference}: token for token")
    for col in ("turn", "tokens", "rxlm answer", "runtime answer", "STM diff"):
        table.add_column(col, justify="right")
    for t in report.turns:
        table.add_row(
            str(t.turn),
            f"{t.token_agreement:.0%}" + ("" if t.comparable else " (n/a)"),
            str(len(t.rxlm_answer)),
            str(len(t.runtime_answer)),
            f"{t.stm_max_diff:.1e}",
        )
    _verdict(table, report, f"the runtime answers as {report.reference} does")


def _verdict(table, report, passed: str) -> None:
    """The table, then PASS (stdout) or each failure (stderr)."""
    Console().print(table)
    if report.passed:
        Console().print(f"[green]PASS[/] {passed}")
    for f in report.failures:
        err.print(f"[red]FAIL[/] {f}")
