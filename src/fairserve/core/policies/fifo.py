"""First come, first served: vLLM's default order."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from fairserve.core.model import Request, Tenant
from fairserve.core.policies.base import POLICIES


@POLICIES.register("fifo")
class FifoPolicy:
    """Serve in arrival order; preempt the most recently admitted request."""

    charges = False

    def __init__(self, tenants: Mapping[str, Tenant] | None = None) -> None:
        self._queue: deque[Request] = deque()

    def push(self, req: Request, now: float) -> None:
        """Append at the tail."""
        self._queue.append(req)

    def pop(self, now: float) -> Request | None:
        """Take the head."""
        return self._queue.popleft() if self._queue else None

    def peek(self, now: float) -> Request | None:
        """The head."""
        return self._queue[0] if self._queue else None

    def remove(self, req: Request) -> bool:
        """Drop ``req`` from the queue (linear; cancellation is rare)."""
        try:
            self._queue.remove(req)
        except ValueError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._queue)

    def on_served(self, tenant: str, prefill_tokens: int, decode_tokens: int, now: float) -> None:
        """FIFO charges nothing."""

    def on_finish(self, req: Request, output_tokens: int, now: float) -> None:
        """FIFO keeps no per-request state."""

    def pick_victim(self, running: Sequence[Request], now: float) -> Request:
        """The most recently admitted request, as vLLM does."""
        return running[-1]
