"""Policies that order one queue by a time-invariant key: priority, aging, SJF,
EDF and the clairvoyant oracles.

Each request's key is fixed when it is pushed, so one heap serves them all:
push and pop are O(log n), ``remove`` O(1) amortised (lazy deletion), ``peek``
amortised O(1), ``pick_victim`` O(r) over the r running requests. Ties are
served in arrival order, then push order. The victim is always the running
request with the largest key (the one the policy would serve last), the most
recently arrived among equals.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from fairserve.core.model import Request, Tenant
from fairserve.core.policies._common import (
    KeyedQueue,
    Requeued,
    Weights,
    check_choice,
    check_number,
    check_tokens,
    last_max,
)
from fairserve.core.policies.base import POLICIES

LEVELS = ("request", "tenant")


class KeyedPolicy:
    """Base of the single-heap policies: subclasses define ``key(req)``."""

    charges = False

    def __init__(self, tenants: Mapping[str, Tenant] | None = None) -> None:
        self._tenants = Weights(tenants)
        self._queue = KeyedQueue()
        self._requeued = Requeued()

    def key(self, req: Request) -> float:
        """The sort key of ``req``: smaller is served first. Must not depend on time."""
        raise NotImplementedError

    def push(self, req: Request, now: float) -> None:
        """Queue ``req`` under its key: O(log n)."""
        self._queue.push(req, self.key(req))

    def requeue(self, req: Request, now: float) -> None:
        """Serve a preempted request before the queue (see ``Requeued``)."""
        if req in self._queue:
            raise ValueError(f"request {req.id} is already queued")
        self._requeued.put(req)

    def pop(self, now: float) -> Request | None:
        """The request with the smallest key: O(log n)."""
        if self._requeued:
            return self._requeued.pop()
        return self._queue.pop()

    def peek(self, now: float) -> Request | None:
        """What ``pop`` would return: amortised O(1)."""
        if self._requeued:
            return self._requeued.peek()
        return self._queue.peek()

    def remove(self, req: Request) -> bool:
        """Cancel a queued request: O(1) amortised."""
        return self._queue.remove(req) or self._requeued.remove(req)

    def __len__(self) -> int:
        return len(self._queue) + len(self._requeued)

    def on_served(self, tenant: str, prefill_tokens: int, decode_tokens: int, now: float) -> None:
        """These policies charge nothing (``charges`` is False)."""

    def on_finish(self, req: Request, output_tokens: int, now: float) -> None:
        """These policies keep no per-request state."""

    def pick_victim(self, running: Sequence[Request], now: float) -> Request:
        """The running request with the largest key, the most recently arrived on ties."""
        return last_max(running, lambda req: (self.key(req),))


@POLICIES.register("priority")
class PriorityPolicy(KeyedPolicy):
    """Strict priority (DriftSched 2026; vLLM's ``priority`` scheduling policy).

    Serves the most urgent level first (lower is more urgent), FIFO within a
    level; preempts the least urgent, most recently arrived running request.

    Parameters: ``level`` — where the level comes from: ``"request"``
    (``Request.priority``, default) or ``"tenant"`` (``Tenant.priority`` of
    the request's tenant).

    When to use: a few classes whose order must never be inverted (interactive
    before batch). Low levels can starve under sustained load; use ``aging``
    if they must not. Push/pop O(log n).
    """

    def __init__(
        self, tenants: Mapping[str, Tenant] | None = None, *, level: str = "request"
    ) -> None:
        super().__init__(tenants)
        self.level = check_choice("level", level, LEVELS)

    def key(self, req: Request) -> float:
        """The priority level."""
        if self.level == "tenant":
            return float(self._tenants.tenant(req.tenant).priority)
        return float(req.priority)


@POLICIES.register("aging")
class AgingPolicy(PriorityPolicy):
    """Priority with aging (DriftSched 2026): waiting makes a request more urgent.

    The effective level of a request at time ``t`` is
    ``level - rate_per_s * (t - arrival_s)``, and the lowest effective level is
    served. Every queued request ages at the same rate, so the ``rate_per_s*t``
    term is common to all of them and the order never changes with time: it
    is the order of ``level + rate_per_s * arrival_s``, a key fixed at push.
    That is why a pop does not rescan the queue. A request of level ``k`` that
    has waited ``k / rate_per_s`` seconds longer than a level-0 request is
    served before it.

    Parameters: ``rate_per_s`` (default 0.1: one level per 10 s of waiting;
    0 is strict priority, a very large rate is FIFO), ``level`` as in
    ``priority``.

    When to use: priority classes where the low ones must still make
    progress: a low request waits at most (level gap) / ``rate_per_s`` behind
    later urgent ones. Push/pop O(log n).
    """

    def __init__(
        self,
        tenants: Mapping[str, Tenant] | None = None,
        *,
        rate_per_s: float = 0.1,
        level: str = "request",
    ) -> None:
        super().__init__(tenants, level=level)
        self.rate_per_s = check_number("rate_per_s", rate_per_s)

    def key(self, req: Request) -> float:
        """``level + rate_per_s * arrival_s``: the aged order, independent of ``now``."""
        return super().key(req) + self.rate_per_s * req.arrival_s


@POLICIES.register("sjf")
class SjfPolicy(KeyedPolicy):
    """Shortest job first on predicted work, with a starvation bound (DriftSched 2026).

    Job size = ``predicted_output_tokens`` (``default_output_tokens`` when no
    predictor filled it) ``+ prompt_weight * prompt_tokens``. Plain SJF lets a
    long job wait for ever behind a stream of short ones (its tail latency
    goes the wrong way), so waiting is bounded two ways:

    - **Wait cap** (``max_wait_s``, default 30 s): a request that has waited
      ``max_wait_s`` since its arrival is served before any other, oldest
      first. It bounds the wait itself (up to the time to drain the requests
      already overdue) and turns SJF into FIFO in overload, where SJF's tail
      costs most. ``max_wait_s=null`` is plain SJF.
    - **Aging on predicted work** (``aging_tokens_per_s``, default 0: off): a
      request's effective size after waiting ``w`` seconds is ``size -
      aging_tokens_per_s * w``. All queued requests age at the same rate, so
      the order is that of the time-invariant key ``size +
      aging_tokens_per_s * arrival_s``: no rescan on pop. A request of size
      ``s`` can only be overtaken by requests arriving less than ``s /
      aging_tokens_per_s`` seconds after it.

    The victim is the most recently admitted running request, as in vLLM: it
    has the least computed work to lose, and preempting the longest job
    instead would starve long jobs again, one recomputation at a time.

    Parameters: ``default_output_tokens`` (256), ``prompt_weight`` (0.0),
    ``max_wait_s`` (30.0), ``aging_tokens_per_s`` (0.0).

    When to use: cutting median latency when a predictor ranks lengths well,
    without giving up the tail. Push/pop O(log n), amortised.
    """

    def __init__(
        self,
        tenants: Mapping[str, Tenant] | None = None,
        *,
        default_output_tokens: int = 256,
        prompt_weight: float = 0.0,
        max_wait_s: float | None = 30.0,
        aging_tokens_per_s: float = 0.0,
    ) -> None:
        super().__init__(tenants)
        self.default_output_tokens = check_tokens("default_output_tokens", default_output_tokens)
        self.prompt_weight = check_number("prompt_weight", prompt_weight)
        self.aging_tokens_per_s = check_number("aging_tokens_per_s", aging_tokens_per_s)
        self.max_wait_s = (
            None if max_wait_s is None else check_number("max_wait_s", max_wait_s, strict=True)
        )
        # Arrival order, for the wait cap; entries no longer queued are skipped lazily.
        self._oldest: deque[Request] = deque()

    def size(self, req: Request) -> float:
        """The predicted job size in tokens (before aging)."""
        predicted = req.predicted_output_tokens
        output = self.default_output_tokens if predicted is None else predicted
        return output + self.prompt_weight * req.prompt_tokens

    def key(self, req: Request) -> float:
        """The aged size: ``size + aging_tokens_per_s * arrival_s``."""
        return self.size(req) + self.aging_tokens_per_s * req.arrival_s

    def push(self, req: Request, now: float) -> None:
        """Queue ``req`` under its aged key: O(log n)."""
        super().push(req, now)
        if self.max_wait_s is not None:
            self._oldest.append(req)

    def _overdue(self, now: float) -> Request | None:
        """The oldest queued request if it has waited ``max_wait_s``, else None."""
        if self.max_wait_s is None:
            return None
        oldest, queue = self._oldest, self._queue
        while oldest and oldest[0] not in queue:
            oldest.popleft()
        if oldest and now - oldest[0].arrival_s >= self.max_wait_s:
            return oldest[0]
        return None

    def pop(self, now: float) -> Request | None:
        """The overdue request if any, else the smallest aged key: O(log n)."""
        if self._requeued:
            return self._requeued.pop()
        overdue = self._overdue(now)
        if overdue is not None:
            self._oldest.popleft()
            self._queue.remove(overdue)
            return overdue
        return self._queue.pop()

    def peek(self, now: float) -> Request | None:
        """What ``pop`` would return."""
        if self._requeued:
            return self._requeued.peek()
        overdue = self._overdue(now)
        return overdue if overdue is not None else self._queue.peek()

    def pick_victim(self, running: Sequence[Request], now: float) -> Request:
        """The most recently admitted running request (the least work lost)."""
        if not running:
            raise ValueError("pick_victim needs at least one running request")
        return running[-1]


@POLICIES.register("edf")
class EdfPolicy(KeyedPolicy):
    """Earliest deadline first, deadlines from the tenants' SLOs.

    Deadline = ``arrival_s`` + the tenant's ``slo.e2e_s`` if set, else its
    ``slo.ttft_s``, else ``default_horizon_s``. The victim is the running
    request with the latest deadline (the most slack).

    Parameters: ``default_horizon_s`` (60.0) for tenants without an SLO.

    When to use: tenants with different latency objectives, load mostly
    below capacity (EDF meets every deadline that any order could when the
    load is feasible, and degrades badly in overload). Push/pop O(log n).
    """

    def __init__(
        self, tenants: Mapping[str, Tenant] | None = None, *, default_horizon_s: float = 60.0
    ) -> None:
        super().__init__(tenants)
        self.default_horizon_s = check_number("default_horizon_s", default_horizon_s, strict=True)
        self._horizon: dict[str, float] = {}

    def horizon_s(self, tenant: str) -> float:
        """How long after arrival a request of ``tenant`` is due."""
        horizon = self._horizon.get(tenant)
        if horizon is None:
            slo = self._tenants.tenant(tenant).slo
            horizon = slo.e2e_s or slo.ttft_s or self.default_horizon_s
            self._horizon[tenant] = horizon
        return horizon

    def key(self, req: Request) -> float:
        """The deadline."""
        return req.arrival_s + self.horizon_s(req.tenant)


@POLICIES.register("oracle-sjf")
class OracleSjfPolicy(KeyedPolicy):
    """Clairvoyant SJF on the true ``output_tokens``: the bound SJF aims for.

    Like ``sjf`` with a perfect predictor (size = ``output_tokens +
    prompt_weight * prompt_tokens``). Only the simulator knows true lengths.

    Parameters: ``prompt_weight`` (0.0). Push/pop O(log n).
    """

    def __init__(
        self, tenants: Mapping[str, Tenant] | None = None, *, prompt_weight: float = 0.0
    ) -> None:
        super().__init__(tenants)
        self.prompt_weight = check_number("prompt_weight", prompt_weight)

    def key(self, req: Request) -> float:
        """The true job size in tokens."""
        return req.output_tokens + self.prompt_weight * req.prompt_tokens


@POLICIES.register("oracle-srpt")
class OracleSrptPolicy(KeyedPolicy):
    """Clairvoyant, progress-aware shortest remaining processing time.

    Remaining work = ``prompt_weight * uncomputed tokens + output tokens still
    to generate`` (true lengths); a request never served: ``prompt_weight *
    prompt_tokens + output_tokens``. Run as an engine's own queue
    (``placement="engine"``) it is told each sequence's progress
    (``ProgressAware``): a preempted request waits again under its remaining
    work, its prompt and output so far to be recomputed counted in, not at the
    front of the queue. With ``preempt=true`` it is preemptive SRPT within
    vLLM's recompute preemption: before every step, a waiting head that is
    blocked (no sequence slot, or no KV blocks for its first chunk) and has
    less remaining work than the running request with the most preempts that
    one. Off by default: on the Azure conversation lengths at 95% load
    (max_num_seqs 64) each preemption's recomputation costs more than the
    switch gains (mean E2E 17.3 s preemptive, 10.0 s not, fifo 13.5 s). In
    front of FCFS engines (``placement="gateway"``) it orders the queue by the
    work of requests never served.

    It is a strong clairvoyant order, not a bound: with batching no order is
    known to be optimal. The bound is ``fairserve.sim.bound``.

    Parameters: ``prompt_weight`` (1.0), ``preempt`` (false). Push/pop
    O(log n); the preemption check O(r) per step.
    """

    progress_aware = True

    def __init__(
        self,
        tenants: Mapping[str, Tenant] | None = None,
        *,
        prompt_weight: float = 1.0,
        preempt: bool = False,
    ) -> None:
        super().__init__(tenants)
        self.prompt_weight = check_number("prompt_weight", prompt_weight)
        if not isinstance(preempt, bool):
            raise ValueError(f"preempt must be true or false, got {preempt!r}")
        self.preempts = preempt

    def key(self, req: Request) -> float:
        """The true work of a request never served, in tokens."""
        return self.remaining(req, 0, req.prompt_tokens)

    def remaining(self, req: Request, output_done: int, uncomputed_tokens: int) -> float:
        """Tokens to prefill (weighted) plus output tokens still to generate."""
        return self.prompt_weight * uncomputed_tokens + (req.output_tokens - output_done)

    def requeue_progress(
        self, req: Request, output_done: int, uncomputed_tokens: int, now: float
    ) -> None:
        """Queue a preempted request under its remaining work (recomputation included)."""
        self._queue.push(req, self.remaining(req, output_done, uncomputed_tokens))
