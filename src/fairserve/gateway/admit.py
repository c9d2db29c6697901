"""Admission: a parsed request becomes a :class:`.Flight`, or an early 429/400.

In order: the tenant's limits that do not depend on rates (prompt size,
request size, queue cap over the fleet: :meth:`.Tenants.check_request`); the
core request, with the predictor's output-length estimate when one is
configured; the admission component when one is configured (``slo``: refuse a
request predicted to miss its TTFT objective on every healthy backend,
counting the prompts queued ahead); only then are the tenant's request and
token rates checked and charged, together and atomically (in the shared state:
:meth:`.SharedState.take_rate`), so a refused request costs the tenant
nothing. The flight is opened in the ledger.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from fairserve.core.model import Request
from fairserve.core.predict import Predictor
from fairserve.core.route.admission import Admission
from fairserve.gateway.dispatch import Scheduler
from fairserve.gateway.errors import APIError
from fairserve.gateway.flight import Flight
from fairserve.gateway.ledger import Ledger
from fairserve.gateway.protocol import Endpoint, ParsedRequest
from fairserve.gateway.shared import MemoryState, SharedState, StateUnavailable
from fairserve.gateway.shared.memory import take_local
from fairserve.gateway.tenants import Tenants, TenantState, rate_limited


class Admitter:
    """Limits, prediction and admission for each request; opens its flight."""

    def __init__(
        self,
        tenants: Tenants,
        predictor: Predictor | None,
        admission: Admission | None,
        scheduler: Scheduler,
        ledger: Ledger,
        default_max_tokens: int,
        clock: Callable[[], float],
        state: SharedState | None = None,
    ) -> None:
        self.tenants = tenants
        self.state: SharedState = state if state is not None else MemoryState()
        self.predictor = predictor
        self.admission = admission
        self.scheduler = scheduler
        self.ledger = ledger
        self.default_max_tokens = default_max_tokens
        self.clock = clock
        self._ids = itertools.count()

    async def admit(self, tenant: TenantState, parsed: ParsedRequest) -> Flight:
        """The admitted request's flight, or an :class:`APIError` naming the limit."""
        now = self.clock()
        # n choices may each run to max_tokens: the token budget counts them all
        max_tokens = (parsed.max_tokens or self.default_max_tokens) * parsed.sequences
        state = self.state
        try:
            state.check_available()
            queued = state.queued(tenant)
            prompt_param = "messages" if parsed.endpoint is Endpoint.CHAT else "prompt"
            self.tenants.check_request(
                tenant, parsed.prompt_tokens, max_tokens, queued, prompt_param
            )
            req = self._request(tenant, parsed, max_tokens, now)
            self._refuse_if_predicted_late(req)
            cost_tokens = parsed.prompt_tokens + max_tokens
            if state.shared:
                wait_s = await state.take_rate(tenant, cost_tokens, now)
            else:  # one replica: no round trip, and no coroutine on the hot path
                wait_s = take_local(tenant, cost_tokens, now)
            if wait_s > 0:
                raise rate_limited(tenant, wait_s)
        except StateUnavailable:
            raise state_unavailable_error(tenant.name) from None
        except APIError as exc:
            exc.tenant = tenant.name
            raise
        flight = Flight(req, tenant, parsed)
        self.ledger.open(flight)
        return flight

    def _request(
        self, tenant: TenantState, parsed: ParsedRequest, max_tokens: int, now: float
    ) -> Request:
        req = Request(
            next(self._ids), now, parsed.prompt_tokens, max_tokens, tenant=tenant.name,
            priority=tenant.core.priority, slo_class=tenant.core.slo.name,
            max_tokens=parsed.max_tokens, model=parsed.model, text=parsed.text,
        )  # fmt: skip
        if self.predictor is not None:
            req.predicted_output_tokens = round(self.predictor.predict(req).mean_tokens)
        return req

    def _refuse_if_predicted_late(self, req: Request) -> None:
        if self.admission is None:
            return
        healthy = [b for b in self.scheduler.backends if b.healthy]
        reason = self.admission.reason(req, healthy, self.scheduler.queued_prompt_tokens)
        if reason is not None:
            raise APIError(429, f"{reason[:1].upper()}{reason[1:]}; retry later.",
                           type="rate_limit_error", code="slo_unattainable",
                           headers={"Retry-After": "1"})  # fmt: skip


def state_unavailable_error(tenant: str) -> APIError:
    """503: the shared state is unreachable and ``state.on_unavailable`` is ``closed``."""
    exc = APIError(503, "The gateway's shared state is unavailable; retry shortly.",
                   type="server_error", code="shared_state_unavailable",
                   headers={"Retry-After": "1"})  # fmt: skip
    exc.tenant = tenant
    return exc
