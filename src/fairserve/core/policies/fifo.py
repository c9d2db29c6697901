"""First come, first served: vLLM's default order."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from fairserve.core.model import Request, Tenant
from fairserve.core.policies.base import POLICIES


@POLICIES.register("fifo")
class FifoPolicy:
    """Serve in arrival order; a preempted request goes back to the front (as in
    vLLM's FCFS scheduler); preempt the most recently admitted request."""

    charges = False

    def __init__(self, tenants: Mapping[str, Tenant] | None = None) -> None:
        self._queue: deque[Request] = deque()
        self._queued: set[Request] = set()  # to refuse a double push in O(1)

    def push(self, req: Request, now: float) -> None:
        """Append at the tail."""
        queued = self._queued
        if req in queued:
            raise ValueError(f"request {req.id} is already queued")
        queued.add(req)
        self._queue.append(req)

    def requeue(self, req: Request, now: float) -> None:
        """Put a preempted request at the head."""
        if req in self._queued:
            raise ValueError(f"request {req.id} is already queued")
        self._queued.add(req)
        self._queue.appendleft(req)

    def pop(self, now: float) -> Request | None:
        """Take the head."""
        if not self._queue:
            return None
        req = self._queue.popleft()
        self._queued.discard(req)
        return req

    def peek(self, now: float) -> Request | None:
        """The head."""
        return self._queue[0] if self._queue else None

    def remove(self, req: Request) -> bool:
        """Drop ``req`` from the queue (linear; cancellation is rare)."""
        if req not in self._queued:
            return False
        self._queue.remove(req)
        self._queued.discard(req)
        return True

    def __len__(self) -> int:
        return len(self._queue)

    def on_served(self, tenant: str, prefill_tokens: int, decode_tokens: int, now: float) -> None:
        """FIFO charges nothing."""

    def on_finish(self, req: Request, output_tokens: int, now: float) -> None:
        """FIFO keeps no per-request state."""

    def pick_victim(self, running: Sequence[Request], now: float) -> Request:
        """The most recently admitted request, as vLLM does."""
        if not running:
            raise ValueError("pick_victim needs at least one running request")
        return running[-1]
