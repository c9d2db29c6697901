"""The dispatcher: the policy's queue in front of backends with bounded capacity.

A request is pushed into the policy when admitted. Whenever capacity may have
changed (a request arrived or ended, a backend came back, fresh engine
metrics), :meth:`Scheduler.dispatch` pops requests in the policy's order while
some backend has room for the head, asks the router which backend among those
with room, takes the capacity and resolves the request's ticket. All decisions
are the core's Policy and Router objects; this module only keeps counts.

A backend has room (:meth:`BackendState.has_room`) when it is healthy, has
fewer than ``max_concurrency`` requests in flight, the token window (prompt +
max_tokens in flight) allows the request, and, when its engine exposes
metrics, the engine's own queue of our requests is shorter than
``max_engine_waiting``. Keeping engine queues short is what makes the
gateway's order the one that counts (the same rule as the simulator's
``max_engine_waiting``). With several replicas sharing state
(:mod:`fairserve.gateway.shared`), it must also hold one of the backend's
``max_concurrency`` slots counted over the fleet (``slots``).
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fairserve.core.model import Request
from fairserve.core.policies.base import Policy
from fairserve.core.predict.latency import BatchLatencyModel
from fairserve.core.route.base import Router
from fairserve.gateway.backends.state import BackendState, Load
from fairserve.gateway.config import DispatchConfig
from fairserve.gateway.tenants import TenantState

if TYPE_CHECKING:
    from fairserve.gateway.shared import SharedState


def _tpot_model(path: str | None) -> BatchLatencyModel | None:
    """The latency model ``dispatch.slo_tpot_model`` names (version 2: it predicts TPOT)."""
    if path is None:
        return None
    from fairserve.gateway.components import GatewayError  # start-up reports it in one line
    from fairserve.store import load_latency_model

    try:
        model = load_latency_model(path)
    except ValueError as exc:
        raise GatewayError(f"dispatch.slo_tpot_model: {exc}") from None
    if not isinstance(model, BatchLatencyModel):
        raise GatewayError(
            f"dispatch.slo_tpot_model: {path} is a version-1 latency model, which predicts no "
            "TPOT; fit a version-2 one with `fairserve predictor latency --out FILE`"
        )
    return model


class TicketState(enum.Enum):
    """Where a ticket is."""

    QUEUED = "queued"
    ASSIGNED = "assigned"
    DROPPED = "dropped"


class QueueTimeout(Exception):
    """The request waited longer than its tenant's ``max_queue_wait_s``."""


class NoBackend(Exception):
    """Every backend is unhealthy: queued requests fail at once instead of waiting."""


class Ticket:
    """A request waiting for a backend; ``future`` resolves to the backend chosen."""

    __slots__ = ("exclude", "future", "load", "req", "state", "tenant", "timer")

    def __init__(self, req: Request, tenant: TenantState) -> None:
        self.req = req
        self.tenant = tenant
        self.load = Load(req, bool(tenant.core.slo.tpot_s))  # what it puts on its backend
        self.future: asyncio.Future[BackendState] = asyncio.get_running_loop().create_future()
        self.state = TicketState.QUEUED
        self.exclude: set[int] = set()
        self.timer: asyncio.TimerHandle | None = None


class Scheduler:
    """Policy queue + router + backend capacity; synchronous, driven by events."""

    def __init__(
        self,
        policy: Policy,
        router: Router,
        backends: Sequence[BackendState],
        clock: Callable[[], float],
        slots: SharedState | None = None,
        tenants: Sequence[TenantState] = (),
        config: DispatchConfig | None = None,
    ) -> None:
        self.policy = policy
        cfg = config if config is not None else DispatchConfig()
        # SLO-driven concurrency: the tenants whose TPOT objective holds batches down
        self.tpot_tenants = [t for t in tenants if t.core.slo.tpot_s]
        if cfg.slo_concurrency == "off":
            self.tpot_tenants = []
        self.slo_reserve_seqs = cfg.slo_reserve_seqs
        self.slo_hold_s = cfg.slo_hold_s
        # SLO-driven concurrency from a latency model's predicted TPOT (optional)
        self.tpot_model = _tpot_model(cfg.slo_tpot_model) if self.tpot_tenants else None
        # With several replicas: a backend's slots counted over the fleet (gateway.shared)
        self.slots = slots if slots is not None and slots.shared else None
        self.router = router
        self.backends = list(backends)
        self.clock = clock
        self.queued_prompt_tokens = 0  # prompts waiting in the policy (for SLO admission)
        self._queued: dict[int, Ticket] = {}  # in the policy, by request id
        self._objective_queued: dict[int, Ticket] = {}  # of which with a TPOT objective
        self._retry: deque[Ticket] = deque()  # failed upstream, served before the policy
        self._objective_s: float | None = None  # the TPOT objective of this dispatch pass

    def tpot_objective_s(self, now_s: float) -> float | None:
        """The tightest TPOT objective in force: of tenants with requests in the gateway,
        or whose last one ended within ``slo_hold_s`` (a tenant between two requests
        keeps its objective)."""
        tightest: float | None = None
        hold = self.slo_hold_s
        for tenant in self.tpot_tenants:
            if tenant.active or now_s - tenant.last_end_s <= hold:
                objective = tenant.core.slo.tpot_s
                if objective is not None and (tightest is None or objective < tightest):
                    tightest = objective
        return tightest

    @property
    def any_healthy(self) -> bool:
        """Whether some backend takes requests now."""
        return any(b.healthy for b in self.backends)

    @property
    def queued(self) -> int:
        """Requests waiting for a backend."""
        return len(self._queued) + len(self._retry)

    def submit(self, req: Request, tenant: TenantState, max_wait_s: float) -> Ticket:
        """Queue an admitted request; it may be dispatched before this returns."""
        ticket = Ticket(req, tenant)
        self._queued[req.id] = ticket
        if ticket.load.objective:
            self._objective_queued[req.id] = ticket
        tenant.queued += 1
        self.queued_prompt_tokens += req.prompt_tokens
        self.policy.push(req, self.clock())
        ticket.timer = asyncio.get_running_loop().call_later(max_wait_s, self._expire, ticket)
        self.dispatch()
        return ticket

    def resubmit(self, ticket: Ticket, failed: BackendState, max_wait_s: float) -> None:
        """After an upstream failure: wait for another backend, ahead of the policy's queue."""
        ticket.exclude.add(failed.index)
        if len(ticket.exclude) >= len(self.backends):
            ticket.exclude = {failed.index} if len(self.backends) > 1 else set()
        ticket.future = asyncio.get_running_loop().create_future()
        ticket.state = TicketState.QUEUED
        self._retry.append(ticket)
        ticket.timer = asyncio.get_running_loop().call_later(max_wait_s, self._expire, ticket)
        self.dispatch()

    def withdraw(self, ticket: Ticket) -> None:
        """Take a still-queued ticket out (its client left); no-op otherwise."""
        if ticket.state is not TicketState.QUEUED:
            return
        if self._queued.pop(ticket.req.id, None) is not None:
            self.policy.remove(ticket.req)
            self._dequeued(ticket)
        else:
            self._retry.remove(ticket)
        self._drop(ticket)

    def release(self, backend: BackendState, ticket: Ticket) -> None:
        """A request sent to ``backend`` ended: give its capacity back."""
        backend.give_back(ticket.load)
        if self.slots is not None:
            self.slots.give_slot(backend)
        self.dispatch()

    def dispatch(self) -> None:
        """Send queued requests to backends with room, in order (retries first).

        With every backend unhealthy, the queued requests fail at once
        (:class:`NoBackend`): waiting for their deadline would only hold the
        client's socket for an answer that cannot come.
        """
        if not self.any_healthy:
            self._fail_all()
            return
        now = self.clock()
        self._objective_s = self.tpot_objective_s(now) if self.tpot_tenants else None
        while self._retry:
            ticket = self._retry[0]
            candidates = [
                b for b in self.backends if b.index not in ticket.exclude and self._room(b, ticket)
            ]
            if not candidates:
                break
            self._retry.popleft()
            self._assign(ticket, candidates, now)
        policy = self.policy
        while len(policy):
            head = policy.peek(now)
            assert head is not None
            ticket = self._queued[head.id]
            candidates = [b for b in self.backends if self._room(b, ticket)]
            if not candidates:
                if self._objective_s is not None and not ticket.load.objective:
                    self._past_the_head(now)
                return
            popped = policy.pop(now)
            assert popped is head, "policy.pop disagrees with policy.peek"
            del self._queued[head.id]
            self._dequeued(ticket)
            self._assign(ticket, candidates, now)

    def _past_the_head(self, now: float) -> None:
        """Requests with a TPOT objective take their reserved seats past a head without
        one, oldest first (the head may be held only to leave those seats free).

        Each leaves the policy's queue as a cancelled request would (``remove``):
        a fair policy charges its service as it is reported, not at dispatch.
        """
        for ticket in list(self._objective_queued.values()):
            candidates = [b for b in self.backends if self._room(b, ticket)]
            if not candidates:
                return  # the seats are taken (the next ones would find the same)
            self.policy.remove(ticket.req)
            del self._queued[ticket.req.id]
            self._dequeued(ticket)
            self._assign(ticket, candidates, now)

    def _room(self, backend: BackendState, ticket: Ticket) -> bool:
        if not backend.has_room(ticket.load.tokens):
            return False
        # A request without an objective leaves room for one that has one.
        if self._objective_s is not None and not backend.tpot_allows(
            self.slo_reserve_seqs, ticket.load.objective, self._objective_s, self.tpot_model
        ):
            return False
        return self.slots is None or self.slots.has_slot(backend)

    def _assign(self, ticket: Ticket, candidates: list[BackendState], now: float) -> None:
        if ticket.future.done():  # its waiter was cancelled a moment ago
            self._drop(ticket)
            return
        pos = self.router.choose(ticket.req, candidates, now) if len(candidates) > 1 else 0
        backend = candidates[pos]
        backend.take(ticket.load)
        if self.slots is not None:
            self.slots.take_slot(backend)
        ticket.state = TicketState.ASSIGNED
        if ticket.timer is not None:
            ticket.timer.cancel()
            ticket.timer = None
        ticket.future.set_result(backend)

    def _drop(self, ticket: Ticket) -> None:
        ticket.state = TicketState.DROPPED
        if ticket.timer is not None:
            ticket.timer.cancel()
            ticket.timer = None

    def _expire(self, ticket: Ticket) -> None:
        if ticket.state is not TicketState.QUEUED:
            return
        self.withdraw(ticket)
        if not ticket.future.done():
            ticket.future.set_exception(QueueTimeout())

    def _fail_all(self) -> None:
        for ticket in [*self._retry, *self._queued.values()]:
            self.withdraw(ticket)
            if not ticket.future.done():
                ticket.future.set_exception(NoBackend())

    def _dequeued(self, ticket: Ticket) -> None:
        self._objective_queued.pop(ticket.req.id, None)
        ticket.tenant.queued -= 1
        self.queued_prompt_tokens -= ticket.req.prompt_tokens
        assert ticket.tenant.queued >= 0 and self.queued_prompt_tokens >= 0
