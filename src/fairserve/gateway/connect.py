"""From the dispatcher's queue to an open upstream stream, retrying other backends.

Upstream requests always stream (with ``include_usage``), also for a client
that asked for one JSON answer, so charging and disconnect handling are the
same for both; :mod:`.relay` assembles the JSON body itself.

A backend that fails before producing a token (connection refused, a 5xx, a
stream that breaks off early) gives the request back to the dispatcher, which
sends it to another backend ahead of the policy's queue; a 4xx is the
client's mistake and is passed on as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable

import orjson

from fairserve.gateway.backends.http1 import Response as UpstreamResponse
from fairserve.gateway.backends.openai_http import HttpUpstream, UpstreamError
from fairserve.gateway.backends.state import BackendState
from fairserve.gateway.dispatch import NoBackend, QueueTimeout, Scheduler
from fairserve.gateway.errors import APIError
from fairserve.gateway.flight import Flight
from fairserve.gateway.metrics import GatewayMetrics


class Connector:
    """Waits for a backend for a flight and opens its upstream stream."""

    def __init__(
        self,
        scheduler: Scheduler,
        upstream: HttpUpstream,
        metrics: GatewayMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.scheduler = scheduler
        self.upstream = upstream
        self.metrics = metrics
        self.clock = clock
        self.attempts = len(scheduler.backends) + 1

    async def acquire(self, flight: Flight) -> UpstreamResponse:
        """Wait for a backend and open the upstream stream; retry another backend on failure."""
        max_wait_s = flight.tenant.limits.max_queue_wait_s
        if flight.ticket is None:
            flight.ticket = self.scheduler.submit(flight.req, flight.tenant, max_wait_s)
        ticket = flight.ticket
        for _attempt in range(self.attempts):
            future = ticket.future
            try:
                backend = future.result() if future.done() else await future
            except QueueTimeout:
                raise _queue_timeout(flight.tenant.name, max_wait_s) from None
            except NoBackend:
                raise no_backend_error(self.upstream.config.health_interval_s) from None
            except asyncio.CancelledError:
                self.scheduler.withdraw(ticket)
                raise
            self._dispatched(flight, backend)
            path = flight.parsed.endpoint.path
            try:
                body = upstream_body(flight, backend)
                return await self.upstream.open(backend, path, body, flight.request_id)
            except UpstreamError as exc:
                self.metrics.backend_errors.labels(backend.name, exc.kind).inc()
                self.unassign(flight)
                if not exc.retryable:
                    raise _passthrough(exc) from None
                self.metrics.retries.labels(backend.name).inc()
                self.scheduler.resubmit(ticket, backend, max_wait_s)
        raise unavailable_error()

    async def recover(self, flight: Flight, exc: UpstreamError) -> UpstreamResponse:
        """After a stream broke before any token: another backend, or an APIError."""
        backend = flight.backend
        if backend is not None:
            self.metrics.backend_errors.labels(backend.name, exc.kind).inc()
        if not exc.retryable or backend is None:
            raise APIError(502, f"The upstream failed mid-answer: {exc}", type="server_error",
                           code="upstream_error") from None  # fmt: skip
        self.upstream.mark(backend, healthy=False)
        self.unassign(flight)
        self.metrics.retries.labels(backend.name).inc()
        assert flight.ticket is not None
        self.scheduler.resubmit(flight.ticket, backend, flight.tenant.limits.max_queue_wait_s)
        return await self.acquire(flight)

    def unassign(self, flight: Flight) -> None:
        """Give the flight's backend capacity back (no-op when it holds none)."""
        if flight.backend is not None:
            backend, flight.backend = flight.backend, None
            assert flight.ticket is not None
            self.scheduler.release(backend, flight.ticket)

    def _dispatched(self, flight: Flight, backend: BackendState) -> None:
        flight.backend = backend
        flight.instance = backend.index
        if math.isnan(flight.dispatched_s):  # the first dispatch ends the queue wait
            flight.dispatched_s = self.clock()
            wait_s = flight.dispatched_s - flight.req.arrival_s
            self.metrics.queue_wait.labels(flight.tenant.name).observe(wait_s)


def upstream_body(flight: Flight, backend: BackendState) -> bytes:
    """The client's body, streaming with usage; the tenant's priority where the backend takes it."""
    body = dict(flight.parsed.body)
    body["stream"] = True
    # Usage always: the engine's counts are the ones charged; the relay strips it again
    # for a client that did not ask. The client's other options (vLLM's
    # continuous_usage_stats) stay.
    options = body.get("stream_options")
    body["stream_options"] = {**(options if isinstance(options, dict) else {}),
                              "include_usage": True}  # fmt: skip
    body.pop("priority", None)  # a client must not choose its own priority
    if backend.config.priority:
        body["priority"] = flight.req.priority
    try:
        return orjson.dumps(body)  # a few microseconds against the stdlib's tens
    except TypeError:  # what orjson cannot write (integers past 64 bits) the stdlib can
        return json.dumps(body).encode()


def _queue_timeout(tenant: str, max_wait_s: float) -> APIError:
    return APIError(
        503,
        f"The request waited {max_wait_s:g} s in tenant {tenant!r}'s queue without reaching a "
        "backend (max_queue_wait_s); the fleet is busy. Retry later.",
        type="server_error",
        code="queue_timeout",
        headers={"Retry-After": str(max(1, math.ceil(max_wait_s / 4)))},
    )


def no_backend_error(health_interval_s: float) -> APIError:
    """503: no backend is healthy; retry once the next health check may have found one."""
    return APIError(503, "No healthy backend can take the request now; retry shortly.",
                    type="server_error", code="no_healthy_backend",
                    headers={"Retry-After": str(max(1, math.ceil(health_interval_s)))})  # fmt: skip


def unavailable_error() -> APIError:
    """502: every attempt failed."""
    return APIError(502, "No backend could serve the request (all attempts failed).",
                    type="server_error", code="upstream_unavailable")  # fmt: skip


def _passthrough(exc: UpstreamError) -> APIError:
    """An upstream 4xx/5xx as an APIError with the upstream's message when it has one."""
    message = str(exc)
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        err = json.loads(exc.body)["error"]
        return APIError(exc.status, str(err.get("message")), type=str(err.get("type") or "upstream_error"),
                        param=err.get("param"), code=err.get("code"))  # fmt: skip
    return APIError(exc.status, message, type="upstream_error")
