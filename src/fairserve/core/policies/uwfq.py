"""User-weighted fair queuing, adapted from Spark jobs to LLM requests.

Origin: UWFQ ("Balancing Fairness and Performance in Multi-User Spark
Workloads with Dynamic Scheduling", 2025). UWFQ simulates a virtual fair
system in which users share the cluster in proportion to their weights,
gives every job the time at which it would finish in that system, and runs
jobs in order of those virtual finish times; the unfairness against the
virtual system stays bounded, while small jobs finish early.

Adaptation to token service (ours; the paper schedules Spark tasks):

- Users are tenants; a job is a request; its size is its predicted work in
  weighted tokens, ``input_weight * prompt + output_weight * predicted
  output`` (VTC's cost, so ``uwfq`` and ``vtc`` measure service alike).
- The virtual system is a weighted fair (GPS) server over the active
  tenants (those with requests queued or running). Its virtual time ``V``
  advances by ``cost / (sum of the active tenants' weights)`` for every
  weighted token the real server reports through ``on_served``: the virtual
  system is clocked by the real service, so it needs no model of the
  engine's speed.
- At push, request j of tenant u gets a virtual start ``S = max(V, F_u)``
  and finish ``F_j = S + size_j / w_u``, where ``F_u`` is the finish time of
  u's previous request: a tenant's own requests queue one behind the other
  in the virtual system, and tenants progress side by side. The queued
  request with the smallest ``F`` is served (ties by arrival).
- Charging per served chunk corrects the predictions: ``on_served`` keeps,
  per tenant, the predicted work of its dispatched requests not yet
  consumed. When the service reported exceeds it (a request ran longer than
  predicted, or was recomputed after a preemption) the excess pushes the
  tenant's ``F_u`` later, so its next requests pay for it; when a request
  finishes under its prediction the unused part is refunded. Requests
  already queued keep their tags (re-tagging them would cost O(n)).
- Bounded unfairness: with exact sizes this is weighted fair queuing over
  tenants, whose service lags the fair system by at most one maximal
  request; prediction errors are charged back as service is reported, so
  they shift later tags instead of accumulating.
- Not adapted: UWFQ's runtime partitioning (splitting long tasks). A queue
  cannot cut requests; the engine's chunked prefill bounds the prefill side.

Costs: push and pop O(log n), ``remove`` O(1) amortised, ``on_served`` and
``on_finish`` O(1), ``pick_victim`` O(r).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fairserve.core.model import Request, Tenant
from fairserve.core.policies._common import (
    KeyedQueue,
    Requeued,
    Weights,
    check_number,
    check_tokens,
    last_max,
)
from fairserve.core.policies.base import POLICIES


@POLICIES.register("uwfq")
class UwfqPolicy:
    """User-weighted fair queuing on predicted token work (UWFQ 2025; see the module doc).

    Parameters: ``input_weight`` (1.0) and ``output_weight`` (2.0) price
    tokens as VTC does; ``default_output_tokens`` (256) sizes requests
    without a prediction. Tenant weights come from ``Tenant.weight``.

    When to use: tenant isolation with low latency for small requests: a
    short request of any tenant finishes early in the virtual system and is
    served early, while a tenant flooding the server only pushes its own tags
    later. Push/pop O(log n).
    """

    charges = True

    def __init__(
        self,
        tenants: Mapping[str, Tenant] | None = None,
        *,
        input_weight: float = 1.0,
        output_weight: float = 2.0,
        default_output_tokens: int = 256,
    ) -> None:
        self.input_weight = check_number("input_weight", input_weight)
        self.output_weight = check_number("output_weight", output_weight)
        self.default_output_tokens = check_tokens("default_output_tokens", default_output_tokens)
        self._weight = Weights(tenants)
        self._queue = KeyedQueue()
        self.virtual_time = 0.0
        self._last_finish: dict[str, float] = {}  # F_u
        self._active: dict[str, int] = {}  # tenant -> requests queued or running
        self._active_weight = 0.0
        self._tag: dict[Request, float] = {}  # F_j of queued and running requests
        self._size: dict[Request, float] = {}  # predicted cost of running requests
        self._unconsumed: dict[str, float] = {}  # tenant -> predicted cost not yet served
        self._requeued = Requeued()

    def size(self, req: Request) -> float:
        """Predicted work of ``req`` in weighted tokens."""
        predicted = req.predicted_output_tokens
        output = self.default_output_tokens if predicted is None else predicted
        return self.input_weight * req.prompt_tokens + self.output_weight * output

    def finish_tag(self, req: Request) -> float | None:
        """The virtual finish time of a queued or running request."""
        return self._tag.get(req)

    def _enter(self, tenant: str) -> None:
        count = self._active.get(tenant, 0)
        if count == 0:
            self._active_weight += self._weight(tenant)
        self._active[tenant] = count + 1

    def _leave(self, tenant: str) -> None:
        count = self._active[tenant] - 1
        self._active[tenant] = count
        if count == 0:
            self._active_weight -= self._weight(tenant)
            if not any(self._active.values()):
                self._active_weight = 0.0  # no float drift across idle periods

    def push(self, req: Request, now: float) -> None:
        """Tag ``req`` with its virtual finish time and queue it: O(log n)."""
        if req in self._queue:
            raise ValueError(f"request {req.id} is already queued")
        tag = self._tag.get(req)
        if req in self._size:
            # Preempted and queued again: it keeps its tag and its place.
            del self._size[req]
            assert tag is not None
        else:
            tenant = req.tenant
            start = max(self.virtual_time, self._last_finish.get(tenant, 0.0))
            tag = start + self.size(req) / self._weight(tenant)
            self._last_finish[tenant] = tag
            self._enter(tenant)
        self._queue.push(req, tag)
        self._tag[req] = tag

    def requeue(self, req: Request, now: float) -> None:
        """Serve a preempted request before the queue (see ``Requeued``); it stays
        dispatched: its tag, predicted size and the tenant's activity are kept."""
        if req in self._queue:
            raise ValueError(f"request {req.id} is already queued")
        self._requeued.put(req)

    def pop(self, now: float) -> Request | None:
        """The request with the smallest virtual finish time: O(log n)."""
        if self._requeued:
            return self._requeued.pop()
        req = self._queue.pop()
        if req is not None:
            size = self.size(req)
            self._size[req] = size
            self._unconsumed[req.tenant] = self._unconsumed.get(req.tenant, 0.0) + size
        return req

    def peek(self, now: float) -> Request | None:
        """What ``pop`` would return: amortised O(1)."""
        if self._requeued:
            return self._requeued.peek()
        return self._queue.peek()

    def remove(self, req: Request) -> bool:
        """Cancel a queued request: O(1) amortised."""
        if self._requeued.remove(req):
            return True  # still dispatched: on_finish settles it
        if not self._queue.remove(req):
            return False
        del self._tag[req]
        self._leave(req.tenant)
        return True

    def __len__(self) -> int:
        return len(self._queue) + len(self._requeued)

    def on_served(self, tenant: str, prefill_tokens: int, decode_tokens: int, now: float) -> None:
        """Advance the virtual clock; push the tenant's tags later if it overran."""
        cost = self.input_weight * prefill_tokens + self.output_weight * decode_tokens
        if not cost:
            return
        if cost < 0:  # a correction: service charged that did not happen is the tenant's again
            self._unconsumed[tenant] = self._unconsumed.get(tenant, 0.0) - cost
            return
        if self._active_weight > 0:
            self.virtual_time += cost / self._active_weight
        left = self._unconsumed.get(tenant, 0.0) - cost
        if left < 0:
            overrun = -left / self._weight(tenant)
            self._last_finish[tenant] = self._last_finish.get(tenant, 0.0) + overrun
            left = 0.0
        self._unconsumed[tenant] = left

    def on_finish(self, req: Request, output_tokens: int, now: float) -> None:
        """Refund what a finished request was predicted to use but did not."""
        size = self._size.pop(req, None)
        if size is None:
            return  # never dispatched (cancelled while queued) or unknown
        del self._tag[req]
        tenant = req.tenant
        actual = self.input_weight * req.prompt_tokens + self.output_weight * output_tokens
        refund = min(max(size - actual, 0.0), self._unconsumed.get(tenant, 0.0))
        if refund:
            self._unconsumed[tenant] -= refund
            self._last_finish[tenant] -= refund / self._weight(tenant)
        self._leave(tenant)

    def pick_victim(self, running: Sequence[Request], now: float) -> Request:
        """The running request with the latest virtual finish time (unknown ones first)."""
        return last_max(running, lambda req: (self._tag.get(req, float("inf")),))
