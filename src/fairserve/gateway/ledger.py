"""The ledger: every admitted request is opened here and ended here, exactly once.

Ending a flight returns its backend capacity, tells the policy the real
length (``on_finish``) and, for a completed request, the predictor
(``observe``); it counts the outcome and the tokens in the metrics and, when
``server.record_requests`` is on, adds the request's record.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable

from fairserve.core.policies.base import Policy
from fairserve.core.predict import Predictor
from fairserve.gateway.connect import Connector
from fairserve.gateway.flight import End, Flight
from fairserve.gateway.metrics import GatewayMetrics
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
    ) -> None:
        self.connector = connector
        self.policy = policy
        self.predictor = predictor
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

    def end(self, flight: Flight, end: End) -> None:
        """End an admitted request: exactly once."""
        assert not flight.ended, f"request {flight.req.id} ended twice"
        flight.ended = True
        self.flights.discard(flight)
        if not self.flights:
            self.idle.set()
        now = self.clock()
        self._reconcile(flight, now)
        self.connector.unassign(flight)
        self.policy.on_finish(flight.req, flight.produced, now)
        if end is End.COMPLETED:
            self._completed(flight, now)
        self._count(flight, end, now)

    def _reconcile(self, flight: Flight, now: float) -> None:
        """The engine's usage wins: charge the policy the difference to what was charged.

        A prompt the estimate over-counted is not refunded: the fair policies
        charge the prompt at dispatch and credit it against prefill, and a
        negative prefill would grow that credit instead.
        """
        if not flight.usage:
            return
        # (charged_prompt_tokens is 0 when no token was relayed: the whole prompt is due)
        prompt_delta = max(0, flight.prompt_tokens - flight.charged_prompt_tokens)
        completion_delta = flight.completion_tokens - flight.produced
        flight.charged_prompt_tokens += prompt_delta
        flight.produced = flight.completion_tokens
        if self.policy.charges and (prompt_delta or completion_delta):
            self.policy.on_served(flight.tenant.name, prompt_delta, completion_delta, now)

    def _completed(self, flight: Flight, now: float) -> None:
        req, tenant, m = flight.req, flight.tenant.name, self.metrics
        if self.predictor is not None:
            self.predictor.observe(req, flight.produced)
            if req.predicted_output_tokens is not None:
                m.predictor_error.observe(abs(req.predicted_output_tokens - flight.produced))
        m.e2e.labels(tenant).observe(now - req.arrival_s)
        if not math.isnan(flight.first_token_s):
            m.ttft.labels(tenant).observe(flight.first_token_s - req.arrival_s)
            if flight.produced > 1:
                m.tpot.labels(tenant).observe((now - flight.first_token_s) / (flight.produced - 1))

    def _count(self, flight: Flight, end: End, now: float) -> None:
        req, tenant, m = flight.req, flight.tenant.name, self.metrics
        m.requests.labels(tenant, end.value).inc()
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
