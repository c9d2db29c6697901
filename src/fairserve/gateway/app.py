"""The gateway's ASGI app: the routes, and the parts of the request path wired together.

One generation request, top to bottom (DESIGN.md, "Gateway"):

1. :mod:`.parse` — the API key names the tenant (before any of the body is
   read); the body is read up to its cap, validated and its prompt tokens
   estimated;
2. :mod:`.admit` — the tenant's limits, the predictor's output estimate and the
   admission component turn it into a :class:`~.flight.Flight` (or a 400/429);
3. :mod:`.dispatch` — the flight waits in the policy until a backend has room
   and the router picks one; :mod:`.connect` opens the upstream stream,
   retrying another backend on failure;
4. :mod:`.relay` — the answer is relayed as it streams (or assembled into one
   JSON body), charging the policy per chunk of tokens;
5. :mod:`.ledger` — the flight ends exactly once (``completed``, ``cancelled``,
   ``failed`` or ``expired``): capacity returned, policy and predictor told
   the real length, metrics and records written.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from fairserve.gateway.admit import Admitter
from fairserve.gateway.asgi import DisconnectWatch, EventStream, HeaderLimit
from fairserve.gateway.backends.openai_http import HttpUpstream
from fairserve.gateway.backends.state import BackendState
from fairserve.gateway.components import GatewayError, build_components
from fairserve.gateway.config import GatewayConfig
from fairserve.gateway.connect import Connector, no_backend_error
from fairserve.gateway.dispatch import Scheduler
from fairserve.gateway.errors import APIError
from fairserve.gateway.flight import End, Flight
from fairserve.gateway.ledger import Ledger
from fairserve.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from fairserve.gateway.parse import CLOSE, authenticate, parse, read_body
from fairserve.gateway.protocol import Endpoint, not_found_model
from fairserve.gateway.relay import DONE, Relay
from fairserve.gateway.request_id import RequestId, add_headers, request_id
from fairserve.gateway.shared import build_state
from fairserve.gateway.tenants import Tenants
from fairserve.metrics.records import RequestRecords

__all__ = ["Gateway", "GatewayApp", "GatewayError", "create_app"]


class Gateway:
    """The gateway's parts, one per step of the request path, and its endpoints."""

    def __init__(self, config: GatewayConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.tenants = Tenants(config, clock())
        parts = build_components(config)
        self.policy, self.router, self.predictor = parts.policy, parts.router, parts.predictor
        self.backends = [BackendState(i, b) for i, b in enumerate(config.backends)]
        self.state = build_state(config.state)  # what the replicas of a deployment share
        self.scheduler = Scheduler(
            self.policy,
            self.router,
            self.backends,
            clock,
            self.state,
            list(self.tenants.by_name.values()),
            config.dispatch,
        )
        self.upstream = HttpUpstream(self.backends, config.dispatch, self.scheduler.dispatch)
        self.metrics = GatewayMetrics()
        self.state.bind(self.scheduler, self.policy, self.tenants, self.metrics, self.predictor)
        records = RequestRecords() if config.server.record_requests else None
        self.connector = Connector(self.scheduler, self.upstream, self.metrics, clock)
        self.ledger = Ledger(self.connector, self.policy, self.predictor, self.metrics, records,
                             clock, self.state)  # fmt: skip
        self.admitter = Admitter(self.tenants, self.predictor, parts.admission, self.scheduler,
                                 self.ledger, config.server.default_max_tokens, clock,
                                 self.state)  # fmt: skip
        self.relay = Relay(self.connector, self.policy, clock)
        self.ready = True  # /readyz: False from the first SIGTERM on
        self.draining = False  # new requests refused (503), after drain_delay_s

    @property
    def admitted(self) -> int:
        """Requests admitted so far."""
        return self.ledger.admitted

    @property
    def outcomes(self) -> Counter[str]:
        """How the admitted requests that ended, ended."""
        return self.ledger.outcomes

    @property
    def records(self) -> RequestRecords | None:
        """Per-request records (``server.record_requests``)."""
        return self.ledger.records

    # ------------------------------------------------------------- the request path
    async def chat(self, request: HTTPRequest) -> Response | EventStream:
        """POST /v1/chat/completions."""
        return await self._generate(request, Endpoint.CHAT)

    async def completions(self, request: HTTPRequest) -> Response | EventStream:
        """POST /v1/completions."""
        return await self._generate(request, Endpoint.COMPLETIONS)

    async def _generate(self, request: HTTPRequest, endpoint: Endpoint) -> Response | EventStream:
        try:
            flight = await self._admit(request, endpoint)
        except APIError as exc:
            self.metrics.requests.labels(exc.tenant, f"rejected_{exc.status}").inc()
            return exc.response()
        watch = flight.watch = DisconnectWatch(request.receive)
        try:
            response = await self.connector.acquire(flight)
        except APIError as exc:
            watch.finish()
            self.ledger.end(flight, End.EXPIRED if exc.code == "queue_timeout" else End.FAILED)
            return exc.response()
        except asyncio.CancelledError:
            return self._interrupted(flight)
        if flight.parsed.stream:
            return EventStream(
                self.relay.stream(flight, response),
                watch,
                on_end=lambda gone: self._end_stream(flight, gone),
                abort_event=_shutdown_error().sse_event() + DONE + b"\n\n",
            )
        try:
            body = await self.relay.collect(flight, response)
        except APIError as exc:
            watch.finish()
            self.ledger.end(flight, End.FAILED)
            return exc.response()
        except asyncio.CancelledError:
            return self._interrupted(flight)
        watch.finish()
        self.ledger.end(flight, End.COMPLETED)
        return JSONResponse(body)

    async def _admit(self, request: HTTPRequest, endpoint: Endpoint) -> Flight:
        if self.draining:
            raise APIError(503, "The gateway is shutting down; retry on another replica.",
                           type="server_error", code="draining",
                           headers={"Retry-After": "1", **CLOSE})  # fmt: skip
        tenant = authenticate(self.tenants, request.headers.get("authorization"))
        try:
            if not self.scheduler.any_healthy:
                raise no_backend_error(self.config.dispatch.health_interval_s)
            limits = self.config.limits
            raw = await read_body(request, limits)
            parsed = parse(tenant, self.config.models, endpoint, raw, limits.max_json_depth)
            flight = await self.admitter.admit(tenant, parsed)
        except APIError as exc:
            exc.tenant = tenant.name
            raise
        finally:  # the tenant's limits as they stand after this request, on any answer
            add_headers(request.scope, tenant.ratelimit_headers(self.clock()))
        flight.request_id = request_id(request.scope)
        return flight

    def _interrupted(self, flight: Flight) -> Response:
        """The request's task was cancelled while waiting: by its client, or by shutdown."""
        watch = flight.watch
        assert watch is not None
        if not (watch.gone or watch.aborted):
            self.ledger.end(flight, End.CANCELLED)
            raise asyncio.CancelledError
        watch.absorb()
        watch.finish()
        self.ledger.end(flight, End.CANCELLED)
        if watch.aborted:
            return _shutdown_error().response()
        return Response(status_code=499)  # nobody is listening; nginx's "client closed"

    def _end_stream(self, flight: Flight, gone: bool) -> None:
        if gone or (flight.watch is not None and flight.watch.aborted):
            self.ledger.end(flight, End.CANCELLED)
        else:
            self.ledger.end(flight, End.FAILED if flight.failed else End.COMPLETED)

    # ------------------------------------------------------------- other endpoints
    async def models(self, request: HTTPRequest) -> Response:
        """GET /v1/models (needs a valid key, like OpenAI's)."""
        try:
            self.tenants.authenticate(request.headers.get("authorization"))
        except APIError as exc:
            return exc.response()
        data = [_model_card(m) for m in self.config.models]
        return JSONResponse({"object": "list", "data": data})

    async def model(self, request: HTTPRequest) -> Response:
        """GET /v1/models/{id}: one model, or a 404 in OpenAI's shape."""
        try:
            self.tenants.authenticate(request.headers.get("authorization"))
        except APIError as exc:
            return exc.response()
        name = request.path_params["model"]
        if name not in self.config.models:
            return not_found_model(name, self.config.models).response()
        return JSONResponse(_model_card(name))

    async def healthz(self, request: HTTPRequest) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: HTTPRequest) -> Response:
        """Readiness: not shutting down and at least one backend healthy."""
        healthy = sum(b.healthy for b in self.backends)
        ready = healthy > 0 and self.ready
        body = {"ready": ready, "draining": not self.ready, "healthy_backends": healthy}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def prometheus(self, request: HTTPRequest) -> Response:
        """GET /metrics."""
        m = self.metrics
        for tenant in self.tenants.by_name.values():
            m.queue_length.labels(tenant.name).set(tenant.queued)
        for b in self.backends:
            m.inflight.labels(b.name).set(b.inflight)
            m.healthy.labels(b.name).set(1 if b.healthy else 0)
            m.engine_running.labels(b.name).set(b.num_running)
            m.engine_waiting.labels(b.name).set(b.num_waiting)
            m.running_cap.labels(b.name).set(math.nan if b.running_cap is None else b.running_cap)
            m.kv_usage.labels(b.name).set(math.nan if b.kv_usage is None else b.kv_usage)
        return Response(m.render(), media_type=CONTENT_TYPE)

    # ------------------------------------------------------------- lifecycle
    async def announce_shutdown(self, delay_s: float) -> None:
        """First step of a drain: /readyz answers 503 while requests are still served.

        A load balancer needs a few probe periods to see the 503 and stop
        sending; until ``delay_s`` has passed, requests keep being admitted.
        """
        self.ready = False
        await asyncio.sleep(delay_s)

    async def drain(self, grace_s: float) -> None:
        """Stop admitting (503), let in-flight requests finish for ``grace_s``, abort the rest."""
        self.ready = False
        self.draining = True
        idle = self.ledger.idle
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(idle.wait(), grace_s)
        for flight in list(self.ledger.flights):
            if flight.watch is not None:
                flight.watch.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(idle.wait(), 5.0)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Start the backend pollers; close the upstream pool at shutdown."""
        self.upstream.start()
        await self.state.start()
        try:
            yield
        finally:
            await self.state.close()
            await self.upstream.close()


def _model_card(name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "fairserve"}


def _shutdown_error() -> APIError:
    return APIError(503, "The gateway is shutting down; the request was interrupted.",
                    type="server_error", code="draining")  # fmt: skip


async def _http_error(request: HTTPRequest, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 (wrong method), in the OpenAI error shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message, code = f"No route {request.url.path}; see /v1/models for the API.", "not_found"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {request.url.path} (allowed: {allowed})"
        code = "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    return APIError(exc.status_code, message, code=code, headers=exc.headers).response()


class GatewayApp:
    """The gateway's ASGI app: the generation routes served directly, the rest by Starlette.

    Every request first passes the header limits and gets its request id. A
    ``POST`` to one of the two generation paths then goes straight to
    :meth:`Gateway.chat`'s code, without Starlette's router and exception
    layers (measured at 400 req/s, they and their per-message ``send``
    wrappers were a tenth of the gateway's CPU time per streamed request);
    anything else, and any other spelling of a path, goes to Starlette,
    which also runs the lifespan. ``state.gateway`` is the :class:`Gateway`.
    """

    def __init__(self, gateway: Gateway, routes: Starlette) -> None:
        self.gateway = gateway
        self.routes = routes
        self.state = routes.state
        self._generation = {endpoint.path: endpoint for endpoint in Endpoint}
        limits = gateway.config.limits
        self._app = RequestId(HeaderLimit(self._route, limits.max_header_count,
                                          limits.max_header_bytes))  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self._generation.get(scope["path"])
            if endpoint is not None:
                request = HTTPRequest(scope, receive, send)
                response = await self.gateway._generate(request, endpoint)
                await response(scope, receive, send)
                return
        await self.routes(scope, receive, send)


def create_app(config: GatewayConfig) -> GatewayApp:
    """The gateway ASGI app; ``app.state.gateway`` is the :class:`Gateway`.

    Raises :class:`GatewayError` at once for a policy, router, predictor or
    admission that cannot be built.
    """
    gateway = Gateway(config)
    routes = [
        Route("/v1/chat/completions", gateway.chat, methods=["POST"]),
        Route("/v1/completions", gateway.completions, methods=["POST"]),
        Route("/v1/models", gateway.models, methods=["GET"]),
        # model ids may hold slashes (org/name), as vLLM's served names do
        Route("/v1/models/{model:path}", gateway.model, methods=["GET"]),
        Route("/healthz", gateway.healthz, methods=["GET"]),
        Route("/readyz", gateway.readyz, methods=["GET"]),
        Route("/metrics", gateway.prometheus, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=gateway.lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.gateway = gateway
    return GatewayApp(gateway, app)
