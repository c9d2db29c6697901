"""The gateway's ASGI app: authenticate, validate, admit, queue, dispatch, relay, account.

Request path (DESIGN.md, "Gateway"): the API key names the tenant; the body is
validated and its prompt tokens estimated (:mod:`.protocol`); the predictor,
if any, predicts the output length; admission checks the tenant's limits
(:mod:`.tenants`); the request is pushed into the policy and waits until the
:class:`~.dispatch.Scheduler` gives it a backend (the router chooses among
those with room); the upstream answer is relayed as it streams, charging the
policy per chunk of tokens; when the request ends (exactly once, by one of
``completed``, ``cancelled``, ``failed``, ``expired``) capacity is returned,
the policy and the predictor hear the real length, and the metrics count it.

Upstream requests always stream (with ``include_usage``), also for a client
that asked for one JSON answer, so charging and disconnect handling are the
same for both; the gateway assembles the JSON body itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fairserve.core.model import Outcome, Request
from fairserve.core.policies import POLICIES
from fairserve.core.predict import PREDICTORS, Predictor
from fairserve.core.route import ROUTERS
from fairserve.gateway.asgi import DisconnectWatch, EventStream
from fairserve.gateway.backends.http1 import Response as UpstreamResponse
from fairserve.gateway.backends.http1 import TransportError
from fairserve.gateway.backends.openai_http import HttpUpstream, UpstreamError
from fairserve.gateway.config import GatewayConfig
from fairserve.gateway.dispatch import BackendState, QueueTimeout, Scheduler, Ticket
from fairserve.gateway.errors import APIError
from fairserve.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from fairserve.gateway.protocol import Endpoint, ParsedRequest, not_found_model, parse_request
from fairserve.gateway.tenants import Tenants, TenantState
from fairserve.metrics.records import NAN, RequestRecords

#: How an admitted request ended (the ``outcome`` label); each maps to a core Outcome.
END_OUTCOMES = {
    "completed": Outcome.COMPLETED,
    "cancelled": Outcome.CANCELLED,
    "failed": Outcome.FAILED,
    "expired": Outcome.FAILED,
}
_DONE = b"data: [DONE]"


class GatewayError(ValueError):
    """The gateway cannot start with this configuration (e.g. an unknown policy name)."""


class Flight:
    """One admitted request, from admission to its single end."""

    __slots__ = (
        "backend", "dispatched_s", "ended", "failed", "first_token_s", "instance", "parsed",
        "produced", "req", "tenant", "ticket", "usage", "watch",
    )  # fmt: skip

    def __init__(self, req: Request, tenant: TenantState, parsed: ParsedRequest) -> None:
        self.req = req
        self.tenant = tenant
        self.parsed = parsed
        self.backend: BackendState | None = None
        self.ticket: Ticket | None = None
        self.watch: DisconnectWatch | None = None
        self.produced = 0
        self.usage: dict[str, Any] | None = None
        self.dispatched_s = NAN
        self.first_token_s = NAN
        self.ended = False
        self.failed = False
        self.instance = -1


class Gateway:
    """The gateway's state: tenants, scheduling components, backends, metrics."""

    def __init__(self, config: GatewayConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.tenants = Tenants(config, clock())
        try:
            self.policy = POLICIES.create(
                config.policy, tenants=config.core_tenants(), **config.policy_params
            )
            self.router = ROUTERS.create(config.router)
            self.predictor: Predictor | None = (
                PREDICTORS.create(config.predictor, **config.predictor_params)
                if config.predictor
                else None
            )
        except (ValueError, TypeError) as exc:
            raise GatewayError(f"config: {exc}") from None
        self.backends = [BackendState(i, b) for i, b in enumerate(config.backends)]
        self.scheduler = Scheduler(self.policy, self.router, self.backends, clock)
        self.upstream = HttpUpstream(self.backends, config.dispatch, self.scheduler.dispatch)
        self.metrics = GatewayMetrics()
        self.records = RequestRecords() if config.server.record_requests else None
        self.outcomes: Counter[str] = Counter()
        self.admitted = 0
        self.flights: set[Flight] = set()
        self.draining = False
        self._ids = itertools.count()
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------------- endpoints
    async def chat(self, request: HTTPRequest) -> Response | EventStream:
        """POST /v1/chat/completions."""
        return await self._generate(request, Endpoint.CHAT)

    async def completions(self, request: HTTPRequest) -> Response | EventStream:
        """POST /v1/completions."""
        return await self._generate(request, Endpoint.COMPLETIONS)

    async def models(self, request: HTTPRequest) -> Response:
        """GET /v1/models (needs a valid key, like OpenAI's)."""
        try:
            self.tenants.authenticate(request.headers.get("authorization"))
        except APIError as exc:
            return exc.response()
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fairserve"}
                for m in self.config.models]  # fmt: skip
        return JSONResponse({"object": "list", "data": data})

    async def healthz(self, request: HTTPRequest) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: HTTPRequest) -> Response:
        """Readiness: not draining and at least one backend healthy."""
        healthy = sum(b.healthy for b in self.backends)
        ready = healthy > 0 and not self.draining
        body = {"ready": ready, "draining": self.draining, "healthy_backends": healthy}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def prometheus(self, request: HTTPRequest) -> Response:
        """GET /metrics."""
        m = self.metrics
        for tenant in self.tenants.by_name.values():
            m.queue_length.labels(tenant.name).set(tenant.queued)
        for b in self.backends:
            m.inflight.labels(b.name).set(b.inflight)
            m.healthy.labels(b.name).set(1 if b.healthy else 0)
        return Response(m.render(), media_type=CONTENT_TYPE)

    # ------------------------------------------------------------- the request path
    def _admit(self, request: HTTPRequest, endpoint: Endpoint, raw: bytes) -> Flight:
        if self.draining:
            raise APIError(503, "The gateway is shutting down; retry on another replica.",
                           type="server_error", code="draining", headers={"Retry-After": "1"})  # fmt: skip
        tenant = self.tenants.authenticate(request.headers.get("authorization"))
        try:
            parsed = parse_request(endpoint, raw)
            if self.config.models and parsed.model not in self.config.models:
                raise not_found_model(parsed.model, self.config.models)
            now = self.clock()
            max_tokens = parsed.max_tokens or self.config.server.default_max_tokens
            self.tenants.admit(tenant, parsed.prompt_tokens, max_tokens, now)
        except APIError as exc:
            exc.tenant = tenant.name
            raise
        req = Request(
            next(self._ids), now, parsed.prompt_tokens, max_tokens, tenant=tenant.name,
            priority=tenant.core.priority, slo_class=tenant.core.slo.name,
            max_tokens=parsed.max_tokens, model=parsed.model, text=parsed.text,
        )  # fmt: skip
        if self.predictor is not None:
            req.predicted_output_tokens = round(self.predictor.predict(req).mean_tokens)
        flight = Flight(req, tenant, parsed)
        self.flights.add(flight)
        self._idle.clear()
        self.admitted += 1
        return flight

    async def _generate(self, request: HTTPRequest, endpoint: Endpoint) -> Response | EventStream:
        try:
            flight = self._admit(request, endpoint, await request.body())
        except APIError as exc:
            self.metrics.requests.labels(exc.tenant, f"rejected_{exc.status}").inc()
            return exc.response()
        watch = flight.watch = DisconnectWatch(request.receive)
        try:
            response = await self._acquire(flight)
        except APIError as exc:
            watch.finish()
            self._end(flight, "expired" if exc.code == "queue_timeout" else "failed")
            return exc.response()
        except asyncio.CancelledError:
            return self._interrupted(flight)
        if flight.parsed.stream:
            return EventStream(
                self._relay(flight, response),
                watch,
                on_end=lambda gone: self._end_stream(flight, gone),
                abort_event=_shutdown_error().sse_event() + _DONE + b"\n\n",
            )
        try:
            body = await self._collect(flight, response)
        except APIError as exc:
            watch.finish()
            self._end(flight, "failed")
            return exc.response()
        except asyncio.CancelledError:
            return self._interrupted(flight)
        watch.finish()
        self._end(flight, "completed")
        return JSONResponse(body)

    def _interrupted(self, flight: Flight) -> Response:
        watch = flight.watch
        assert watch is not None
        if not (watch.gone or watch.aborted):
            self._end(flight, "cancelled")
            raise asyncio.CancelledError
        watch.absorb()
        watch.finish()
        self._end(flight, "cancelled")
        if watch.aborted:
            return _shutdown_error().response()
        return Response(status_code=499)  # nobody is listening; nginx's "client closed"

    def _upstream_body(self, flight: Flight, backend: BackendState) -> bytes:
        body = dict(flight.parsed.body)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        body.pop("priority", None)  # a client must not choose its own priority
        if backend.config.priority:
            body["priority"] = flight.req.priority
        return json.dumps(body).encode()

    async def _acquire(self, flight: Flight) -> UpstreamResponse:
        """Wait for a backend and open the upstream stream; retry another backend on failure."""
        max_wait_s = flight.tenant.limits.max_queue_wait_s
        if flight.ticket is None:
            flight.ticket = self.scheduler.submit(flight.req, flight.tenant, max_wait_s)
        ticket = flight.ticket
        for _attempt in range(len(self.backends) + 1):
            future = ticket.future
            try:
                backend = future.result() if future.done() else await future
            except QueueTimeout:
                raise APIError(
                    503,
                    f"The request waited {max_wait_s:g} s in tenant {flight.tenant.name!r}'s "
                    "queue without reaching a backend (max_queue_wait_s); the fleet is busy. "
                    "Retry later.",
                    type="server_error",
                    code="queue_timeout",
                    headers={"Retry-After": str(max(1, math.ceil(max_wait_s / 4)))},
                ) from None
            except asyncio.CancelledError:
                self.scheduler.withdraw(ticket)
                raise
            flight.backend = backend
            flight.instance = backend.index
            if math.isnan(flight.dispatched_s):
                flight.dispatched_s = self.clock()
                self.metrics.queue_wait.labels(flight.tenant.name).observe(
                    flight.dispatched_s - flight.req.arrival_s
                )
            path = flight.parsed.endpoint.path
            try:
                return await self.upstream.open(backend, path, self._upstream_body(flight, backend))
            except UpstreamError as exc:
                self._unassign(flight)
                if not exc.retryable:
                    raise _passthrough(exc) from None
                self.metrics.retries.labels(backend.name).inc()
                self.scheduler.resubmit(ticket, backend, max_wait_s)
        raise APIError(502, "No backend could serve the request (all attempts failed).",
                       type="server_error", code="upstream_unavailable")  # fmt: skip

    def _unassign(self, flight: Flight) -> None:
        if flight.backend is not None:
            backend, flight.backend = flight.backend, None
            assert flight.ticket is not None
            self.scheduler.release(backend, flight.ticket)

    # ------------------------------------------------------------- relaying
    def _scan(self, flight: Flight, block: bytes) -> tuple[bytes, int, bool]:
        """One block of whole SSE events: (bytes for the client, tokens, saw [DONE])."""
        tokens = 0
        done = False
        dropped = False
        keep: list[bytes] = []
        for event in block.split(b"\n\n"):
            if not event:
                continue
            if event.startswith(_DONE):
                done = True
            elif b'"choices":[]' in event:  # the usage chunk we asked for
                with contextlib.suppress(ValueError):
                    flight.usage = json.loads(event[5:]).get("usage")
                if not flight.parsed.include_usage:
                    dropped = True
                    continue
            elif event.startswith(b'data: {"error"'):
                raise UpstreamError("upstream error event", retryable=flight.produced == 0,
                                    body=event)  # fmt: skip
            elif (b'"content":"' in event and b'"content":""' not in event) or (
                b'"text":"' in event and b'"text":""' not in event
            ):
                tokens += 1
            keep.append(event)
        if not dropped:
            return block, tokens, done
        return b"".join(e + b"\n\n" for e in keep), tokens, done

    def _account(self, flight: Flight, tokens: int) -> None:
        now = self.clock()
        prefill = 0
        if flight.produced == 0:
            flight.first_token_s = now
            prefill = flight.req.prompt_tokens
        flight.produced += tokens
        if self.policy.charges:
            self.policy.on_served(flight.tenant.name, prefill, tokens, now)

    async def _events(self, flight: Flight, response: UpstreamResponse) -> AsyncIterator[bytes]:
        """Whole-event blocks of one upstream stream, accounted; raises if it breaks off."""
        buf = b""
        done = False
        try:
            async for raw in response.aiter_raw():
                if buf:
                    raw = buf + raw
                end = raw.rfind(b"\n\n")
                if end < 0:
                    buf = raw
                    continue
                buf = raw[end + 2 :]
                out, tokens, done = self._scan(flight, raw[: end + 2])
                if tokens:
                    self._account(flight, tokens)
                if out:
                    yield out
        except TransportError as exc:
            raise UpstreamError(
                f"upstream stream broke: {exc}", retryable=flight.produced == 0
            ) from None
        finally:
            await response.aclose()
        if not done:
            raise UpstreamError("upstream ended without [DONE]", retryable=flight.produced == 0)

    async def _recover(self, flight: Flight, exc: UpstreamError) -> UpstreamResponse:
        """After a break before any token: another backend, or an APIError."""
        backend = flight.backend
        if not exc.retryable or backend is None:
            raise APIError(502, f"The upstream failed mid-answer: {exc}", type="server_error",
                           code="upstream_error") from None  # fmt: skip
        self.upstream.mark(backend, healthy=False)
        self._unassign(flight)
        self.metrics.retries.labels(backend.name).inc()
        assert flight.ticket is not None
        self.scheduler.resubmit(flight.ticket, backend, flight.tenant.limits.max_queue_wait_s)
        return await self._acquire(flight)

    async def _relay(self, flight: Flight, response: UpstreamResponse) -> AsyncIterator[bytes]:
        """The client's SSE stream (upstream bytes forwarded as they come)."""
        for _attempt in range(len(self.backends) + 1):
            try:
                async for block in self._events(flight, response):
                    yield block
                return
            except UpstreamError as exc:
                try:
                    response = await self._recover(flight, exc)
                except APIError as err:
                    flight.failed = True
                    yield err.sse_event() + _DONE + b"\n\n"
                    return

    async def _collect(self, flight: Flight, response: UpstreamResponse) -> dict[str, Any]:
        """Assemble one JSON answer from the upstream stream (for ``stream: false``)."""
        for _attempt in range(len(self.backends) + 1):
            pieces: list[str] = []
            head: dict[str, Any] = {}
            finish: str | None = None
            try:
                async for block in self._events(flight, response):
                    for event in block.split(b"\n\n"):
                        if not event.startswith(b"data: {"):
                            continue
                        chunk = json.loads(event[6:])
                        head = head or chunk
                        for choice in chunk.get("choices") or ():
                            delta = choice.get("delta") or {}
                            pieces.append(delta.get("content") or choice.get("text") or "")
                            finish = choice.get("finish_reason") or finish
                return _assemble(flight, head, "".join(pieces), finish)
            except UpstreamError as exc:
                response = await self._recover(flight, exc)
        raise APIError(502, "No backend could serve the request (all attempts failed).",
                       type="server_error", code="upstream_unavailable")  # fmt: skip

    # ------------------------------------------------------------- ending
    def _end_stream(self, flight: Flight, gone: bool) -> None:
        if gone or (flight.watch is not None and flight.watch.aborted):
            self._end(flight, "cancelled")
        else:
            self._end(flight, "failed" if flight.failed else "completed")

    def _end(self, flight: Flight, outcome: str) -> None:
        """End an admitted request: exactly once."""
        assert not flight.ended, f"request {flight.req.id} ended twice"
        flight.ended = True
        self.flights.discard(flight)
        if not self.flights:
            self._idle.set()
        now = self.clock()
        req, tenant = flight.req, flight.tenant.name
        if flight.usage and isinstance(flight.usage.get("completion_tokens"), int):
            flight.produced = flight.usage["completion_tokens"]
        self._unassign(flight)
        self.policy.on_finish(req, flight.produced, now)
        m = self.metrics
        if outcome == "completed":
            if self.predictor is not None:
                self.predictor.observe(req, flight.produced)
                if req.predicted_output_tokens is not None:
                    m.predictor_error.observe(abs(req.predicted_output_tokens - flight.produced))
            m.e2e.labels(tenant).observe(now - req.arrival_s)
            if not math.isnan(flight.first_token_s):
                m.ttft.labels(tenant).observe(flight.first_token_s - req.arrival_s)
                if flight.produced > 1:
                    m.tpot.labels(tenant).observe(
                        (now - flight.first_token_s) / (flight.produced - 1)
                    )
        m.requests.labels(tenant, outcome).inc()
        m.tokens.labels(tenant, "prompt").inc(req.prompt_tokens)
        m.tokens.labels(tenant, "completion").inc(flight.produced)
        self.outcomes[outcome] += 1
        if self.records is not None:
            self.records.add(
                req.id, tenant, flight.instance, END_OUTCOMES[outcome], req.arrival_s,
                flight.dispatched_s, flight.first_token_s, now, req.prompt_tokens,
                flight.produced, 0, 0, None if outcome == "completed" else outcome,
            )  # fmt: skip

    # ------------------------------------------------------------- lifecycle
    async def drain(self, grace_s: float) -> None:
        """Stop admitting (503), let in-flight requests finish for ``grace_s``, abort the rest."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_s)
        for flight in list(self.flights):
            if flight.watch is not None:
                flight.watch.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), 5.0)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Start the backend pollers; close the upstream pool at shutdown."""
        self.upstream.start()
        try:
            yield
        finally:
            await self.upstream.close()


def _shutdown_error() -> APIError:
    return APIError(503, "The gateway is shutting down; the request was interrupted.",
                    type="server_error", code="draining")  # fmt: skip


def _passthrough(exc: UpstreamError) -> APIError:
    """An upstream 4xx/5xx as an APIError with the upstream's message when it has one."""
    message = str(exc)
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        err = json.loads(exc.body)["error"]
        return APIError(exc.status, str(err.get("message")), type=str(err.get("type") or "upstream_error"),
                        param=err.get("param"), code=err.get("code"))  # fmt: skip
    return APIError(exc.status, message, type="upstream_error")


def _assemble(
    flight: Flight, head: dict[str, Any], text: str, finish: str | None
) -> dict[str, Any]:
    chat = flight.parsed.endpoint is Endpoint.CHAT
    choice: dict[str, Any] = {"index": 0, "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    choice["finish_reason"] = finish
    usage = flight.usage or {
        "prompt_tokens": flight.req.prompt_tokens,
        "completion_tokens": flight.produced,
        "total_tokens": flight.req.prompt_tokens + flight.produced,
    }
    return {
        "id": head.get("id", f"fairserve-{flight.req.id}"),
        "object": "chat.completion" if chat else "text_completion",
        "created": head.get("created", int(time.time())),
        "model": head.get("model", flight.parsed.model),
        "choices": [choice],
        "usage": usage,
    }


def create_app(config: GatewayConfig) -> Starlette:
    """The gateway ASGI app; ``app.state.gateway`` is the :class:`Gateway`.

    Raises :class:`GatewayError` at once for an unknown policy, router or predictor.
    """
    gateway = Gateway(config)
    routes = [
        Route("/v1/chat/completions", gateway.chat, methods=["POST"]),
        Route("/v1/completions", gateway.completions, methods=["POST"]),
        Route("/v1/models", gateway.models, methods=["GET"]),
        Route("/healthz", gateway.healthz, methods=["GET"]),
        Route("/readyz", gateway.readyz, methods=["GET"]),
        Route("/metrics", gateway.prometheus, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=gateway.lifespan)
    app.state.gateway = gateway
    return app
