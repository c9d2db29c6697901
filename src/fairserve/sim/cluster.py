"""A cluster: engine instances behind one global queue and a router."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from fairserve.core.model import Outcome, Request
from fairserve.core.policies.base import Policy
from fairserve.core.predict.base import Predictor
from fairserve.core.route.admission import Admission
from fairserve.core.route.base import InstanceView, Router
from fairserve.metrics.records import RequestRecords


class Instance(InstanceView, Protocol):
    """What the cluster and the event loop need of an engine."""

    on_finish: Callable[[Request, int, float], None] | None  # set by the cluster

    @property
    def wake_s(self) -> float | None:
        """The time of the next step boundary with work to do; None when idle."""

    @property
    def version(self) -> int:
        """Changes whenever ``wake_s`` does (a stale wake-up is skipped by it)."""

    def add(self, req: Request, now: float) -> None:
        """A request reaches the engine."""

    def advance(self) -> None:
        """Finish the work that ends at ``wake_s`` and plan the next."""


class Cluster:
    """Instances (heterogeneous allowed) fed from one policy-ordered global queue.

    A request waits in the global queue until some instance has fewer than
    ``max_engine_waiting`` requests queued of its own; the router then picks
    among the instances with room. Keeping the engines' queues short is what
    lets the global policy's order be the order that counts.

    A ``predictor`` sets each request's ``predicted_output_tokens`` on arrival
    and observes its real length when it completes; the global policy hears
    ``on_finish`` for every request that ends.
    """

    def __init__(
        self,
        instances: Sequence[Instance],
        router: Router,
        queue: Policy,
        max_engine_waiting: int = 8,
        predictor: Predictor | None = None,
        admission: Admission | None = None,
        records: RequestRecords | None = None,
    ) -> None:
        if not instances:
            raise ValueError("a cluster needs at least one instance")
        if max_engine_waiting < 1:
            raise ValueError(f"max_engine_waiting must be >= 1, got {max_engine_waiting}")
        self.instances = list(instances)
        self.router = router
        self.queue = queue
        self.max_engine_waiting = max_engine_waiting
        self.touched: list[Instance] = []  # instances whose wake may have changed
        self.predictor = predictor
        self.admission = admission
        self.records = records
        self.queued_prompt_tokens = 0  # prompts waiting in the global queue
        # (predicted, actual) output tokens of completed requests, for predictor error.
        self.predicted_tokens: list[int] = []
        self.actual_tokens: list[int] = []
        for inst in self.instances:
            inst.on_finish = self._finished

    def submit(self, req: Request, now: float) -> None:
        """A request arrives at the cluster."""
        if self.predictor is not None:
            req.predicted_output_tokens = round(self.predictor.predict(req).mean_tokens)
        if self.admission is not None:
            reason = self.admission.reason(req, self.instances, self.queued_prompt_tokens)
            if reason is not None:
                self._reject(req, now, reason)
                return
        self.queued_prompt_tokens += req.prompt_tokens
        self.queue.push(req, now)
        self.dispatch(now)

    def _reject(self, req: Request, now: float, reason: str) -> None:
        if self.records is not None:
            nan = float("nan")
            self.records.add(
                req.id, req.tenant, None, Outcome.FAILED, req.arrival_s, nan, nan, now,
                req.prompt_tokens, 0, 0, 0, reason,
            )  # fmt: skip
        self.queue.on_finish(req, 0, now)

    def _finished(self, req: Request, output_tokens: int, now: float) -> None:
        self.queue.on_finish(req, output_tokens, now)
        if self.predictor is not None and output_tokens:
            if req.predicted_output_tokens is not None:
                self.predicted_tokens.append(req.predicted_output_tokens)
                self.actual_tokens.append(output_tokens)
            self.predictor.observe(req, output_tokens)

    def dispatch(self, now: float) -> None:
        """Move queued requests to instances with room, in the policy's order."""
        queue, cap = self.queue, self.max_engine_waiting
        instances = self.instances
        while len(queue):
            if len(instances) == 1:
                candidates = instances if instances[0].num_waiting < cap else []
            else:
                candidates = [i for i in instances if i.num_waiting < cap]
            if not candidates:
                return
            req = queue.pop(now)
            assert req is not None
            self.queued_prompt_tokens -= req.prompt_tokens
            pos = self.router.choose(req, candidates, now) if len(candidates) > 1 else 0
            inst = candidates[pos]
            inst.add(req, now)
            self.touched.append(inst)
