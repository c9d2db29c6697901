"""``fairserve demo``: the built-in multi-tenant scenario, every policy side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from fairserve.cli.output import FittingConsole, slo_goodput_rows

__all__ = ["demo_cmd", "register"]

Opt = typer.Option


def demo_cmd(
    out: Annotated[Path, Opt(help="Folder for the run and its report (OUT/report.html).")] = Path(
        "runs/demo"
    ),
    live: Annotated[
        bool, Opt(help="Then replay a short slice through the live gateway and compare.")
    ] = False,
    as_json: Annotated[bool, Opt("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Three tenants on two simulated H100s near capacity: every policy side by side, a verdict and a report."""
    from fairserve.experiments import demo
    from fairserve.experiments.compare import compare_runs, print_comparison, write_runs

    wl = demo.workload()
    configs = demo.configs(wl)
    runs = compare_runs(wl, configs, progress=not as_json)
    rows = [row for row, _ in runs]
    config_dict = {"demo": demo.SPEC, "policies": list(demo.POLICIES)}
    report = write_runs(out, "compare", wl, config_dict, runs, [p for p, _, _, _ in configs])
    if as_json:
        sys.stdout.write(json.dumps({"report": str(report), "rows": rows}, allow_nan=False) + "\n")
        return
    console = FittingConsole()
    console.rule(
        f"fairserve demo: interactive chat and code with SLOs, a batch tenant flooding in "
        f"bursts; {len(wl):,} requests over {demo.DURATION_S:g} s on {demo.INSTANCES} x "
        "H100-80GB (Llama-3.1-8B)"
    )
    slos = {name: wl.tenant_config(name).slo for name in wl.tenant_names()}
    print_comparison(slo_goodput_rows(rows, slos), console)
    _print_verdict(out, console)
    console.print(f"report: {report}")
    if live:
        from fairserve.experiments import demo_live

        console.rule("live: two `fairserve engine` servers behind `fairserve serve`")
        console.print("starting the engines and the gateway, replaying a 12 s slice ...")
        live_report, live_summary, sim_summary = demo_live.write_live_dir(
            out / "live", demo_live.run_live(), demo_live.run_simulated()
        )
        demo_live.print_side_by_side(live_summary, sim_summary, console)
        console.print(f"live report: {live_report}")


def _print_verdict(out: Path, console: FittingConsole) -> None:
    """The report's verdict, computed from the run directory just written."""
    from fairserve.report.run_dir import read_run_dir
    from fairserve.report.verdict import verdict

    console.rule("verdict")
    for sentence in verdict(read_run_dir(out)):
        console.print(f"- {sentence}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the ``fairserve`` app."""
    app.command("demo")(demo_cmd)
