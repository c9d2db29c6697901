"""The gateway's commands: ``fairserve serve``, ``fairserve engine``, ``fairserve bench``.

``register(app)`` adds them to the main ``fairserve`` Typer app;
``python -m fairserve.cli.gateway ...`` runs them on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fairserve.cli.options import fail as _fail
from fairserve.cli.output import print_run

err = Console(stderr=True)
Opt = typer.Option


def _uvicorn_config(app: Any, host: str, port: int, access_log: bool, **limits: Any) -> Any:
    """uvicorn's config; ``limits`` (from :func:`.edge.uvicorn_limits`) override the defaults."""
    import uvicorn

    options: dict[str, Any] = {"timeout_keep_alive": 30, **limits}
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=5,
        **options,
    )


def _draining_server(config: Any, gateway: Any, grace_s: float) -> Any:
    """A uvicorn server whose first SIGTERM/SIGINT drains the gateway before exiting (status 0)."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        draining = False

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises a captured SIGTERM after shutdown (exit status -15); a
            # drained gateway should exit 0, so handle the signals on the loop instead.
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal)
            try:
                yield
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

        def _on_signal(self) -> None:
            if self.draining:  # a second signal: stop now
                self.should_exit = True
                return
            self.draining = True
            err.print(f"draining: no new requests; in-flight ones have {grace_s:g} s")
            asyncio.get_running_loop().create_task(self._drain())

        async def _drain(self) -> None:
            await gateway.drain(grace_s)
            self.should_exit = True

    return DrainingServer(config)


def serve_cmd(
    config: Annotated[Path, Opt(help="Gateway YAML (see examples/gateway.yaml).")],
    port: Annotated[int | None, Opt(help="Port (overrides server.port).")] = None,
    host: Annotated[str | None, Opt(help="Address (overrides server.host).")] = None,
    access_log: Annotated[bool, Opt(help="Log every request.")] = False,
) -> None:
    """Run the OpenAI-compatible gateway in front of the configured backends."""
    from fairserve.gateway.app import GatewayError, create_app
    from fairserve.gateway.config import ConfigError, load_config
    from fairserve.gateway.edge import uvicorn_limits

    try:
        cfg = load_config(config)
        app = create_app(cfg)
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    except GatewayError as exc:  # a component that cannot be built with these values
        raise _fail(f"{config}: {exc}") from exc
    server_cfg = cfg.server
    uv = _uvicorn_config(
        app,
        host or server_cfg.host,
        server_cfg.port if port is None else port,
        access_log,
        **uvicorn_limits(cfg.limits),
    )
    server = _draining_server(uv, app.state.gateway, server_cfg.drain_grace_s)
    server.run()


def engine_cmd(
    port: Annotated[int, Opt(help="Port.")] = 8101,
    host: Annotated[str, Opt(help="Address.")] = "127.0.0.1",
    model: Annotated[str, Opt(help="Modelled model (fairserve's profiles).")] = "Qwen2.5-1.5B",
    gpu: Annotated[str, Opt(help="Modelled GPU.")] = "H100-80GB",
    tp: Annotated[int, Opt(help="Tensor-parallel degree.")] = 1,
    max_num_seqs: Annotated[int, Opt(help="Sequences per step.")] = 256,
    max_num_batched_tokens: Annotated[int, Opt(help="Token budget per step.")] = 8192,
    block_size: Annotated[int, Opt(help="Tokens per KV block.")] = 16,
    num_gpu_blocks: Annotated[int | None, Opt(help="Override the KV capacity in blocks.")] = None,
    gpu_memory_utilization: Annotated[float, Opt(help="Fraction of GPU memory used.")] = 0.9,
    max_model_len: Annotated[int | None, Opt(help="Context length (default: the model's).")] = None,
    time_scale: Annotated[
        float, Opt(help="Wall seconds per modelled second (1 = real time, 4 = 4x slower).")
    ] = 1.0,
    default_max_tokens: Annotated[int, Opt(help="Output length when max_tokens is unset.")] = 256,
    served_model_name: Annotated[str | None, Opt(help="Model name clients send.")] = None,
    access_log: Annotated[bool, Opt(help="Log every request.")] = False,
) -> None:
    """Run a simulated OpenAI-compatible engine (the simulator's engine model, in real time)."""
    import uvicorn

    from fairserve.engine_server.server import EngineSettings, create_engine_app
    from fairserve.sim.config import EngineConfig
    from fairserve.sim.cost import UnknownProfileError

    try:
        settings = EngineSettings(
            model=model,
            gpu=gpu,
            tp=tp,
            engine=EngineConfig(
                max_num_batched_tokens=max_num_batched_tokens,
                max_num_seqs=max_num_seqs,
                block_size=block_size,
                gpu_memory_utilization=gpu_memory_utilization,
                enable_prefix_caching=False,
                num_gpu_blocks=num_gpu_blocks,
                max_model_len=max_model_len,
            ),
            time_scale=time_scale,
            default_max_tokens=default_max_tokens,
            served_model_name=served_model_name,
        )
        app = create_engine_app(settings)
    except (ValueError, UnknownProfileError) as exc:
        raise _fail(str(exc)) from exc
    uvicorn.Server(_uvicorn_config(app, host, port, access_log)).run()


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
    """Replay a workload against an OpenAI-compatible endpoint; report TTFT/TPOT/E2E per tenant."""
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
    """Add ``serve``, ``engine`` and ``bench`` to the main ``fairserve`` app."""
    app.command("serve")(serve_cmd)
    app.command("engine")(engine_cmd)
    app.command("bench")(bench_cmd)


def _standalone() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    register(app)
    return app


if __name__ == "__main__":
    _standalone()()
