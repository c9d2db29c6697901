"""The gateway's commands: ``fairserve serve`` and ``fairserve engine``.

``register(app)`` adds them to the main ``fairserve`` Typer app;
``python -m fairserve.cli.gateway ...`` runs them on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fairserve.cli.options import fail as _fail

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


def _draining_server(config: Any, gateway: Any, grace_s: float, delay_s: float = 0.0) -> Any:
    """A uvicorn server whose first SIGTERM/SIGINT drains the gateway before exiting (status 0).

    The drain, as a service behind a load balancer needs it: /readyz answers
    503 at once while requests are still served for ``delay_s`` (so the
    balancer sees it and stops sending); then the listener closes, requests on
    open connections get 503, and those in flight have ``grace_s`` to finish
    before they are interrupted.
    """
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
            err.print(f"draining: /readyz 503; serving for {delay_s:g} s more, then in-flight "
                      f"requests have {grace_s:g} s")  # fmt: skip
            asyncio.get_running_loop().create_task(self._drain())

        async def _drain(self) -> None:
            await gateway.announce_shutdown(delay_s)
            for server in self.servers:  # stop accepting connections; open ones stay
                server.close()
            await gateway.drain(grace_s)
            self.should_exit = True

    return DrainingServer(config)


def _freeze_startup_heap() -> None:
    """Keep the objects made at start-up out of the cyclic collector's full passes.

    The server process holds about 100,000 objects once its modules are
    imported (a full collection of them took 67 ms here); each full pass the
    collector runs under load stalls every request in flight for that long,
    which showed as a p99 of 75-90 ms at 400 req/s against 3 ms without it.
    Frozen objects are never collected, so this runs once, right before
    serving, after a collection of whatever start-up left behind.
    """
    gc.collect()
    gc.freeze()


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
    server = _draining_server(
        uv, app.state.gateway, server_cfg.drain_grace_s, server_cfg.drain_delay_s
    )
    _freeze_startup_heap()
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
    server = uvicorn.Server(_uvicorn_config(app, host, port, access_log))
    _freeze_startup_heap()
    server.run()


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``engine`` to the main ``fairserve`` app."""
    app.command("serve")(serve_cmd)
    app.command("engine")(engine_cmd)


def _standalone() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    register(app)
    return app


if __name__ == "__main__":
    _standalone()()
