"""The one command-line entry point: ``fairserve``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fairserve.core.model import SLO
from fairserve.sim.config import EngineConfig
from fairserve.sim.cost import UnknownProfileError
from fairserve.sim.run import InstanceSpec, SimConfig, SimResult, simulate
from fairserve.workload import TraceError, Workload, load
from fairserve.workload.cli import trace_app
from fairserve.workload.generate import TenantMix, synthetic

app = typer.Typer(
    name="fairserve",
    help="Fair, SLO-aware scheduling for shared LLM inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(trace_app, name="trace", help="Inspect traces and workload specs.")

err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _parse_tenants(text: str) -> list[TenantMix]:
    """``name:share[:weight]`` items separated by commas."""
    mixes = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise typer.BadParameter(f"tenant {item!r}: expected name:share or name:share:weight")
        try:
            share = float(parts[1])
            weight = float(parts[2]) if len(parts) == 3 else 1.0
        except ValueError as exc:
            raise typer.BadParameter(f"tenant {item!r}: share and weight must be numbers") from exc
        mixes.append(TenantMix(name=parts[0], share=share, weight=weight))
    return mixes


def _workload(
    trace: Path | None,
    workload: Path | None,
    skip_bad_rows: bool,
    synth: dict[str, Any],
) -> Workload:
    if trace is not None and workload is not None:
        raise _fail("give --trace or --workload, not both")
    try:
        if trace is not None:
            return load(trace, skip_bad_rows=skip_bad_rows)
        if workload is not None:
            return load(workload)
        return synthetic(**synth)
    except (TraceError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc


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
def simulate_cmd(
    trace: Annotated[
        Path | None, Opt(help="Trace file (generic CSV/JSONL/Parquet or a known format).")
    ] = None,
    workload: Annotated[Path | None, Opt(help="Workload spec (YAML).")] = None,
    skip_bad_rows: Annotated[bool, Opt(help="Skip malformed trace rows and count them.")] = False,
    requests: Annotated[int, Opt(help="Synthetic: number of requests.")] = 2000,
    rate: Annotated[float, Opt(help="Synthetic: arrivals per second.")] = 10.0,
    arrival: Annotated[str, Opt(help="Synthetic: poisson or gamma.")] = "poisson",
    cv: Annotated[float, Opt(help="Synthetic: inter-arrival CV (gamma).")] = 1.0,
    length: Annotated[str, Opt(help="Synthetic: lognormal or zipf lengths.")] = "lognormal",
    prompt_mean: Annotated[float, Opt(help="Synthetic: mean prompt tokens (lognormal).")] = 1000,
    output_mean: Annotated[float, Opt(help="Synthetic: mean output tokens (lognormal).")] = 250,
    tenants: Annotated[
        str, Opt(help="Synthetic: tenants as name:share[:weight],...")
    ] = "chat:0.5,code:0.3,batch:0.2",
    model: Annotated[str, Opt(help="Model name (see docs/simulator.md).")] = "Llama-3.1-8B",
    gpu: Annotated[str, Opt(help="GPU name.")] = "H100-80GB",
    tp: Annotated[int, Opt(help="Tensor-parallel degree.")] = 1,
    instances: Annotated[int, Opt(help="Number of engine instances.")] = 1,
    profile: Annotated[
        Path | None, Opt(help="Calibrated profile from `fairserve calibrate`.")
    ] = None,
    max_num_batched_tokens: Annotated[int, Opt(help="Token budget per step.")] = 8192,
    max_num_seqs: Annotated[int, Opt(help="Sequences per step.")] = 256,
    block_size: Annotated[int, Opt(help="Tokens per KV block.")] = 16,
    gpu_memory_utilization: Annotated[float, Opt(help="Fraction of GPU memory used.")] = 0.9,
    num_gpu_blocks: Annotated[int | None, Opt(help="Override the KV capacity in blocks.")] = None,
    prefix_caching: Annotated[bool, Opt(help="Prefix caching.")] = True,
    router: Annotated[str, Opt(help="Router: round-robin or least-tokens.")] = "round-robin",
    policy: Annotated[str, Opt(help="Policy of the global queue.")] = "fifo",
    max_engine_waiting: Annotated[int, Opt(help="Requests queued per engine at most.")] = 8,
    reference: Annotated[bool, Opt(help="Use the slow per-step reference engine.")] = False,
    seed: Annotated[int, Opt(help="Seed of the synthetic workload.")] = 0,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
) -> None:
    """Simulate a trace or a synthetic workload on a modelled cluster."""
    synth = {
        "n_requests": requests,
        "rate_per_s": rate,
        "arrival": arrival,
        "length": length,
        "tenants": _parse_tenants(tenants),
        "seed": seed,
    }
    if arrival == "gamma":
        synth["cv"] = cv
    if length == "lognormal":
        synth["prompt_mean_tokens"] = prompt_mean
        synth["output_mean_tokens"] = output_mean
    wl = _workload(trace, workload, skip_bad_rows, synth)
    try:
        engine = EngineConfig(
            max_num_batched_tokens=max_num_batched_tokens,
            max_num_seqs=max_num_seqs,
            block_size=block_size,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_prefix_caching=prefix_caching,
            num_gpu_blocks=num_gpu_blocks,
        )
        spec = InstanceSpec(gpu, model, tp, instances, engine, profile)
        spec.cost_model()  # fail early on an unknown GPU/model/profile
        config = SimConfig(
            instances=(spec,),
            policy=policy,
            router=router,
            max_engine_waiting=max_engine_waiting,
            reference=reference,
        )
    except (ValueError, UnknownProfileError) as exc:
        raise _fail(str(exc)) from exc
    result = _run(wl, config, show_progress=not as_json)
    _print_result(result, wl, as_json, f"{model} on {instances} x {gpu} (tp={tp})")


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
        raise _fail(str(exc)) from exc
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
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
) -> None:
    """A built-in multi-tenant scenario on a small simulated cluster."""
    tenants = [
        TenantMix(name="chat", share=0.5, slo=SLO("interactive", ttft_s=1.0, tpot_s=0.1)),
        TenantMix(name="code", share=0.2, slo=SLO("interactive", ttft_s=1.0, tpot_s=0.1)),
        TenantMix(name="batch", share=0.3, slo=SLO("batch", e2e_s=600.0)),
    ]
    wl = synthetic(
        20_000,
        rate_per_s=40.0,
        arrival="gamma",
        cv=2.0,
        prompt_mean_tokens=1000,
        output_mean_tokens=250,
        tenants=tenants,
        seed=0,
    )
    config = SimConfig(instances=(InstanceSpec(count=2),), router="least-tokens")
    result = _run(wl, config, show_progress=not as_json)
    _print_result(result, wl, as_json, "demo: 3 tenants on 2 x H100-80GB, Llama-3.1-8B, fifo")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
