"""``fairserve sweep``: a grid of simulations, resumable, on Ray or a process pool."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fairserve.cli.options import fail
from fairserve.cli.output import FittingConsole

__all__ = ["register", "sweep_cmd"]

Opt = typer.Option


def _cell(value: float | None, scale: float, digits: int) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def print_sweep_summary(table: Any, console: Console) -> None:
    """One row per configuration and load: each figure's median over the seeds."""
    from fairserve.report.sweep import FIGURES, sweep_labels, sweep_summary

    if table.height == 0:
        return
    labels = sweep_labels(table)
    grouped = sweep_summary(table)
    figures = [f for f in FIGURES if f[0] in grouped.columns]
    seeds = max(grouped["seeds"].to_list())
    out = Table(title=f"Sweep: median over seeds ({seeds} per row)")
    for col in [*labels, "load"]:
        out.add_column(col)
    for _, header, _, _ in figures:
        out.add_column(header, justify="right")
    for row in grouped.iter_rows(named=True):
        out.add_row(
            *(str(row[c]) for c in labels),
            f"{row['load']:g}",
            *(_cell(row[col], scale, digits) for col, _, scale, digits in figures),
        )
    console.print(out)


def sweep_cmd(
    spec: Annotated[Path, typer.Argument(help="Sweep spec (YAML); see docs/reports.md.")],
    out: Annotated[
        Path | None, Opt(help="Output directory (default: sweeps/<spec file stem>).")
    ] = None,
    address: Annotated[
        str | None, Opt(help="Address of an existing Ray cluster (default: a local Ray).")
    ] = None,
    no_ray: Annotated[
        bool, Opt("--no-ray", help="Run the cells in a local process pool instead of Ray.")
    ] = False,
    workers: Annotated[
        int | None, Opt(help="CPUs of the local Ray, or processes of the pool (default: all).")
    ] = None,
    progress: Annotated[bool, Opt(help="Show a progress bar.")] = True,
) -> None:
    """Run a grid of simulations (resumable); write a tidy table and load plots."""
    from fairserve.experiments.sweep import SweepError, SweepSpecError, load_sweep_spec, run_sweep

    if no_ray and address is not None:
        raise fail("give --address or --no-ray, not both")
    try:
        sweep = load_sweep_spec(spec)
        target = out if out is not None else Path("sweeps") / spec.stem
        result = run_sweep(
            sweep,
            target,
            base_dir=spec.parent,
            use_ray=not no_ray,
            address=address,
            workers=workers or os.cpu_count() or 1,
            progress=progress,
        )
    except (SweepSpecError, ValueError) as exc:
        raise fail(str(exc)) from exc
    except SweepError as exc:
        raise fail(str(exc), code=1) from exc
    console = FittingConsole()
    print_sweep_summary(result.table, console)
    console.print(
        f"{len(result.ran) + len(result.reused)} cells: {len(result.ran)} run, "
        f"{len(result.reused)} already done"
    )
    for path in result.files:
        console.print(f"  {path}")


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to the ``fairserve`` app."""
    app.command("sweep")(sweep_cmd)
