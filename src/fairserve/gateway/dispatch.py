"""The dispatcher: the policy's queue in front of backends with bounded capacity.

A request is pushed into the policy when admitted. Whenever capacity may have
changed (a request arrived or ended, a backend came back, fresh engine
metrics), :meth:`Scheduler.dispatch` pops requests in the policy's order while
some backend has room for the head, asks the router which backend among those
with room, takes the capacity and resolves the request's ticket. All decisions
are the core's Policy and Router objects; this module only keeps counts.

A backend has room when it is healthy, has fewer than ``max_concurrency``
requests in flight, the token window (prompt + max_tokens in flight) allows
the request, and, when its engine exposes metrics, the engine's own queue of
our requests is shorter than ``max_engine_waiting``. That queue is estimated
as ``in_flight - running_cap``, where ``running_cap`` is the largest batch the
engine reported while it also reported waiting requests (its real batch
limit), or as ``min(waiting, in_flight)`` before the engine was ever seen full.
Keeping engine queues short is what makes the gateway's order the one that
counts (the same rule as the simulator's ``max_engine_waiting``).
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from fairserve.core.model import Request
from fairserve.core.policies.base import Policy
from fairserve.core.route.base import Router
from fairserve.gateway.config import BackendConfig
from fairserve.gateway.tenants import TenantState


class BackendState:
    """One upstream's live state; also the router's ``InstanceView``."""

    def __init__(self, index: int, config: BackendConfig) -> None:
        self.index = index
        self.config = config
        self.url = config.url.rstrip("/")
        self.name = config.name or self.url
        self.healthy = True
        self.inflight = 0
        self.inflight_tokens = 0
        self.inflight_predicted_tokens = 0
        self.engine_running: int | None = None
        self.engine_waiting: int | None = None
        self.running_cap: int | None = None
        self.failures = 0

    @property
    def num_waiting(self) -> int:
        """Our requests estimated to wait in the engine's own queue."""
        if self.running_cap is not None:
            return max(0, self.inflight - self.running_cap)
        if self.engine_waiting is not None:
            return min(self.engine_waiting, self.inflight)
        return 0

    @property
    def num_running(self) -> int:
        """Requests in the engine's batch (in flight when the engine does not say)."""
        return self.inflight - self.num_waiting

    @property
    def outstanding_tokens(self) -> int:
        """Prompt + max_tokens of the requests in flight."""
        return self.inflight_tokens

    @property
    def predicted_tokens(self) -> int:
        """Prompt + predicted output tokens of the requests in flight."""
        return self.inflight_predicted_tokens

    def observe_engine(self, running: int, waiting: int) -> None:
        """Fresh figures from the engine's /metrics."""
        self.engine_running = running
        self.engine_waiting = waiting
        if waiting > 0 and running > 0:
            self.running_cap = max(self.running_cap or 0, running)

    def has_room(self, tokens: int) -> bool:
        """Whether a request of ``tokens`` (prompt + max_tokens) may be sent now."""
        cfg = self.config
        if not self.healthy or self.inflight >= cfg.max_concurrency:
            return False
        window = cfg.max_tokens_in_flight
        if window is not None and self.inflight and self.inflight_tokens + tokens > window:
            return False
        return self.num_waiting < cfg.max_engine_waiting


class TicketState(enum.Enum):
    """Where a ticket is."""

    QUEUED = "queued"
    ASSIGNED = "assigned"
    DROPPED = "dropped"


class QueueTimeout(Exception):
    """The request waited longer than its tenant's ``max_queue_wait_s``."""


class Ticket:
    """A request waiting for a backend; ``future`` resolves to the backend chosen."""

    __slots__ = (
        "exclude",
        "future",
        "predicted_tokens",
        "req",
        "state",
        "tenant",
        "timer",
        "tokens",
    )

    def __init__(self, req: Request, tenant: TenantState) -> None:
        self.req = req
        self.tenant = tenant
        self.tokens = req.prompt_tokens + req.output_tokens
        predicted = req.predicted_output_tokens
        self.predicted_tokens = req.prompt_tokens + (
            predicted if predicted is not None else req.output_tokens
        )
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
        on_queue_change: Callable[[TenantState], None] | None = None,
    ) -> None:
        self.policy = policy
        self.router = router
        self.backends = list(backends)
        self.clock = clock
        self.on_queue_change = on_queue_change
        self._queued: dict[int, Ticket] = {}  # in the policy, by request id
        self._retry: deque[Ticket] = deque()  # failed upstream, served before the policy

    @property
    def queued(self) -> int:
        """Requests waiting for a backend."""
        return len(self._queued) + len(self._retry)

    def submit(self, req: Request, tenant: TenantState, max_wait_s: float) -> Ticket:
        """Queue an admitted request; it may be dispatched before this returns."""
        ticket = Ticket(req, tenant)
        self._queued[req.id] = ticket
        tenant.queued += 1
        self.policy.push(req, self.clock())
        self._changed(tenant)
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
            ticket.tenant.queued -= 1
            self._changed(ticket.tenant)
        else:
            self._retry.remove(ticket)
        self._drop(ticket)

    def release(self, backend: BackendState, ticket: Ticket) -> None:
        """A request sent to ``backend`` ended: give its capacity back."""
        backend.inflight -= 1
        backend.inflight_tokens -= ticket.tokens
        backend.inflight_predicted_tokens -= ticket.predicted_tokens
        assert backend.inflight >= 0 and backend.inflight_tokens >= 0, "capacity released twice"
        self.dispatch()

    def dispatch(self) -> None:
        """Send queued requests to backends with room, in order (retries first)."""
        now = self.clock()
        while self._retry:
            ticket = self._retry[0]
            candidates = [
                b
                for b in self.backends
                if b.index not in ticket.exclude and b.has_room(ticket.tokens)
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
            candidates = [b for b in self.backends if b.has_room(ticket.tokens)]
            if not candidates:
                return
            popped = policy.pop(now)
            assert popped is head, "policy.pop disagrees with policy.peek"
            del self._queued[head.id]
            ticket.tenant.queued -= 1
            self._changed(ticket.tenant)
            self._assign(ticket, candidates, now)

    def _assign(self, ticket: Ticket, candidates: list[BackendState], now: float) -> None:
        if ticket.future.done():  # its waiter was cancelled a moment ago
            self._drop(ticket)
            return
        pos = self.router.choose(ticket.req, candidates, now) if len(candidates) > 1 else 0
        backend = candidates[pos]
        backend.inflight += 1
        backend.inflight_tokens += ticket.tokens
        backend.inflight_predicted_tokens += ticket.predicted_tokens
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

    def _changed(self, tenant: TenantState) -> None:
        if self.on_queue_change is not None:
            self.on_queue_change(tenant)

    def queued_by_tenant(self) -> Mapping[str, int]:
        """Waiting requests per tenant (diagnostics)."""
        counts: dict[str, int] = {}
        for ticket in self._queued.values():
            counts[ticket.tenant.name] = counts.get(ticket.tenant.name, 0) + 1
        return counts
