"""The ledger: every admitted request is opened here and ended here, exactly once.

Ending a flight returns its backend capacity, tells the policy the real
length (``on_finish``) and, for a completed request, the predictor
(``observe``; with shared state, the predictor's update also goes to the
other replicas); it counts the outcome and the tokens in the metrics and, when
``server.record_requests`` is on, adds the request's record.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable

from fairserve.core.model import Request
from fairserve.core.policies.base import Policy
from fairserve.core.predict import Predictor, SharedLearning
from fairserve.gateway.connect import Connector
from fairserve.gateway.flight import End, Flight
from fairserve.gateway.metrics import GatewayMetrics
from fairserve.gateway.shared import SharedState
from fairserve.metrics.records import RequestRecords


class Ledger:
    """Open flights and how the ended ones ended."""

    def __init__(
        self,
        connector: Connector,
        policy: Policy,
        predictor: Predictor | None,
        metrics: GatewayMetrics,
        records: RequestRecords | None,
        clock: Callable[[], float],
        state: SharedState,
    ) -> None:
        self.connector = connector
        self.policy = policy
        self.predictor = predictor
        self.state = state
        # The fleet learns from each replica's requests where the predictor's
        # learning is one update per request (history, driftsched, learned).
        self._shares = state.shared and isinstance(predictor, SharedLearning)
        self.metrics = metrics
        self.records = records
        self.clock = clock
        self.admitted = 0
        self.outcomes: Counter[str] = Counter()  # by End (a str)
        self.flights: set[Flight] = set()
        self.idle = asyncio.Event()  # set while no flight is open
        self.idle.set()

    def open(self, flight: Flight) -> None:
        """An admitted request starts."""
        self.flights.add(flight)
        self.idle.clear()
        self.admitted += 1
        flight.tenant.active += 1
        self.metrics.admitted.labels(flight.tenant.name).inc()
        self.metrics.in_flight.labels(flight.tenant.name).inc()

    def end(self, flight: Flight, end: End) -> None:
        """End an admitted request: exactly once."""
        assert not flight.ended, f"request {flight.req.id} ended twice"
        flight.ended = True
        self.flights.discard(flight)
        if not self.flights:
            self.idle.set()
        now = self.clock()
        flight.tenant.active -= 1
        flight.tenant.last_end_s = now
        self._reconcile(flight, now)
        self.connector.unassign(flight)
        self.policy.on_finish(flight.req, flight.produced, now)
        if end is End.COMPLETED:
            self._completed(flight, now)
        self._count(flight, end, now)
        self._count_backend(flight, end, now)

    def _reconcile(self, flight: Flight, now: float) -> None:
        """The engine's usage wins: charge the policy the difference to what was charged.

        Either way: a prompt the estimate over-counted is taken back (a
        negative prefill, :meth:`Policy.on_served`), one it under-counted is
        charged. ``charged_prompt_tokens`` is 0 when no token was relayed:
        then the whole prompt is reported now.
        """
        if not flight.usage:
            return
        prompt_delta = flight.prompt_tokens - flight.charged_prompt_tokens
        completion_delta = flight.completion_tokens - flight.produced
        flight.charged_prompt_tokens += prompt_delta
        flight.produced = flight.completion_tokens
        if self.policy.charges and (prompt_delta or completion_delta):
            self.policy.on_served(flight.tenant.name, prompt_delta, completion_delta, now)

    def _observe(self, req: Request, produced: int) -> None:
        predictor = self.predictor
        assert predictor is not None
        if not self._shares:
            predictor.observe(req, produced)
            return
        assert isinstance(predictor, SharedLearning)
        update = predictor.feedback(req, produced)
        if update is not None:
            predictor.learn(*update)
            self.state.learned(*update)

    def _completed(self, flight: Flight, now: float) -> None:
        req, tenant, m = flight.req, flight.tenant.name, self.metrics
        if self.predictor is not None:
            self._observe(req, flight.produced)
            if req.predicted_output_tokens is not None:
                m.predictor_error.observe(abs(req.predicted_output_tokens - flight.produced))
        e2e_s = now - req.arrival_s
        m.e2e.labels(tenant).observe(e2e_s)
        ttft_s = tpot_s = math.nan
        if not math.isnan(flight.first_token_s):
            ttft_s = flight.first_token_s - req.arrival_s
            m.ttft.labels(tenant).observe(ttft_s)
            if flight.produced > 1:
                tpot_s = (now - flight.first_token_s) / (flight.produced - 1)
                m.tpot.labels(tenant).observe(tpot_s)
        self._count_slo(flight, ttft_s, tpot_s, e2e_s)

    def _count_slo(self, flight: Flight, ttft_s: float, tpot_s: float, e2e_s: float) -> None:
        """SLO attainment per objective; a figure that does not exist (no token) misses."""
        slo, counter = flight.tenant.core.slo, self.metrics.slo
        tenant = flight.tenant.name
        met_all: bool | None = None
        for objective, bound, value in (("ttft", slo.ttft_s, ttft_s), ("tpot", slo.tpot_s, tpot_s),
                                        ("e2e", slo.e2e_s, e2e_s)):  # fmt: skip
            if bound is None:
                continue
            if objective == "tpot" and math.isnan(value) and not math.isnan(ttft_s):
                continue  # one token: no time between tokens to judge
            met = value <= bound  # NaN compares False: a missing first token misses
            counter.labels(tenant, objective, str(met).lower()).inc()
            met_all = met if met_all is None else met_all and met
        if met_all is not None:
            counter.labels(tenant, "all", str(met_all).lower()).inc()

    def _count_backend(self, flight: Flight, end: End, now: float) -> None:
        if flight.instance is None:
            return  # never reached a backend
        backend, m = self.connector.scheduler.backends[flight.instance].name, self.metrics
        m.backend_requests.labels(backend, end.value).inc()
        if end is End.COMPLETED and not math.isnan(flight.dispatched_s):
            m.backend_e2e.labels(backend).observe(now - flight.dispatched_s)
            if not math.isnan(flight.first_token_s):
                m.backend_ttft.labels(backend).observe(flight.first_token_s - flight.dispatched_s)

    def _count(self, flight: Flight, end: End, now: float) -> None:
        req, tenant, m = flight.req, flight.tenant.name, self.metrics
        m.requests.labels(tenant, end.value).inc()
        m.in_flight.labels(tenant).dec()
        m.tokens.labels(tenant, "prompt").inc(flight.prompt_tokens)
        m.tokens.labels(tenant, "completion").inc(flight.produced)
        self.outcomes[end] += 1
        if self.records is not None:
            instance = -1 if flight.instance is None else flight.instance  # records: -1 = none
            reason = None if end is End.COMPLETED else end.value
            self.records.add(
                req.id, tenant, instance, end.outcome, req.arrival_s, flight.dispatched_s,
                flight.first_token_s, now, flight.prompt_tokens, flight.produced, 0, 0, reason,
            )  # fmt: skip
