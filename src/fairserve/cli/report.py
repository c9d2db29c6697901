"""``fairserve report``: the HTML report of a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fairserve.cli.options import fail

__all__ = ["register", "report_cmd"]

Opt = typer.Option


def report_cmd(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A run directory (simulate/compare/bench --out) or a sweep folder (sweep --out)."
        ),
    ],
    out: Annotated[
        Path | None, Opt(help="HTML file to write (default: RUN_DIR/report.html).")
    ] = None,
) -> None:
    """Write one self-contained HTML report (and PNG plots in RUN_DIR/plots/) for a run."""
    from fairserve.report.html import write_report
    from fairserve.report.run_dir import RunDirError
    from fairserve.report.sweep import is_sweep_dir, write_sweep_report

    if is_sweep_dir(run_dir):  # the knee, and the figures against load
        Console().print(f"report written to {write_sweep_report(run_dir, out)}")
        return
    try:
        path = write_report(run_dir, out)
    except RunDirError as exc:
        raise fail(str(exc)) from exc
    Console().print(f"report written to {path}")


def register(app: typer.Typer) -> None:
    """Add ``report`` to the ``fairserve`` app."""
    app.command("report")(report_cmd)
