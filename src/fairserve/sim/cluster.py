"""A cluster: engine instances behind one global queue and a router."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from fairserve.core.model import Outcome, Request
from fairserve.core.policies.base import Policy
from fairserve.core.predict.base import Predictor
from fairserve.core.route.admission import Admission
from fairserve.core.route.base import BatchView, InstanceView, PrefixView, Router
from fairserve.metrics.records import RequestRecords
from fairserve.sim.cost import CostModel


class Instance(InstanceView, BatchView, PrefixView, Protocol):
    """What the cluster and the event loop need of an engine (routers see it as a view:
    its load, its batch, and the prefix it caches by tier)."""

    on_finish: Callable[[Request, int, float], None] | None  # set by the cluster

    @property
    def cost(self) -> CostModel:
        """What its steps cost (SLO-driven concurrency predicts with it)."""

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

    **SLO-driven concurrency** (``tpot_s``: tenant -> TPOT objective): a
    continuous-batching engine absorbs load into its batch, where every
    running request's TPOT grows with the batch and no queue order reaches.
    So an instance gets another request only while the decode step of its
    batch with one more sequence, predicted by its cost model over the KV its
    requests will read, stays within the tightest TPOT objective among the
    requests in the system (queued here, at an engine or running, and those
    that ended within ``slo_hold_s``, so a tenant between two requests keeps
    its objective). Requests of tenants without an objective leave
    ``slo_reserve_seqs`` sequences of that batch free, so a request with one
    is admitted on arrival rather than after a long request ends: when the
    policy's head is held only to leave those seats free, queued requests
    with an objective take them past it, oldest first. The excess
    waits in the global queue, in the policy's order. An idle instance always
    gets one. Throughput is traded for the objective: ``slo_held`` counts the
    dispatches held back for it.
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
        tpot_s: Mapping[str, float] | None = None,
        slo_hold_s: float = 10.0,
        slo_reserve_seqs: int = 4,
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
        self.tpot_s: dict[str, float] = dict(tpot_s or {})
        self.slo_hold_s = slo_hold_s
        self.slo_reserve_seqs = slo_reserve_seqs
        self._tpot_live: dict[float, int] = {}  # objective -> requests in the system
        self._tpot_ended: dict[float, float] = {}  # objective -> when its last request ended
        self._objective_queued: dict[Request, None] = {}  # queued with an objective, in order
        self.slo_held = 0  # dispatches held back to meet a TPOT objective

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
        objective = self.tpot_s.get(req.tenant)
        if objective is not None:
            self._tpot_live[objective] = self._tpot_live.get(objective, 0) + 1
            self._objective_queued[req] = None
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
        objective = self.tpot_s.get(req.tenant)
        if objective is not None:
            left = self._tpot_live[objective] - 1
            if left:
                self._tpot_live[objective] = left
            else:
                del self._tpot_live[objective]
            self._tpot_ended[objective] = now
        self.queue.on_finish(req, output_tokens, now)
        if self.predictor is not None and output_tokens:
            if req.predicted_output_tokens is not None:
                self.predicted_tokens.append(req.predicted_output_tokens)
                self.actual_tokens.append(output_tokens)
            self.predictor.observe(req, output_tokens)

    def tightest_tpot_s(self, now: float) -> float | None:
        """The tightest TPOT objective in force: of requests in the system, or ended lately."""
        live = min(self._tpot_live) if self._tpot_live else None
        for objective, ended in list(self._tpot_ended.items()):
            if now - ended > self.slo_hold_s:
                del self._tpot_ended[objective]
            elif live is None or objective < live:
                live = objective
        return live

    def _meets_tpot(self, inst: Instance, tpot_s: float, reserve: int) -> bool:
        """Whether ``inst`` can take one more request, ``reserve`` more after it, within
        the TPOT objective."""
        held = inst.num_running + inst.num_waiting
        if held == 0:
            return True
        kv = inst.decode_context_tokens + inst.queued_prefill_tokens
        return inst.cost.decode_line(held + 1 + reserve, kv).step_s(0) <= tpot_s

    def dispatch(self, now: float) -> None:
        """Move queued requests to instances with room, in the policy's order."""
        queue, cap = self.queue, self.max_engine_waiting
        instances = self.instances
        while len(queue):
            if len(instances) == 1:
                candidates = instances if instances[0].num_waiting < cap else []
            else:
                candidates = [i for i in instances if i.num_waiting < cap]
            tpot = self.tightest_tpot_s(now) if self._tpot_live or self._tpot_ended else None
            if tpot is not None and candidates:
                head = queue.peek(now)
                assert head is not None
                # Slots kept free for requests with an objective: one arriving finds
                # room at once instead of waiting for a long request to end.
                reserve = 0 if head.tenant in self.tpot_s else self.slo_reserve_seqs
                room = [i for i in candidates if self._meets_tpot(i, tpot, reserve)]
                if len(room) < len(candidates):
                    self.slo_held += 1
                if not room and reserve:
                    self._past_the_head(candidates, tpot, now)
                candidates = room
            if not candidates:
                return
            req = queue.pop(now)
            assert req is not None
            self._send(req, candidates, now)

    def _past_the_head(self, candidates: list[Instance], tpot_s: float, now: float) -> None:
        """Queued requests with an objective take the seats a head without one leaves
        free, oldest first; each leaves the policy's queue as a cancelled one would
        (a fair policy charges its service as the engine reports it)."""
        for req in list(self._objective_queued):
            room = [i for i in candidates if self._meets_tpot(i, tpot_s, 0)]
            if not room:
                return
            removed = self.queue.remove(req)
            assert removed, "a request with an objective left the queue unseen"
            self._send(req, room, now)

    def _send(self, req: Request, candidates: list[Instance], now: float) -> None:
        self._objective_queued.pop(req, None)
        self.queued_prompt_tokens -= req.prompt_tokens
        pos = self.router.choose(req, candidates, now) if len(candidates) > 1 else 0
        inst = candidates[pos]
        inst.add(req, now)
        self.touched.append(inst)
