"""``fairserve simulate`` and ``fairserve compare``: one deployment, or several side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fairserve.cli.options import (
    build_config,
    build_workload,
    component,
    components,
    err,
    fail,
    workload_and_deployment_options,
)
from fairserve.cli.output import FittingConsole, print_run, slo_goodput_rows
from fairserve.core.model import SLO
from fairserve.core.policies import POLICIES
from fairserve.core.predict import PREDICTORS
from fairserve.core.registry import ComponentError, ComponentSpec
from fairserve.core.route import ROUTERS
from fairserve.sim.run import SimConfig, SimResult, simulate
from fairserve.workload import Workload

__all__ = ["compare_cmd", "register", "simulate_cmd"]

Opt = typer.Option


def _run(workload: Workload, config: SimConfig, show_progress: bool) -> SimResult:
    n = len(workload)
    try:
        if not show_progress or n < 20_000:
            return simulate(workload.requests(), config)
        columns = (TextColumn("simulating"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())  # fmt: skip
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task("sim", total=n)
            return simulate(
                workload.requests(), config, lambda done: bar.update(task, completed=done)
            )
    except ComponentError as exc:  # a value its factory refused, a saved model that won't open
        raise fail(str(exc)) from None


def _slos(workload: Workload) -> dict[str, SLO]:
    """Each tenant's SLO, from the workload's tenant configs."""
    return {name: workload.tenant_config(name).slo for name in workload.tenant_names()}


def _json_opts(opts: dict[str, Any]) -> dict[str, Any]:
    """The command's options as JSON-able values (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in opts.items()}


def _label(spec: ComponentSpec | None) -> str | None:
    return None if spec is None else str(spec)


def _print_warnings(warnings: list[str] | tuple[str, ...], prefix: str = "") -> None:
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {escape(prefix + warning)}", highlight=False)


def simulate_cmd(
    router: Annotated[
        str, Opt(help=f"Router, name:key=value,...: {', '.join(ROUTERS.names())}.")
    ] = "round-robin",
    policy: Annotated[
        str, Opt(help=f"Policy, name:key=value,...: {', '.join(POLICIES.names())}.")
    ] = "fifo",
    predictor: Annotated[
        str | None,
        Opt(help=f"Output-length predictor, name:key=value,...: {', '.join(PREDICTORS.names())}."),
    ] = None,
    **opts: Any,
) -> None:
    """Simulate a trace or a synthetic workload on a modelled cluster."""
    pol = component(policy, POLICIES)
    rt = component(router, ROUTERS)
    pred = component(predictor, PREDICTORS) if predictor else None
    wl = build_workload(opts)
    config = build_config(opts, wl, policy=pol, router=rt, predictor=pred)
    result = _run(wl, config, show_progress=not opts["as_json"])
    error = result.error()
    if error is not None:
        if opts["as_json"]:
            data = {"error": error, **result.summary(slos=_slos(wl)).to_dict()}
            sys.stdout.write(json.dumps(data, allow_nan=False) + "\n")
        raise fail(error, code=1)
    title = f"{opts['model']} on {opts['instances']} x {opts['gpu']} (tp={opts['tp']}), {pol}"
    summary = result.summary(slos=_slos(wl))
    print_run(
        summary,
        title=title,
        as_json=opts["as_json"],
        wall_time_s=result.wall_time_s,
        failures=result.failure_reasons,
        engine_steps=result.steps,
        slos=_slos(wl),
    )
    if not opts["as_json"]:  # in the JSON they are the "warnings" key
        _print_warnings(summary.warnings)
        if summary.slo_tpot_s is not None:
            err.print(
                f"SLO-driven concurrency: batches held to the tightest TPOT objective in force "
                f"({1000 * summary.slo_tpot_s:.0f} ms at most), {summary.slo_held:,} dispatches "
                "held back: throughput traded for the objective (--slo-concurrency off: the "
                "engine limits alone)",
                highlight=False,
            )
    if opts["out"] is not None:
        from fairserve.experiments.compare import result_row, write_runs

        row = result_row(wl, str(pol), _label(pred), str(rt), result)
        labels = {"policy": str(pol), "predictor": _label(pred), "router": str(rt)}
        config_dict = _json_opts(opts) | labels
        runs = [(row, result)]
        report = write_runs(opts["out"], "simulate", wl, config_dict, runs, [str(pol)])
        err.print(f"report: {report}")


def compare_cmd(
    policies: Annotated[
        str, Opt("--policies", help="Policies, comma-separated, each name or name:key=value,...")
    ] = "fifo,sjf,vtc",
    predictor: Annotated[
        str | None,
        Opt(
            "--predictor",
            "--predictors",
            help="Output-length predictors, comma-separated (none: no prediction).",
        ),
    ] = None,
    router: Annotated[
        str, Opt("--router", "--routers", help="Routers, comma-separated.")
    ] = "round-robin",
    **opts: Any,
) -> None:
    """Several policies x predictors x routers on the same workload and seed, side by side."""
    from fairserve.experiments.compare import compare_runs, label_of, print_comparison, write_runs

    pols = components(policies, POLICIES)
    preds: list[ComponentSpec | None] = (
        [*components(predictor, PREDICTORS)] if predictor else [None]
    )
    rts = components(router, ROUTERS)
    wl = build_workload(opts)
    configs = []
    for pol in pols:
        for pred in preds:
            for rt in rts:
                config = build_config(opts, wl, policy=pol, router=rt, predictor=pred)
                configs.append((str(pol), _label(pred), str(rt), config))
    try:
        runs = compare_runs(wl, configs, progress=not opts["as_json"])
    except ComponentError as exc:
        raise fail(str(exc)) from None
    rows = [row for row, _ in runs]
    errors = [f"{label_of(row)}: {e}" for row, r in runs if (e := r.error()) is not None]
    for row, result in runs:
        row["error"] = result.error()
    if opts["as_json"]:
        sys.stdout.write(json.dumps(rows, allow_nan=False) + "\n")
    else:
        print_comparison(slo_goodput_rows(rows, _slos(wl)), FittingConsole())
        for row in rows:
            _print_warnings(row["warnings"], f"{label_of(row)}: ")
    if opts["out"] is not None:
        combos = [{"policy": p, "predictor": d, "router": r} for p, d, r, _ in configs]
        config_dict = _json_opts(opts) | {"configurations": combos}
        labels = [label_of(row) for row in rows]
        report = write_runs(opts["out"], "compare", wl, config_dict, runs, labels)
        err.print(f"report: {report}")
    if errors:
        raise fail("; ".join(errors), code=1)


def register(app: typer.Typer) -> None:
    """Add ``simulate`` and ``compare`` to the ``fairserve`` app."""
    app.command("simulate")(workload_and_deployment_options(simulate_cmd))
    app.command("compare")(workload_and_deployment_options(compare_cmd))
