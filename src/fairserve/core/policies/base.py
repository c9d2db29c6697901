"""The Policy protocol: queue order, charging and preemption choice in one object.

A policy sees requests and tenants, never engines or clocks: every method takes
``now``. Drivers (the simulator's cluster and engines, the gateway) call

- ``push`` when a request arrives, ``pop``/``peek`` when capacity frees up,
  ``remove`` when a queued request is cancelled;
- ``requeue`` when a request it served was preempted and must wait again
  (an engine that runs the policy as its own waiting queue);
- ``on_served(tenant, prefill_tokens, decode_tokens, now)`` as service is
  given — aggregated per tenant between two scheduling decisions, which is
  exact for any decision taken at those points — but only when the policy's
  ``charges`` attribute is true (FIFO and friends skip the cost);
- ``on_finish(req, output_tokens, now)`` once when a request ends, with the
  tokens it really produced (VTC reconciles its admission-time charge here);
- ``pick_victim(running, now)`` when an engine runs out of KV blocks.

Policies are built by ``POLICIES.create(name, tenants=..., **params)``:
``tenants`` maps tenant names to ``Tenant`` (weight, priority, SLO); a tenant
missing from it counts as ``Tenant(name)`` (weight 1, priority 0, no SLO).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from fairserve.core.model import Request, Tenant
from fairserve.core.registry import Registry


@runtime_checkable
class Policy(Protocol):
    """Decides who goes next and who is preempted. ``now`` is always passed in."""

    charges: bool

    def push(self, req: Request, now: float) -> None:
        """Add a waiting request."""

    def pop(self, now: float) -> Request | None:
        """Remove and return the next request to serve, or None when empty."""

    def peek(self, now: float) -> Request | None:
        """The request ``pop`` would return, without removing it."""

    def requeue(self, req: Request, now: float) -> None:
        """Take back ``req``, popped earlier and since preempted, to be served again.

        Every policy here serves requeued requests before any request still
        waiting, the most recently requeued first (vLLM puts a preempted
        request at the front of its queue), without charging them again.
        """

    def remove(self, req: Request) -> bool:
        """Remove a waiting request (cancelled); False if it was not queued."""

    def __len__(self) -> int:
        """Number of waiting requests."""

    def on_served(self, tenant: str, prefill_tokens: int, decode_tokens: int, now: float) -> None:
        """Charge hook: ``tenant`` was served these tokens since the last call.

        A negative count is a correction: service charged before (from an
        estimate) that the engine's own count shows did not happen; the
        policy takes it back.
        """

    def on_finish(self, req: Request, output_tokens: int, now: float) -> None:
        """``req`` ended (completed, cancelled or failed) after ``output_tokens`` tokens."""

    def pick_victim(self, running: Sequence[Request], now: float) -> Request:
        """Which running request to preempt when KV memory runs out."""


@runtime_checkable
class ProgressAware(Protocol):
    """A policy that orders by each request's remaining work, which only the engine knows.

    An engine whose own waiting queue is such a policy (its ``progress_aware``
    attribute is true) puts a preempted request back with ``requeue_progress``
    (ordered by its remaining work, not at the front) and, when ``preempts``
    is true, asks before it schedules a step whether the waiting head
    (blocked: no sequence slot or no KV blocks for its first chunk) has less
    remaining work than the running request with the most, and if so preempts
    that one.
    ``uncomputed_tokens`` are the tokens it must still prefill (its prompt and
    the output so far after a recompute preemption; 0 while decoding).
    """

    progress_aware: bool
    preempts: bool

    def remaining(self, req: Request, output_done: int, uncomputed_tokens: int) -> float:
        """The work ``req`` still needs, in the policy's units."""

    def requeue_progress(
        self, req: Request, output_done: int, uncomputed_tokens: int, now: float
    ) -> None:
        """Take back a preempted ``req`` and order it by its remaining work."""


@runtime_checkable
class FleetCounters(Protocol):
    """A policy whose order rests on named counters that several drivers can merge.

    Gateway replicas sharing one fleet each run their own policy object; a
    policy with this protocol lets them agree on one order: every merge adds
    each replica's change of each counter (a sum) and takes its lifts as a
    maximum, then ``add_to_counter`` brings the fleet's changes into this
    object. The names are the tenants' (a fair queue's counter, ``uwfq``'s
    last virtual finish time) plus any that ``counter_names`` adds (``uwfq``'s
    virtual clock). ``fleet_rank`` says where a queued request stands in the
    fleet's order (lower: sooner), comparable across replicas once merged.
    """

    #: name -> the total its counter was lifted by (a jump to a floor, not service):
    #: merged as a maximum, so two replicas lifting one tenant lift it once.
    lifted: dict[str, float]

    def counter(self, name: str) -> float:
        """The counter's value."""

    def add_to_counter(self, name: str, amount: float) -> None:
        """Move the counter by ``amount`` (changes made elsewhere)."""

    def counter_names(self, tenants: Sequence[str]) -> list[str]:
        """The counters to merge, given the tenants a driver knows."""

    def fleet_rank(self, req: Request) -> float:
        """Where the queued ``req`` stands in the order (lower: sooner)."""


def tenant_of(tenants: Mapping[str, Tenant], name: str) -> Tenant:
    """The config of tenant ``name``; defaults for a tenant not configured."""
    tenant = tenants.get(name)
    return tenant if tenant is not None else Tenant(name)


POLICIES: Registry[Policy] = Registry("policy")
