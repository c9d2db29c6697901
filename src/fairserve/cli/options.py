"""What the commands share: the workload and deployment options, components, the error printer.

The options are declared once here and added to a command's signature by
``@workload_and_deployment_options``; the command receives them as keyword
arguments and turns them into a workload and a ``SimConfig`` with
``build_workload`` and ``build_config``. Components (policies, routers,
predictors, admission) are written ``name:key=value,...`` and read with
:func:`component` / :func:`components`. Every command reports a problem with
:func:`fail`: one line on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from fairserve.core.registry import ComponentError, ComponentSpec, Registry, parse_list
from fairserve.sim.cost import UnknownProfileError
from fairserve.sim.engine import kv_blocks
from fairserve.sim.run import SimConfig
from fairserve.workload import TraceError, Workload, load
from fairserve.workload.generate import TenantMix, synthetic

Opt = typer.Option
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

# The arguments of the commands that read measured steps (calibrate, cost check).
StepsFile = Annotated[
    Path,
    typer.Argument(
        help="CSV of steps (prefill_tokens,prefill_seqs,decode_seqs,kv_tokens,step_time_s"
        "[,tp]) or of requests (prompt,batch,out,prefill_s,tbt_s[,tp])"
    ),
]
StepsModel = Annotated[str, Opt(help="Model the steps were measured on.")]
StepsModelConfig = Annotated[
    Path | None,
    Opt(help="A Hugging Face config.json of a model not in the catalogue (instead of --model)."),
]
StepsGpu = Annotated[str, Opt(help="GPU the steps were measured on.")]
StepsTp = Annotated[int, Opt(help="Tensor-parallel degree of rows without a tp column.")]

# name, type, option, default
_OPTIONS: list[tuple[str, Any, Any, Any]] = [
    ("trace", Path | None, Opt(help="Trace file (generic CSV/JSONL/Parquet or a known format)."), None),
    ("workload", Path | None, Opt(help="Workload spec (YAML)."), None),
    ("skip_bad_rows", bool, Opt(help="Skip malformed trace rows and count them."), False),
    ("requests", int, Opt(help="Synthetic: number of requests."), 2000),
    ("rate", float, Opt(help="Synthetic: arrivals per second."), 10.0),
    ("arrival", str, Opt(help="Synthetic: poisson or gamma."), "poisson"),
    ("cv", float, Opt(help="Synthetic: inter-arrival CV (gamma)."), 1.0),
    ("length", str, Opt(help="Synthetic: lognormal or zipf lengths."), "lognormal"),
    ("prompt_mean", float, Opt(help="Synthetic: mean prompt tokens (lognormal)."), 1000.0),
    ("output_mean", float, Opt(help="Synthetic: mean output tokens (lognormal)."), 250.0),
    ("tenants", str, Opt(help="Synthetic: tenants as name:share[:weight],..."), "chat:0.5,code:0.3,batch:0.2"),
    ("model", str, Opt(help="Model name (see docs/simulator.md)."), "Llama-3.1-8B"),
    ("gpu", str, Opt(help="GPU name."), "H100-80GB"),
    ("tp", int, Opt(help="Tensor-parallel degree."), 1),
    ("expert_parallel", bool, Opt(help="MoE models: spread whole experts over the tp GPUs (vLLM's --enable-expert-parallel) instead of slicing each."), False),
    ("instances", int, Opt(help="Number of engine instances."), 1),
    ("profile", Path | None, Opt(help="Calibrated profile from `fairserve calibrate`."), None),
    ("max_num_batched_tokens", int, Opt(help="Token budget per step."), 8192),
    ("max_num_seqs", int, Opt(help="Sequences per step."), 256),
    ("block_size", int, Opt(help="Tokens per KV block."), 16),
    ("gpu_memory_utilization", float, Opt(help="Fraction of GPU memory used."), 0.9),
    ("num_gpu_blocks", int | None, Opt(help="Override the KV capacity in blocks."), None),
    ("max_tenant_prefill_tokens", int | None, Opt(help="Prefill tokens one tenant may take in a step (default: the whole budget)."), None),
    ("service_quantum_tokens", int | None, Opt(help="Engine placement: a request yields its seat to a waiting head the policy puts first after this many output tokens (a recompute preemption; default: never)."), None),
    ("prefix_caching", bool, Opt(help="Prefix caching."), True),
    ("cpu_kv_cache_gb", float | None, Opt(help="KV tier in host memory per instance, GB (10^9 bytes): keeps the prefix blocks the GPU evicts (default: none)."), None),
    ("cpu_kv_bandwidth_gb_s", float | None, Opt(help="Host-to-GPU bandwidth of the CPU KV tier, GB/s (default 25, PCIe Gen4 x16)."), None),
    ("remote_kv_cache_gb", float | None, Opt(help="Remote KV tier per instance, GB, behind the CPU tier (default: none)."), None),
    ("remote_kv_bandwidth_gb_s", float | None, Opt(help="Bandwidth of the remote KV tier, GB/s (default 12.5, a 100 Gb/s NIC)."), None),
    ("remote_kv_latency_s", float | None, Opt(help="Fixed latency of one load from the remote KV tier, s (default 0.0005)."), None),
    ("placement", str, Opt(help="Where the policy runs: gateway (global queue) or engine."), "gateway"),
    ("max_engine_waiting", int, Opt(help="Requests queued per engine at most (gateway placement)."), 8),
    ("slo_concurrency", str, Opt(help="Hold each engine's batch to the tightest TPOT objective: auto (when a tenant has one, gateway placement), on or off."), "auto"),
    ("admission", str | None, Opt(help="Admission, name:key=value,... (slo:model=PATH,slack=0.5: refuse requests predicted to miss their TTFT SLO)."), None),
    ("admission_model", Path | None, Opt(help="Short for --admission slo:model=PATH: a latency model from `fairserve predictor latency --out`."), None),
    ("admission_slack", float | None, Opt(help="With --admission-model: refuse when the predicted TTFT exceeds slack x the SLO (default 1)."), None),
    ("reference", bool, Opt(help="Use the slow per-step reference engine."), False),
    ("seed", int, Opt(help="Seed of the synthetic workload and random routers."), 0),
    ("out", Path | None, Opt(help="Write a run directory and its HTML report (OUT/report.html) here."), None),
    ("as_json", bool, Opt("--json", help="Print JSON."), False),
]  # fmt: skip


def workload_and_deployment_options(func: F) -> F:
    """Add the shared options to ``func``'s signature (it takes them as ``**opts``)."""
    sig = inspect.signature(func, eval_str=True)
    shared = {name for name, _, _, _ in _OPTIONS}
    # Those already added are passed over: registering a command twice is harmless.
    own = [
        p
        for p in sig.parameters.values()
        if p.kind != inspect.Parameter.VAR_KEYWORD and p.name not in shared
    ]
    added = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[typ, opt]
        )
        for name, typ, opt, default in _OPTIONS
    ]
    func.__signature__ = sig.replace(parameters=own + added)  # type: ignore[attr-defined]
    func.__annotations__ = {p.name: p.annotation for p in own + added} | {"return": None}
    return func


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error for people and return the exit to raise."""
    # Escaped: messages quote file names and values that may hold [brackets].
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def parse_tenants(text: str) -> list[TenantMix]:
    """``name:share[:weight]`` items separated by commas."""
    mixes = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise typer.BadParameter(f"tenant {item!r}: expected name:share or name:share:weight")
        try:
            share = float(parts[1])
            weight = float(parts[2]) if len(parts) == 3 else 1.0
            mixes.append(TenantMix(name=parts[0], share=share, weight=weight))
        except ValueError as exc:
            raise typer.BadParameter(f"tenant {item!r}: {exc}") from exc
    return mixes


def build_workload(opts: dict[str, Any]) -> Workload:
    """The workload the options name: a trace, a spec, or a synthetic one."""
    trace, spec = opts["trace"], opts["workload"]
    if trace is not None and spec is not None:
        raise fail("give --trace or --workload, not both")
    try:
        if trace is not None:
            return load(trace, skip_bad_rows=opts["skip_bad_rows"])
        if spec is not None:
            return load(spec)
        synth: dict[str, Any] = {
            "arrival": opts["arrival"],
            "length": opts["length"],
            "tenants": parse_tenants(opts["tenants"]),
            "seed": opts["seed"],
        }
        if opts["arrival"] == "gamma":
            synth["cv"] = opts["cv"]
        if opts["length"] == "lognormal":
            synth["prompt_mean_tokens"] = opts["prompt_mean"]
            synth["output_mean_tokens"] = opts["output_mean"]
        return synthetic(opts["requests"], opts["rate"], **synth)
    except (TraceError, ValueError, OSError) as exc:
        raise fail(str(exc)) from exc


def components(text: str, registry: Registry[Any]) -> list[ComponentSpec]:
    """Components separated by commas (``fifo,sjf:prompt_weight=1,aging_s=30,vtc``), each checked."""
    try:
        return [registry.check(spec) for spec in parse_list(text)]
    except ComponentError as exc:
        raise fail(str(exc)) from None


def component(text: str, registry: Registry[Any]) -> ComponentSpec:
    """One component, ``name`` or ``name:key=value,...``, checked against ``registry``."""
    try:
        return registry.check(ComponentSpec.parse(text))
    except ComponentError as exc:
        raise fail(str(exc)) from None


def admission_spec(opts: dict[str, Any]) -> ComponentSpec | None:
    """``--admission``, or the spec its shorthand ``--admission-model/--admission-slack`` names."""
    from fairserve.core.route import ADMISSION

    text, model, slack = opts["admission"], opts["admission_model"], opts["admission_slack"]
    if text is not None and (model is not None or slack is not None):
        raise fail("give --admission or --admission-model/--admission-slack, not both")
    if text is not None:
        return component(text, ADMISSION)
    if model is None:
        if slack is not None:
            raise fail("--admission-slack applies with --admission-model")
        return None
    params: dict[str, Any] = {"model": str(model)}
    if slack is not None:
        params["slack"] = slack
    return ComponentSpec("slo", params)


def build_config(
    opts: dict[str, Any],
    workload: Workload,
    *,
    policy: ComponentSpec | str = "fifo",
    router: ComponentSpec | str = "round-robin",
    predictor: ComponentSpec | str | None = None,
) -> SimConfig:
    """The deployment the options describe, running ``policy``, ``router`` and ``predictor``."""
    admission = admission_spec(opts)
    tenants = [workload.tenant_config(n) for n in workload.tenant_names()]
    try:
        config = SimConfig.from_options(
            opts, tenants, policy=policy, router=router, predictor=predictor, admission=admission
        )
        for instance in config.instances:  # fail early: an unknown GPU/model/profile, a
            kv_blocks(instance.cost_model(), instance.engine)  # model that does not fit
    except (ValueError, UnknownProfileError) as exc:
        raise fail(str(exc)) from exc
    return config
