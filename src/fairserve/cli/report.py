"""``fairserve report`` and ``fairserve sweep``: the commands, added to the app by :func:`register`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fairserve.cli.options import fail

__all__ = ["register", "report_cmd", "sweep_cmd"]

Opt = typer.Option


def report_cmd(
    run_dir: Annotated[
        Path, typer.Argument(help="A run directory (written by simulate/compare/bench --out).")
    ],
    out: Annotated[
        Path | None, Opt(help="HTML file to write (default: RUN_DIR/report.html).")
    ] = None,
) -> None:
    """Write one self-contained HTML report (and PNG plots in RUN_DIR/plots/) for a run."""
    from fairserve.report.html import write_report
    from fairserve.report.run_dir import RunDirError

    try:
        path = write_report(run_dir, out)
    except RunDirError as exc:
        raise fail(str(exc)) from exc
    Console().print(f"report written to {path}")


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
    console = Console()
    console.print(
        f"{len(result.ran) + len(result.reused)} cells: {len(result.ran)} run, "
        f"{len(result.reused)} already done"
    )
    for path in result.files:
        console.print(f"  {path}")


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``sweep`` to the ``fairserve`` app."""
    app.command("report")(report_cmd)
    app.command("sweep")(sweep_cmd)
