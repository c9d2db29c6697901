"""The one command-line entry point: ``fairserve``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fairserve.cli.gateway import register as register_gateway_commands
from fairserve.cli.options import (
    build_config,
    build_workload,
    err,
    fail,
    parse_component,
    workload_and_deployment_options,
)
from fairserve.cli.predictor import predictor_app
from fairserve.cli.report import register as register_report_commands
from fairserve.cli.trace import trace_app
from fairserve.core.model import SLO
from fairserve.core.policies import POLICIES
from fairserve.core.predict import PREDICTORS
from fairserve.core.route import ROUTERS
from fairserve.sim.cost import UnknownProfileError
from fairserve.sim.run import SimConfig, SimResult, simulate
from fairserve.workload import Workload

app = typer.Typer(
    name="fairserve",
    help="Fair, SLO-aware scheduling for shared LLM inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(trace_app, name="trace", help="Inspect traces and workload specs.")
app.add_typer(predictor_app, name="predictor", help="Train and evaluate predictors.")
register_report_commands(app)
register_gateway_commands(app)


def _run(workload: Workload, config: SimConfig, show_progress: bool) -> SimResult:
    n = len(workload)
    if not show_progress or n < 20_000:
        return simulate(workload.requests(), config)
    columns = (
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("sim", total=n)
        return simulate(workload.requests(), config, lambda done: bar.update(task, completed=done))


def _slos(workload: Workload) -> dict[str, SLO]:
    """Each tenant's SLO, from the workload's tenant configs."""
    return {name: workload.tenant_config(name).slo for name in workload.tenant_names()}


def _print_result(result: SimResult, workload: Workload, as_json: bool, title: str) -> None:
    summary = result.summary(slos=_slos(workload))
    if as_json:
        data = summary.to_dict()
        data["wall_time_s"] = result.wall_time_s
        data["engine_steps"] = result.steps
        data["sim_requests_per_wall_s"] = (
            len(result.records) / result.wall_time_s if result.wall_time_s > 0 else None
        )
        sys.stdout.write(json.dumps(data, allow_nan=False) + "\n")
        return
    from fairserve.report.tables import print_summary

    console = Console()
    console.rule(title)
    print_summary(summary, console)
    console.print(
        f"simulated {len(result.records):,} requests in {result.wall_time_s:.2f} s wall "
        f"({len(result.records) / max(result.wall_time_s, 1e-9):,.0f} requests/s, "
        f"{result.steps:,} engine steps)"
    )
    if result.failure_reasons:
        first = next(iter(result.failure_reasons.items()))
        console.print(
            f"[yellow]{len(result.failure_reasons)} request(s) failed[/]; e.g. "
            f"request {first[0]}: {first[1]}"
        )


Opt = typer.Option


@app.command("simulate")
@workload_and_deployment_options
def simulate_cmd(
    router: Annotated[str, Opt(help=f"Router: {', '.join(ROUTERS.names())}.")] = "round-robin",
    policy: Annotated[str, Opt(help=f"Policy: {', '.join(POLICIES.names())}.")] = "fifo",
    predictor: Annotated[
        str | None, Opt(help=f"Output-length predictor: {', '.join(PREDICTORS.names())}.")
    ] = None,
    **opts: Any,
) -> None:
    """Simulate a trace or a synthetic workload on a modelled cluster."""
    wl = build_workload(opts)
    name, params = parse_component(policy)
    pred_name, pred_params = parse_component(predictor) if predictor else (None, {})
    config = build_config(opts, wl, name, router, pred_name, params, pred_params)
    result = _run(wl, config, show_progress=not opts["as_json"])
    title = f"{opts['model']} on {opts['instances']} x {opts['gpu']} (tp={opts['tp']}), {policy}"
    _print_result(result, wl, opts["as_json"], title)
    if opts["out"] is not None:
        from fairserve.experiments.compare import result_row, write_runs

        row = result_row(wl, policy, predictor, router, result)
        config_dict = _json_opts(opts) | {
            "policy": policy,
            "predictor": predictor,
            "router": router,
        }
        report = write_runs(opts["out"], "simulate", wl, config_dict, [(row, result)], [policy])
        err.print(f"report: {report}")


def _json_opts(opts: dict[str, Any]) -> dict[str, Any]:
    """The command's options as JSON-able values (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in opts.items()}


@app.command("compare")
@workload_and_deployment_options
def compare_cmd(
    policies: Annotated[
        str, Opt(help="Comma-separated policies, each name or name:key=value;key=value.")
    ] = "fifo,sjf,vtc",
    predictor: Annotated[
        str | None, Opt(help="Comma-separated output-length predictors (none: no prediction).")
    ] = None,
    router: Annotated[str, Opt(help="Comma-separated routers.")] = "round-robin",
    **opts: Any,
) -> None:
    """Several policies x predictors x routers on the same workload and seed, side by side."""
    from fairserve.experiments.compare import compare_runs, label_of, print_comparison, write_runs

    wl = build_workload(opts)
    configs = []
    for pol in policies.split(","):
        for pred in predictor.split(",") if predictor else [None]:
            for rt in router.split(","):
                name, params = parse_component(pol)
                pname, pparams = parse_component(pred) if pred else (None, {})
                config = build_config(opts, wl, name, rt.strip(), pname, params, pparams)
                configs.append((pol, pred, rt.strip(), config))
    runs = compare_runs(wl, configs, progress=not opts["as_json"])
    rows = [row for row, _ in runs]
    if opts["as_json"]:
        sys.stdout.write(json.dumps(rows, allow_nan=False) + "\n")
    else:
        print_comparison(rows, Console())
    if opts["out"] is not None:
        combos = [{"policy": p, "predictor": d, "router": r} for p, d, r, _ in configs]
        config_dict = _json_opts(opts) | {"configurations": combos}
        labels = [label_of(row) for row in rows]
        report = write_runs(opts["out"], "compare", wl, config_dict, runs, labels)
        err.print(f"report: {report}")


@app.command("calibrate")
def calibrate_cmd(
    steps: Annotated[
        Path, typer.Argument(help="CSV: prefill_tokens,decode_seqs,kv_tokens,step_time_s")
    ],
    model: Annotated[str, Opt(help="Model the steps were measured on.")] = "Llama-3.1-8B",
    gpu: Annotated[str, Opt(help="GPU the steps were measured on.")] = "H100-80GB",
    tp: Annotated[int, Opt(help="Tensor-parallel degree.")] = 1,
    out: Annotated[Path, Opt(help="Profile file to write.")] = Path("profile.yaml"),
    as_json: Annotated[bool, Opt("--json", help="Print the fit as JSON.")] = False,
) -> None:
    """Fit the cost model's efficiency factors to measured step times; write a profile."""
    from fairserve.sim.calibrate import StepFileError, fit, read_steps
    from fairserve.sim.cost import CostModel, write_profile

    try:
        base = CostModel.from_names(gpu, model, tp)
        table = read_steps(steps)
    except (UnknownProfileError, StepFileError) as exc:
        raise fail(str(exc)) from exc
    result = fit(base, table)
    write_profile(out, result.model, result.fit_dict(), source=str(steps))
    eff = result.model.efficiency
    if as_json:
        data = {"profile": str(out), **result.fit_dict(), "efficiency": eff.__repr__()}
        sys.stdout.write(json.dumps(data) + "\n")
        return
    console = Console()
    console.print(f"fitted {result.rows} steps of {model} on {gpu} (tp={tp})")
    console.print(
        f"mean abs. error: {100 * result.mape_before:.1f}% with the default factors -> "
        f"{100 * result.mape_after:.1f}% fitted"
    )
    console.print(
        f"mfu={eff.mfu:.3f} mbu={eff.mbu:.3f} step_overhead={1e3 * eff.step_overhead_s:.3f} ms "
        f"per_seq_overhead={1e6 * eff.per_seq_overhead_s:.2f} us"
    )
    console.print(f"profile written to {out} (use it with --profile {out})")


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, Opt(help="Folder for the run and its report (OUT/report.html).")] = Path(
        "runs/demo"
    ),
    live: Annotated[
        bool, Opt(help="Then replay a short slice through the live gateway and compare.")
    ] = False,
    as_json: Annotated[bool, Opt("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Three tenants on two simulated H100s: every policy side by side, and a report."""
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
    console = Console()
    console.rule(
        f"fairserve demo: chat, code and a flooding batch tenant; {len(wl):,} requests "
        f"over {demo.DURATION_S:g} s on 2 x H100-80GB (Llama-3.1-8B)"
    )
    print_comparison(rows, console)
    console.print(f"report: {report}")
    if live:
        from fairserve.experiments import demo_live

        console.rule("live: two `fairserve engine` servers behind `fairserve serve`")
        console.print("starting the engines and the gateway, replaying a 12 s slice ...")
        live_summary = demo_live.run_live()
        demo_live.print_side_by_side(live_summary, demo_live.run_simulated(), console)
