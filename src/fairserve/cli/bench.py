"""``fairserve bench``: replay a workload against any OpenAI-compatible endpoint."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fairserve.cli.options import fail as _fail
from fairserve.cli.output import print_run

Opt = typer.Option


def _keys(
    api_key: str | None, tenant_key: list[str], keys_from: Path | None
) -> tuple[dict[str, str], str | None]:
    keys: dict[str, str] = {}
    if keys_from is not None:
        from fairserve.gateway.config import ConfigError, load_config

        try:
            cfg = load_config(keys_from)
        except ConfigError as exc:
            raise _fail(str(exc)) from exc
        keys.update({name: t.api_key for name, t in cfg.tenants.items() if t.api_key})
    for item in tenant_key:
        name, sep, key = item.partition("=")
        if not sep or not name or not key:
            raise _fail(f"--tenant-key {item!r}: expected TENANT=KEY")
        keys[name] = key
    return keys, api_key


#: ``--percentile-metrics`` names (``vllm bench serve``'s): time to first token,
#: time per output token, inter-token latency, end-to-end latency.
METRICS = ("ttft", "tpot", "itl", "e2el")


def _names(text: str, option: str, allowed: tuple[str, ...]) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise _fail(f"{option} {text!r}: expected names from {', '.join(allowed)}")
    return names


def _percentiles(text: str) -> list[float]:
    try:
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        values = []
    if not values or not all(0 < p < 100 for p in values):
        raise _fail(
            f"--metric-percentiles {text!r}: expected numbers between 0 and 100, e.g. 50,90,99"
        )
    return values


def latency_samples(arrays: Any, itl_s: list[float]) -> dict[str, Any]:
    """Seconds per metric over the completed requests (ITL: every gap between chunks)."""
    import numpy as np

    from fairserve.core.model import Outcome
    from fairserve.metrics.records import OUTCOME_CODES

    done = arrays.outcome == OUTCOME_CODES.index(Outcome.COMPLETED)
    first, finish, arrival = (
        arrays.first_token_s[done],
        arrays.finish_s[done],
        arrays.arrival_s[done],
    )
    tokens = arrays.output_tokens[done]
    multi = tokens > 1
    return {
        "ttft": first - arrival,
        "tpot": (finish[multi] - first[multi]) / (tokens[multi] - 1),
        "itl": np.asarray(itl_s, dtype=float),
        "e2el": finish - arrival,
    }


def latency_table(
    samples: dict[str, Any], metrics: list[str], percentiles: list[float]
) -> dict[str, dict[str, float | None]]:
    """Mean, median and each percentile per metric, in milliseconds (None: no samples)."""
    import numpy as np

    out: dict[str, dict[str, float | None]] = {}
    for name in metrics:
        values = samples[name][np.isfinite(samples[name])] * 1e3
        keys = ["mean", "median", *(f"p{p:g}" for p in percentiles)]
        if values.size == 0:
            out[name] = dict.fromkeys(keys)
            continue
        figures = [values.mean(), np.median(values), *np.percentile(values, percentiles)]
        out[name] = {k: float(v) for k, v in zip(keys, figures, strict=True)}
    return out


def _print_latency(table: dict[str, dict[str, float | None]]) -> None:
    from rich.table import Table

    from fairserve.cli.output import FittingConsole

    labels = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2el": "E2E"}
    keys = list(next(iter(table.values())))
    out = Table(title="Latency (ms), completed requests, live")
    out.add_column("Metric")
    for key in keys:
        out.add_column(
            key.capitalize() if not key.startswith("p") else key.upper(), justify="right"
        )
    for name, figures in table.items():
        out.add_row(labels[name], *("-" if v is None else f"{v:,.2f}" for v in figures.values()))
    FittingConsole().print(out)


def _warn_one_key(wl: Any, keys: dict[str, str], default_key: str | None) -> None:
    """A workload of several tenants sent with one key reaches a gateway as one tenant."""
    tenants = wl.tenant_names()
    used = {keys.get(name, default_key) for name in tenants}
    if len(tenants) > 1 and len(used) == 1:
        Console(stderr=True).print(
            f"[yellow]warning:[/] the workload's {len(tenants)} tenants ({', '.join(tenants)}) "
            "are all sent with one API key, so a gateway sees them as one tenant; "
            "give each its own with --tenant-key TENANT=KEY or --keys-from",
            highlight=False,
        )


def bench_cmd(
    base_url: Annotated[
        str, Opt("--base-url", "--url", help="Base URL of an OpenAI-compatible server.")
    ],
    trace: Annotated[Path | None, Opt(help="Trace file to replay.")] = None,
    workload: Annotated[Path | None, Opt(help="Workload spec (YAML) to replay.")] = None,
    api_key: Annotated[str | None, Opt(help="Key for tenants without their own.")] = None,
    tenant_key: Annotated[
        list[str] | None, Opt(help="TENANT=KEY, repeatable: a tenant's own key.")
    ] = None,
    keys_from: Annotated[
        Path | None,
        Opt(
            help="Take tenants' keys from a gateway config (plain api_key); --out's report then "
            "uses its tenants, weights, SLOs and policy."
        ),
    ] = None,
    model: Annotated[str, Opt(help="Model name to send.")] = "Qwen2.5-1.5B",
    endpoint: Annotated[str, Opt(help="completions or chat.")] = "completions",
    num_prompts: Annotated[
        int | None,
        Opt("--num-prompts", "--max-requests", help="Send only the first N requests."),
    ] = None,
    request_rate: Annotated[
        float | None,
        Opt(help="Requests per second (inf: all at once) instead of the workload's times."),
    ] = None,
    burstiness: Annotated[
        float, Opt(help="With --request-rate: gamma shape of the gaps (1: Poisson, <1: burstier).")
    ] = 1.0,
    seed: Annotated[int, Opt(help="Seed of the --request-rate arrivals.")] = 0,
    percentile_metrics: Annotated[
        str, Opt(help="Metrics to report percentiles of: ttft,tpot,itl,e2el.")
    ] = "ttft,tpot,itl",
    metric_percentiles: Annotated[
        str, Opt(help="Percentiles to report, comma-separated (e.g. 50,90,99).")
    ] = "99",
    max_concurrency: Annotated[int, Opt(help="Requests open at once at most.")] = 256,
    max_duration_s: Annotated[float, Opt(help="Stop (cancel the rest) after this long.")] = 600.0,
    ignore_eos: Annotated[bool, Opt(help="Send ignore_eos: true (vLLM).")] = True,
    allow_remote: Annotated[bool, Opt(help="Allow a URL that is not on this machine.")] = False,
    out: Annotated[
        Path | None, Opt(help="Write a run directory and its HTML report (OUT/report.html) here.")
    ] = None,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
) -> None:
    """Replay a workload against an OpenAI-compatible endpoint; report TTFT/TPOT/ITL/E2E per tenant."""
    from fairserve.loadgen.bench import BenchError, check_url, plan, retime, run_bench
    from fairserve.metrics.summary import summarize
    from fairserve.workload import TraceError, load

    if (trace is None) == (workload is None):
        raise _fail("give exactly one of --trace or --workload")
    if endpoint not in ("completions", "chat"):
        raise _fail(f"--endpoint must be completions or chat, got {endpoint!r}")
    metrics = _names(percentile_metrics, "--percentile-metrics", METRICS)
    percentiles = _percentiles(metric_percentiles)
    keys, default_key = _keys(api_key, tenant_key or [], keys_from)
    try:
        base = check_url(base_url, allow_remote)
        source = trace if trace is not None else workload
        assert source is not None
        wl = load(source)
        requests = plan(wl, keys, default_key, num_prompts)
        if request_rate is not None:
            requests = retime(requests, request_rate, burstiness, seed)
    except (BenchError, TraceError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    if not requests:
        raise _fail("the workload has no requests")
    _warn_one_key(wl, keys, default_key)
    itl: list[float] = []
    records, wall_s = asyncio.run(
        run_bench(base, requests, model=model, chat=endpoint == "chat",
                  max_concurrency=max_concurrency, max_duration_s=max_duration_s,
                  ignore_eos=ignore_eos, itl_out=itl)
    )  # fmt: skip
    slos = {name: wl.tenant_config(name).slo for name in wl.tenant_names()}
    arrays = records.to_numpy()
    summary = summarize(arrays, slos=slos)
    latency = latency_table(latency_samples(arrays, itl), metrics, percentiles)
    if out is not None:
        _write_bench_run(out, base, source, wl, arrays, keys_from)
    if as_json:
        data = summary.to_dict() | {"wall_time_s": wall_s, "engine_steps": None,
                                    "sim_requests_per_wall_s": None, "latency_ms": latency}  # fmt: skip
        sys.stdout.write(json.dumps(data, allow_nan=False) + "\n")
        return
    print_run(
        summary,
        title=f"bench (live): {len(requests)} requests against {base}",
        as_json=False,
        wall_time_s=wall_s,
        failures=records.failure_reasons,
        slos=slos,
    )
    _print_latency(latency)


def _write_bench_run(
    out: Path, url: str, source: Path, wl: Any, arrays: Any, keys_from: Path | None
) -> None:
    """The bench run as a run directory with its HTML report (``fairserve report``).

    The report is drawn against the gateway's own tenants, weights, SLOs and
    policy when its config is given (``--keys-from``), else the workload spec's.
    """
    from fairserve.metrics.fairness import fairness
    from fairserve.metrics.summary import summarize
    from fairserve.report.html import write_report
    from fairserve.report.live import gateway_view, workload_view
    from fairserve.report.run_dir import write_run_dir

    if keys_from is not None:
        from fairserve.gateway.config import load_config

        view = gateway_view(load_config(keys_from), str(keys_from))
    else:
        view = workload_view(wl)
    summary = summarize(arrays, slos=view.slos).to_dict()
    fair = fairness(arrays, view.weights).to_dict()
    config = {"url": url, "workload": str(source), **view.config}
    run = (view.label, arrays, summary, fair, None)
    write_run_dir(out, "bench", config, [run], weights=view.weights, slos=view.slos)
    report = write_report(out)
    Console(stderr=True).print(f"report: {report}")


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the main ``fairserve`` app."""
    app.command("bench")(bench_cmd)
