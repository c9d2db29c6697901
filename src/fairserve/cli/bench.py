"""``fairserve bench``: replay a workload against any OpenAI-compatible endpoint."""

from __future__ import annotations

import asyncio
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


def bench_cmd(
    url: Annotated[str, Opt(help="Base URL of an OpenAI-compatible server.")],
    trace: Annotated[Path | None, Opt(help="Trace file to replay.")] = None,
    workload: Annotated[Path | None, Opt(help="Workload spec (YAML) to replay.")] = None,
    api_key: Annotated[str | None, Opt(help="Key for tenants without their own.")] = None,
    tenant_key: Annotated[
        list[str] | None, Opt(help="TENANT=KEY, repeatable: a tenant's own key.")
    ] = None,
    keys_from: Annotated[
        Path | None, Opt(help="Take tenants' keys from a gateway config (plain api_key).")
    ] = None,
    model: Annotated[str, Opt(help="Model name to send.")] = "Qwen2.5-1.5B",
    endpoint: Annotated[str, Opt(help="completions or chat.")] = "completions",
    max_requests: Annotated[int | None, Opt(help="Send only the first N requests.")] = None,
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
    from fairserve.loadgen.bench import BenchError, check_url, plan, run_bench
    from fairserve.metrics.summary import summarize
    from fairserve.workload import TraceError, load

    if (trace is None) == (workload is None):
        raise _fail("give exactly one of --trace or --workload")
    if endpoint not in ("completions", "chat"):
        raise _fail(f"--endpoint must be completions or chat, got {endpoint!r}")
    keys, default_key = _keys(api_key, tenant_key or [], keys_from)
    try:
        base = check_url(url, allow_remote)
        source = trace if trace is not None else workload
        assert source is not None
        wl = load(source)
        requests = plan(wl, keys, default_key, max_requests)
    except (BenchError, TraceError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    if not requests:
        raise _fail("the workload has no requests")
    records, wall_s = asyncio.run(
        run_bench(base, requests, model=model, chat=endpoint == "chat",
                  max_concurrency=max_concurrency, max_duration_s=max_duration_s,
                  ignore_eos=ignore_eos)
    )  # fmt: skip
    slos = {name: wl.tenant_config(name).slo for name in wl.tenant_names()}
    arrays = records.to_numpy()
    summary = summarize(arrays, slos=slos)
    if out is not None:
        _write_bench_run(out, base, source, wl, arrays, summary.to_dict())
    print_run(
        summary,
        title=f"bench: {len(requests)} requests against {base}",
        as_json=as_json,
        wall_time_s=wall_s,
        failures=records.failure_reasons,
    )


def _write_bench_run(
    out: Path, url: str, source: Path, wl: Any, arrays: Any, summary: dict[str, Any]
) -> None:
    """The bench run as a run directory with its HTML report (``fairserve report``)."""
    from fairserve.metrics.fairness import fairness
    from fairserve.report.html import write_report
    from fairserve.report.run_dir import write_run_dir

    weights = {name: wl.tenant_config(name).weight for name in wl.tenant_names()}
    fair = fairness(arrays, weights).to_dict()
    config = {"url": url, "workload": str(source)}
    write_run_dir(out, "bench", config, [("bench", arrays, summary, fair, None)], weights=weights)
    report = write_report(out)
    Console(stderr=True).print(f"report: {report}")


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the main ``fairserve`` app."""
    app.command("bench")(bench_cmd)
