"""Building blocks shared by the policies: a keyed heap of requests, tenant
weights, a tenant-level min-heap, and parameter validation.

Nothing here reads a clock; nothing scans a whole queue on a pop.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from fairserve.core.model import Request, Tenant
from fairserve.core.policies.base import tenant_of

# ---------------------------------------------------------------- parameters


def check_number(name: str, value: object, *, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` as a float, or ValueError naming ``name`` if it is not a number in range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if strict and not number > minimum:
        raise ValueError(f"{name} must be > {minimum:g}, got {value!r}")
    if not strict and not number >= minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")
    return number


def check_tokens(name: str, value: object) -> int:
    """A positive whole number of tokens, or ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    """One of ``allowed``, or ValueError naming ``name`` and the allowed values."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return str(value)


class Weights:
    """Tenant weights with a per-name cache (``tenant_of`` builds a Tenant per call)."""

    __slots__ = ("_tenants", "_weights")

    def __init__(self, tenants: Mapping[str, Tenant] | None) -> None:
        self._tenants: Mapping[str, Tenant] = tenants or {}
        self._weights: dict[str, float] = {}

    def tenant(self, name: str) -> Tenant:
        """The config of tenant ``name`` (defaults when not configured)."""
        return tenant_of(self._tenants, name)

    def __call__(self, name: str) -> float:
        weight = self._weights.get(name)
        if weight is None:
            weight = self._weights[name] = tenant_of(self._tenants, name).weight
        return weight


# ---------------------------------------------------------------- request heap


class KeyedQueue:
    """Requests in ascending ``(key, arrival_s, push order)``: a heap with lazy removal.

    ``push``/``pop`` are O(log n); ``remove`` is O(1) (the heap entry is left
    behind and skipped later); ``peek`` is amortised O(1). Dead entries are
    dropped in one O(n) rebuild once they outnumber the live ones, so memory
    stays O(live) and the rebuild costs O(1) amortised per removal.
    """

    __slots__ = ("_heap", "_live", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, float, int, Request]] = []
        # req -> the push number of its live entry; an entry whose number
        # differs (removed, or re-pushed since) is dead.
        self._live: dict[Request, int] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, req: object) -> bool:
        return req in self._live

    def push(self, req: Request, key: float) -> None:
        """Add ``req`` under ``key``; pushing a request already queued is a bug."""
        if req in self._live:
            raise ValueError(f"request {req.id} is already queued")
        seq = next(self._seq)
        self._live[req] = seq
        heapq.heappush(self._heap, (key, req.arrival_s, seq, req))

    def _top(self) -> tuple[float, float, int, Request] | None:
        heap, live = self._heap, self._live
        while heap:
            entry = heap[0]
            if live.get(entry[3]) == entry[2]:
                return entry
            heapq.heappop(heap)
        return None

    def peek(self) -> Request | None:
        """The request with the smallest key."""
        entry = self._top()
        return None if entry is None else entry[3]

    def pop(self) -> Request | None:
        """Remove and return the request with the smallest key."""
        entry = self._top()
        if entry is None:
            return None
        heapq.heappop(self._heap)
        del self._live[entry[3]]
        return entry[3]

    def remove(self, req: Request) -> bool:
        """Forget ``req``; False if it was not queued."""
        if self._live.pop(req, None) is None:
            return False
        if len(self._heap) > 2 * len(self._live) + 64:
            live = self._live
            self._heap = [e for e in self._heap if live.get(e[3]) == e[2]]
            heapq.heapify(self._heap)
        return True


# ---------------------------------------------------------------- requeued requests


class Requeued:
    """Preempted requests put back: served before any request still waiting, the
    most recently requeued first.

    That is where vLLM's recompute preemption puts a victim (the front of its
    waiting queue). A requeued request was dispatched once already, so serving
    it again charges, tags or counts nothing in the policy that holds it.
    """

    __slots__ = ("_reqs",)

    def __init__(self) -> None:
        self._reqs: deque[Request] = deque()

    def __len__(self) -> int:
        return len(self._reqs)

    def put(self, req: Request) -> None:
        """Put ``req`` at the front; requeueing a request already requeued is a bug."""
        if req in self._reqs:
            raise ValueError(f"request {req.id} is already queued")
        self._reqs.appendleft(req)

    def peek(self) -> Request | None:
        """The request served next, or None."""
        return self._reqs[0] if self._reqs else None

    def pop(self) -> Request | None:
        """Remove and return the request served next, or None."""
        return self._reqs.popleft() if self._reqs else None

    def remove(self, req: Request) -> bool:
        """Forget ``req``; False if it was not requeued."""
        try:
            self._reqs.remove(req)
        except ValueError:
            return False
        return True


# ---------------------------------------------------------------- tenant heap


class TenantHeap:
    """Min-heap of backlogged tenants by a mutable score, ties by first appearance.

    ``set`` pushes a fresh entry and leaves the old one to be skipped (an entry
    is live while its tenant is backlogged and its score is the current one),
    so a score change is O(log T) and ``min`` amortised O(1); the heap is
    rebuilt from the backlogged tenants once stale entries dominate.
    """

    __slots__ = ("_heap", "_rank", "active", "score")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._rank: dict[str, int] = {}
        self.score: dict[str, float] = {}
        self.active: set[str] = set()

    def set(self, tenant: str, score: float) -> None:
        """Record ``tenant``'s score (and re-rank it if it is backlogged)."""
        self.score[tenant] = score
        if tenant in self.active:
            self._push(tenant, score)

    def activate(self, tenant: str) -> None:
        """``tenant`` became backlogged."""
        self.active.add(tenant)
        self._push(tenant, self.score.setdefault(tenant, 0.0))

    def deactivate(self, tenant: str) -> None:
        """``tenant`` has nothing queued any more."""
        self.active.discard(tenant)

    def _push(self, tenant: str, score: float) -> None:
        rank = self._rank.setdefault(tenant, len(self._rank))
        heapq.heappush(self._heap, (score, rank, tenant))
        if len(self._heap) > 2 * len(self.active) + 64:
            self._heap = [(self.score[t], self._rank[t], t) for t in self.active]
            heapq.heapify(self._heap)

    def min(self) -> str | None:
        """The backlogged tenant with the lowest score, or None when none is backlogged."""
        heap, active, score = self._heap, self.active, self.score
        while heap:
            value, _, tenant = heap[0]
            if tenant in active and score[tenant] == value:
                return tenant
            heapq.heappop(heap)
        return None


# ---------------------------------------------------------------- victims


def last_max(running: Sequence[Request], key: Callable[[Request], tuple[float, ...]]) -> Request:
    """The running request with the largest ``(key, arrival_s)``; the latest admitted on ties.

    Preempting the least urgent, most recently arrived request is vLLM's
    priority rule; ``running`` is in admission order, so the last of equals
    is the one with the least work to lose.
    """
    if not running:
        raise ValueError("pick_victim needs at least one running request")
    best_index = 0
    best = (*key(running[0]), running[0].arrival_s)
    for index in range(1, len(running)):
        req = running[index]
        candidate = (*key(req), req.arrival_s)
        if candidate >= best:
            best, best_index = candidate, index
    return running[best_index]
