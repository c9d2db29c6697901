"""Any OpenAI-compatible HTTP server as a backend: requests, health checks, engine metrics.

Health: ``GET <url><health_path>`` every ``health_interval_s``; a failed check
(or a connection failure of a real request) takes the backend out, a passing
check puts it back. Engine metrics: ``GET <url>/metrics`` every
``metrics_interval_s`` (:mod:`.engine_metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import httpx

from fairserve.gateway.backends.engine_metrics import parse_engine_metrics, scheduling_policy
from fairserve.gateway.backends.http1 import Http1Pool, Response, TransportError
from fairserve.gateway.config import DispatchConfig
from fairserve.gateway.dispatch import BackendState

log = logging.getLogger("fairserve.gateway")

#: Where engines say how they schedule: vLLM (dev mode), then SGLang.
_SERVER_INFO_PATHS = ("/server_info?config_format=json", "/get_server_info")


class UpstreamError(Exception):
    """An upstream request failed. ``retryable``: nothing was produced, another backend may do.

    ``kind`` (the ``fairserve_backend_errors_total`` label): ``connect`` (no
    answer), ``status`` (a 4xx/5xx) or ``stream`` (the stream broke off or
    carried an error event).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int = 502,
        body: bytes = b"",
        kind: str = "stream",
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.body = body
        self.kind = kind


class HttpUpstream:
    """One pooled HTTP client for all backends, plus their health and metrics pollers."""

    def __init__(
        self,
        backends: Sequence[BackendState],
        config: DispatchConfig,
        on_change: Callable[[], None],
    ) -> None:
        self.backends = list(backends)
        self.config = config
        self.on_change = on_change
        timeout = httpx.Timeout(
            connect=config.connect_timeout_s,
            read=config.read_timeout_s,
            write=config.connect_timeout_s,
            pool=config.connect_timeout_s,
        )
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=512)
        # httpx for the pollers (a few requests a second); the lean pools for requests.
        self.client = httpx.AsyncClient(timeout=timeout, limits=limits)
        self.pools = [
            Http1Pool(b.url, config.connect_timeout_s, config.read_timeout_s) for b in self.backends
        ]
        self._tasks: list[asyncio.Task[None]] = []

    # ----------------------------------------------------------- requests
    async def open(
        self, backend: BackendState, path: str, body: bytes, request_id: str = ""
    ) -> Response:
        """Send a streaming request; the response's headers have arrived when this returns.

        Raises ``UpstreamError``: retryable for connection failures and 5xx
        (the backend is marked unhealthy on connection failures), not
        retryable for 4xx (the client's mistake, passed on as is).
        """
        headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if backend.config.api_key:
            headers["authorization"] = "Bearer " + backend.config.api_key
        if request_id:
            headers["x-request-id"] = request_id
        try:
            response = await self.pools[backend.index].post(path, body, headers)
        except TransportError as exc:
            self.mark(backend, healthy=False)
            raise UpstreamError(
                f"{backend.name}: {type(exc).__name__}: {exc}", retryable=True, kind="connect"
            ) from None
        if response.status_code >= 400:
            try:
                content = await response.aread()
            except TransportError:
                content = b""
            finally:
                await response.aclose()
            retryable = response.status_code >= 500
            raise UpstreamError(
                f"{backend.name} answered {response.status_code}",
                retryable=retryable,
                status=response.status_code,
                body=content,
                kind="status",
            )
        return response

    def mark(self, backend: BackendState, *, healthy: bool) -> None:
        """Take a backend out or put it back."""
        if healthy:
            backend.failures = 0
        else:
            backend.failures += 1
        now_healthy = healthy or backend.failures < self.config.unhealthy_after
        if now_healthy != backend.healthy:
            backend.healthy = now_healthy
            self.on_change()

    # ----------------------------------------------------------- pollers
    def start(self) -> None:
        """Start the health and metrics pollers."""
        loop = asyncio.get_running_loop()
        for backend in self.backends:
            self._tasks.append(loop.create_task(self._health_loop(backend)))
            if backend.config.metrics != "off":
                self._tasks.append(loop.create_task(self._metrics_loop(backend)))
            if backend.config.priority:
                self._tasks.append(loop.create_task(self.check_priority(backend)))

    async def close(self) -> None:
        """Stop the pollers and close the pool."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.client.aclose()
        for pool in self.pools:
            pool.close()

    async def check_health(self, backend: BackendState) -> bool:
        """One health check; updates the backend's state."""
        url, timeout_s = backend.url + self.config.health_path, self.config.health_timeout_s
        try:
            try:
                response = await self.client.get(url, timeout=timeout_s)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # a kept-alive connection the server closed as it was reused: once more
                response = await self.client.get(url, timeout=timeout_s)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        self.mark(backend, healthy=ok)
        return ok

    async def check_priority(self, backend: BackendState) -> None:
        """At start-up, for ``priority: true``: warn unless the engine runs a priority scheduler.

        The policy the engine reported (None when it reports none) is kept in
        ``backend.scheduling_policy``.
        An engine on first-come-first-served accepts the ``priority`` field
        and ignores it, so the tenants' priorities would silently do nothing.
        """
        policy = None
        for path in _SERVER_INFO_PATHS:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                response = await self.client.get(backend.url + path, timeout=10.0)
                if response.status_code == 200:
                    policy = scheduling_policy(response.json())
            if policy is not None:
                break
        if policy is None:
            log.warning("backend %s: priority is on, but the engine does not say how it "
                        "schedules; vLLM needs --scheduling-policy priority (run it with "
                        "VLLM_SERVER_DEV_MODE=1 to let the gateway check)", backend.name)  # fmt: skip
        elif policy != "priority":
            log.warning("backend %s: priority is on, but the engine schedules %s and ignores "
                        "the priority field; start vLLM with --scheduling-policy priority "
                        "(SGLang: --enable-priority-scheduling)", backend.name, policy)  # fmt: skip
        backend.scheduling_policy = policy

    async def _health_loop(self, backend: BackendState) -> None:
        while True:
            try:
                await self.check_health(backend)
            except Exception:  # a poller must outlive any one bad answer
                log.exception("backend %s: health check failed", backend.name)
            await asyncio.sleep(self.config.health_interval_s)

    async def _metrics_loop(self, backend: BackendState) -> None:
        while True:
            try:
                await self.poll_metrics(backend)
            except Exception:  # a poller must outlive any one bad answer
                log.exception("backend %s: reading its /metrics failed", backend.name)
            await asyncio.sleep(self.config.metrics_interval_s)

    async def poll_metrics(self, backend: BackendState) -> None:
        """Read the engine's /metrics once; its figures replace the backend's estimate."""
        try:
            response = await self.client.get(
                backend.url + "/metrics", timeout=self.config.health_timeout_s
            )
        except httpx.HTTPError:
            backend.forget_engine()  # gone or restarting: its old queue means nothing now
            return
        figures = None
        if response.status_code == 200:
            figures = parse_engine_metrics(response.text, backend.config.metrics)
        if figures is not None:
            backend.observe_engine(figures)
            self.on_change()
