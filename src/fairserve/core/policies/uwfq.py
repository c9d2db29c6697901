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
- Charging per served chunk corrects the predictions, and the correction
  re-tags the tenant's queued requests at once: ``on_served`` keeps, per
  tenant, the predicted work of its dispatched requests not yet consumed.
  When the service reported exceeds it (a request ran longer than
  predicted, or was recomputed after a preemption) the excess, divided by
  the tenant's weight, pushes ``F_u`` *and every queued tag of u* later;
  when a request finishes under its prediction the unused part moves them
  earlier again. So a burst of under-predicted large requests loses its
  early tags as soon as the first of them overruns, instead of keeping them
  while only the tenant's next arrivals pay. Each tenant's queue holds its
  requests under tags relative to a per-tenant offset, and a heap over the
  tenants orders them by their head's tag plus offset, so a re-tag is one
  offset change and one O(log T) re-rank, not O(n).
- Bounded unfairness: with exact sizes this is weighted fair queuing over
  tenants, whose service lags the fair system by at most one maximal
  request; prediction errors are charged back to the tenant's queued and
  future tags as service is reported, so they do not accumulate.
- Several gateway replicas share one virtual system (``FleetCounters``):
  the virtual clock and each tenant's last finish time are counters that
  every merge sums across replicas (a tenant's finish time moved up to the
  clock at push is a lift, merged as a maximum), and a replica's head ranks
  by its finish tag. A merge moves only future tags: requests already queued
  keep theirs.
- UWFQ's runtime partitioning (splitting long tasks) is the engine's
  service quantum (``EngineConfig.service_quantum_tokens``): a queue cannot
  cut a request, but an engine whose waiting queue is this policy preempts a
  long decode for a blocked head with an earlier tag.

Costs, with T tenants queued: push and pop O(log n + log T), ``remove`` O(1)
amortised (plus a re-rank when it removes a head), ``on_served`` and
``on_finish`` O(log T), ``pick_victim`` O(r).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fairserve.core.model import Request, Tenant
from fairserve.core.policies._common import (
    KeyedQueue,
    Requeued,
    TenantHeap,
    Weights,
    check_number,
    check_tokens,
    last_max,
)
from fairserve.core.policies.base import POLICIES

#: The counter name of the virtual clock (no tenant can be named so).
VIRTUAL_CLOCK = "\0virtual-clock"


@POLICIES.register("uwfq")
class UwfqPolicy:
    """User-weighted fair queuing on predicted token work (UWFQ 2025; see the module doc).

    Parameters: ``input_weight`` (1.0) and ``output_weight`` (2.0) price
    tokens as VTC does; ``default_output_tokens`` (256) sizes requests
    without a prediction. Tenant weights come from ``Tenant.weight``.

    When to use: tenant isolation with low latency for small requests: a
    short request of any tenant finishes early in the virtual system and is
    served early, while a tenant flooding the server (or whose requests run
    longer than predicted) only pushes its own tags later.
    Push/pop O(log n + log T).
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
        self._queues: dict[str, KeyedQueue] = {}  # tenant -> its queued requests by raw tag
        self._heads = TenantHeap()  # queued tenants by their head's tag (raw + offset)
        self._len = 0
        self.virtual_time = 0.0
        self._last_finish: dict[str, float] = {}  # F_u
        # Tenant -> what its tags have moved since they were given (corrections / weight):
        # a request's tag is its raw tag plus its tenant's offset.
        self._offset: dict[str, float] = {}
        self._active: dict[str, int] = {}  # tenant -> requests queued or running
        self._active_weight = 0.0
        self._raw: dict[Request, float] = {}  # raw tags of queued and running requests
        self._size: dict[Request, float] = {}  # predicted cost of running requests
        self._unconsumed: dict[str, float] = {}  # tenant -> predicted cost not yet served
        self._requeued = Requeued()
        self.lifted: dict[str, float] = {}  # tenant -> how far the clock moved F_u up at push

    def size(self, req: Request) -> float:
        """Predicted work of ``req`` in weighted tokens."""
        predicted = req.predicted_output_tokens
        output = self.default_output_tokens if predicted is None else predicted
        return self.input_weight * req.prompt_tokens + self.output_weight * output

    def finish_tag(self, req: Request) -> float | None:
        """The virtual finish time of a queued or running request (corrections included)."""
        raw = self._raw.get(req)
        return None if raw is None else raw + self._offset.get(req.tenant, 0.0)

    # -- activity (the virtual system's active weight)

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

    # -- the tenants' queues

    def _rank(self, tenant: str) -> None:
        """Re-rank ``tenant`` by its head's tag, or drop it when its queue is empty."""
        queue = self._queues[tenant]
        head = queue.peek()
        if head is None:
            self._heads.deactivate(tenant)
            return
        tag = self._raw[head] + self._offset.get(tenant, 0.0)
        if tenant in self._heads.active:
            self._heads.set(tenant, tag)
        else:
            self._heads.score[tenant] = tag
            self._heads.activate(tenant)

    def _shift(self, tenant: str, amount: float) -> None:
        """Move ``tenant``'s future and queued tags by ``amount`` of virtual time."""
        self._last_finish[tenant] = self._last_finish.get(tenant, 0.0) + amount
        self._offset[tenant] = self._offset.get(tenant, 0.0) + amount
        if tenant in self._heads.active:
            self._rank(tenant)

    # -- FleetCounters: replicas of a gateway merge the virtual system

    def counter(self, name: str) -> float:
        """A tenant's last virtual finish time, or the virtual clock (``VIRTUAL_CLOCK``)."""
        if name == VIRTUAL_CLOCK:
            return self.virtual_time
        return self._last_finish.get(name, 0.0)

    def add_to_counter(self, name: str, amount: float) -> None:
        """Move the clock or a tenant's next start (work queued or served elsewhere)."""
        if name == VIRTUAL_CLOCK:
            self.virtual_time += amount
        else:
            self._last_finish[name] = self._last_finish.get(name, 0.0) + amount

    def counter_names(self, tenants: Sequence[str]) -> list[str]:
        """Each tenant's finish time, and the virtual clock."""
        return [*tenants, VIRTUAL_CLOCK]

    def fleet_rank(self, req: Request) -> float:
        """The queued request's virtual finish time."""
        tag = self.finish_tag(req)
        return float("inf") if tag is None else tag

    # -- the Policy protocol

    def push(self, req: Request, now: float) -> None:
        """Tag ``req`` with its virtual finish time and queue it: O(log n + log T)."""
        tenant = req.tenant
        queue = self._queues.get(tenant)
        if queue is None:
            queue = self._queues[tenant] = KeyedQueue()
        if req in queue:
            raise ValueError(f"request {req.id} is already queued")
        if req in self._size:
            # Preempted and queued again: it keeps its tag and its place.
            del self._size[req]
            raw = self._raw[req]
        else:
            last = self._last_finish.get(tenant, 0.0)
            if self.virtual_time > last:
                self.lifted[tenant] = self.lifted.get(tenant, 0.0) + self.virtual_time - last
            start = max(self.virtual_time, last)
            tag = start + self.size(req) / self._weight(tenant)
            self._last_finish[tenant] = tag
            raw = tag - self._offset.get(tenant, 0.0)
            self._raw[req] = raw
            self._enter(tenant)
        queue.push(req, raw)
        self._len += 1
        if queue.peek() is req:
            self._rank(tenant)

    def requeue(self, req: Request, now: float) -> None:
        """Serve a preempted request before the queue (see ``Requeued``); it stays
        dispatched: its tag, predicted size and the tenant's activity are kept."""
        queue = self._queues.get(req.tenant)
        if queue is not None and req in queue:
            raise ValueError(f"request {req.id} is already queued")
        self._requeued.put(req)

    def pop(self, now: float) -> Request | None:
        """The request with the smallest virtual finish time: O(log n + log T)."""
        if self._requeued:
            return self._requeued.pop()
        tenant = self._heads.min()
        if tenant is None:
            return None
        req = self._queues[tenant].pop()
        assert req is not None  # a ranked tenant has a queued request
        self._len -= 1
        self._rank(tenant)
        size = self.size(req)
        self._size[req] = size
        self._unconsumed[tenant] = self._unconsumed.get(tenant, 0.0) + size
        return req

    def peek(self, now: float) -> Request | None:
        """What ``pop`` would return: amortised O(1)."""
        if self._requeued:
            return self._requeued.peek()
        tenant = self._heads.min()
        return None if tenant is None else self._queues[tenant].peek()

    def remove(self, req: Request) -> bool:
        """Cancel a queued request: O(1) amortised."""
        if self._requeued.remove(req):
            return True  # still dispatched: on_finish settles it
        queue = self._queues.get(req.tenant)
        if queue is None:
            return False
        was_head = queue.peek() is req
        if not queue.remove(req):
            return False
        self._len -= 1
        del self._raw[req]
        self._leave(req.tenant)
        if was_head:
            self._rank(req.tenant)
        return True

    def __len__(self) -> int:
        return self._len + len(self._requeued)

    def on_served(self, tenant: str, prefill_tokens: int, decode_tokens: int, now: float) -> None:
        """Advance the virtual clock; re-tag the tenant's requests later if it overran."""
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
            self._shift(tenant, -left / self._weight(tenant))
            left = 0.0
        self._unconsumed[tenant] = left

    def on_finish(self, req: Request, output_tokens: int, now: float) -> None:
        """Refund what a finished request was predicted to use but did not."""
        size = self._size.pop(req, None)
        if size is None:
            return  # never dispatched (cancelled while queued) or unknown
        del self._raw[req]
        tenant = req.tenant
        actual = self.input_weight * req.prompt_tokens + self.output_weight * output_tokens
        refund = min(max(size - actual, 0.0), self._unconsumed.get(tenant, 0.0))
        if refund:
            self._unconsumed[tenant] -= refund
            self._shift(tenant, -refund / self._weight(tenant))
        self._leave(tenant)

    def pick_victim(self, running: Sequence[Request], now: float) -> Request:
        """The running request with the latest virtual finish time (unknown ones first)."""
        return last_max(running, lambda req: (self._tag_or_inf(req),))

    def _tag_or_inf(self, req: Request) -> float:
        tag = self.finish_tag(req)
        return float("inf") if tag is None else tag
