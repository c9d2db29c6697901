"""Fair sharing across tenants: weighted round robin, VTC and fair-SJF.

All three keep one queue per tenant and a counter per tenant (service
received, divided by the tenant's weight), and serve the backlogged tenant
with the lowest counter. They differ in what a unit of service is (one
request for ``wrr``, weighted tokens for ``vtc`` and ``fair-sjf``) and in the
order inside a tenant (arrival order, or shortest predicted job first for
``fair-sjf``).

Costs, with n queued requests and T backlogged tenants: push and pop are
O(log n + log T) (a heap per tenant, a heap over tenants with lazy
re-ranking), ``remove`` O(1) amortised, ``on_served`` O(log T),
``pick_victim`` O(r) over the running requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fairserve.core.model import Request, Tenant
from fairserve.core.policies._common import (
    KeyedQueue,
    Requeued,
    TenantHeap,
    Weights,
    check_choice,
    check_number,
    check_tokens,
    last_max,
)
from fairserve.core.policies.base import POLICIES

CHARGE_MODES = ("served", "admission")


class TenantFairPolicy:
    """Per-tenant queues served lowest counter first, with VTC's counter lift.

    When a tenant becomes backlogged its counter is lifted to at least the
    lowest counter among the tenants already backlogged or, when none is, to
    the counter of the tenant that most recently stopped being backlogged
    (VTC, OSDI'24, Algorithm 2). Without the lift a tenant that was idle
    would bank credit and then monopolise the server; with it, it rejoins
    level with the others. Subclasses say how a pop is charged
    (``charge_pop``) and how a tenant's own queue is ordered (``within_key``).
    """

    charges = False

    def __init__(self, tenants: Mapping[str, Tenant] | None = None) -> None:
        self._weight = Weights(tenants)
        self._queues: dict[str, KeyedQueue] = {}
        self._tenants = TenantHeap()
        self._len = 0
        self._last_left: str | None = None
        self._requeued = Requeued()
        # tenant -> the total its counter was lifted by: a driver merging counters
        # across gateway replicas merges lifts (a max) apart from charges (a sum)
        self.lifted: dict[str, float] = {}

    # -- what subclasses change

    def within_key(self, req: Request) -> float:
        """Order inside a tenant's queue (smaller first; ties by arrival): FIFO here."""
        return 0.0

    def charge_pop(self, req: Request) -> None:
        """Charge ``req``'s tenant for being dispatched."""

    def pop_charge(self, req: Request) -> float:
        """What dispatching ``req`` would charge its tenant (weighted, before the weight)."""
        return 0.0

    # -- counters (FleetCounters: replicas of a gateway merge them)

    def counter_names(self, tenants: Sequence[str]) -> list[str]:
        """One counter per tenant."""
        return list(tenants)

    def fleet_rank(self, req: Request) -> float:
        """The counter ``req``'s tenant would have once ``req`` is charged at dispatch.

        The charge breaks the tie VTC's lift leaves between a returning tenant
        and the one it was lifted to, as one policy's own heap would.
        """
        return self.counter(req.tenant) + self.pop_charge(req) / self._weight(req.tenant)

    def counter(self, tenant: str) -> float:
        """The tenant's counter: weighted service divided by the tenant's weight."""
        return self._tenants.score.get(tenant, 0.0)

    def add_to_counter(self, tenant: str, amount: float) -> None:
        """Move the tenant's counter by ``amount`` (already divided by its weight).

        For a driver that merges service charged elsewhere (another gateway
        replica's share of the same tenants) into this policy's counters.
        """
        self._tenants.set(tenant, self.counter(tenant) + amount)

    def _charge(self, tenant: str, amount: float) -> None:
        """Add ``amount`` (weighted service, before dividing by the weight)."""
        self._tenants.set(tenant, self.counter(tenant) + amount / self._weight(tenant))

    def _backlog(self, tenant: str) -> None:
        heap = self._tenants
        lowest = heap.min()
        if lowest is not None:
            floor: float | None = heap.score[lowest]
        elif self._last_left is not None and self._last_left != tenant:
            floor = self.counter(self._last_left)
        else:
            floor = None
        own = self.counter(tenant)
        if floor is None or own >= floor:
            heap.score[tenant] = own
        else:
            heap.score[tenant] = floor
            self.lifted[tenant] = self.lifted.get(tenant, 0.0) + (floor - own)
        heap.activate(tenant)

    def _drained(self, tenant: str) -> None:
        self._tenants.deactivate(tenant)
        self._last_left = tenant

    # -- the Policy protocol

    def push(self, req: Request, now: float) -> None:
        """Queue ``req`` behind its tenant's earlier requests: O(log n + log T)."""
        queue = self._queues.get(req.tenant)
        if queue is None:
            queue = self._queues[req.tenant] = KeyedQueue()
        queue.push(req, self.within_key(req))
        self._len += 1
        if len(queue) == 1:
            self._backlog(req.tenant)

    def requeue(self, req: Request, now: float) -> None:
        """Serve a preempted request before the tenants' queues, uncharged (see ``Requeued``)."""
        queue = self._queues.get(req.tenant)
        if queue is not None and req in queue:
            raise ValueError(f"request {req.id} is already queued")
        self._requeued.put(req)

    def peek(self, now: float) -> Request | None:
        """The head of the lowest-counter backlogged tenant: amortised O(1)."""
        if self._requeued:
            return self._requeued.peek()
        tenant = self._tenants.min()
        return None if tenant is None else self._queues[tenant].peek()

    def pop(self, now: float) -> Request | None:
        """Dispatch the head of the lowest-counter tenant and charge it: O(log n + log T)."""
        if self._requeued:
            return self._requeued.pop()
        tenant = self._tenants.min()
        if tenant is None:
            return None
        queue = self._queues[tenant]
        req = queue.pop()
        assert req is not None  # an active tenant has a non-empty queue
        self._len -= 1
        if not queue:
            self._drained(tenant)
        self.charge_pop(req)
        return req

    def remove(self, req: Request) -> bool:
        """Cancel a queued request: O(1) amortised."""
        queue = self._queues.get(req.tenant)
        if queue is None or not queue.remove(req):
            return self._requeued.remove(req)
        self._len -= 1
        if not queue:
            self._drained(req.tenant)
        return True

    def __len__(self) -> int:
        return self._len + len(self._requeued)

    def on_served(self, tenant: str, prefill_tokens: int, decode_tokens: int, now: float) -> None:
        """No charge for service here (see subclasses)."""

    def on_finish(self, req: Request, output_tokens: int, now: float) -> None:
        """No per-request state here (see subclasses)."""

    def pick_victim(self, running: Sequence[Request], now: float) -> Request:
        """A request of the tenant furthest ahead (highest counter), the most recent one."""
        return last_max(running, lambda req: (self.counter(req.tenant),))


@POLICIES.register("wrr")
class WrrPolicy(TenantFairPolicy):
    """Weighted round robin across tenants, smooth: stride scheduling.

    Each dispatch adds ``1 / weight`` to the tenant's pass; the backlogged
    tenant with the lowest pass goes next (ties: the tenant seen first), FIFO
    inside a tenant. Over any stretch where tenants stay backlogged, each gets
    a number of dispatches proportional to its weight, give or take one, and
    the turns are interleaved (weights 2:1 give A B A A B A ...) rather than
    sent in bursts as in classic WRR or deficit round robin. A tenant
    returning from idle rejoins at the current pass instead of cashing in
    the turns it missed. Weights come from ``Tenant.weight``.

    Origin: DriftSched (2026) "weighted" tenant queues; stride scheduling
    (Waldspurger and Weihl, 1995). When to use: shares counted in requests,
    when requests are of similar size; use ``vtc`` when sizes differ.
    Push/pop O(log n + log T).
    """

    def charge_pop(self, req: Request) -> None:
        """One dispatch: the pass advances by 1 / weight."""
        self._charge(req.tenant, self.pop_charge(req))

    def pop_charge(self, req: Request) -> float:
        """One dispatch."""
        return 1.0


@POLICIES.register("vtc")
class VtcPolicy(TenantFairPolicy):
    """Virtual Token Counter (Sheng et al., "Fairness in Serving Large Language Models", OSDI'24).

    A counter per tenant accumulates ``input_weight * input tokens +
    output_weight * output tokens`` divided by the tenant's weight; the
    backlogged tenant with the lowest counter is served, FIFO inside a tenant;
    a tenant returning from idle is lifted to the lowest active counter (see
    ``TenantFairPolicy``). For two continuously backlogged tenants the paper
    bounds the difference of their weighted service over any interval by
    ``2 * max(input_weight * L_input, output_weight * M)``, with ``L_input``
    the longest prompt and ``M`` the most tokens a batch can hold.

    Charging (``charge``):

    - ``"served"`` (default, the paper's algorithm): the prompt is charged
      when the request is dispatched (as the paper does at admission, so a
      burst of dispatches between two service reports does not all go to one
      tenant), output tokens as ``on_served`` reports them. Prefill reported
      beyond the prompts already charged (recomputation after a preemption)
      is charged too.
    - ``"admission"``: at dispatch the prompt plus the predicted output
      (``predicted_output_tokens``, else ``default_output_tokens``) is
      charged at once, and ``on_finish`` adds ``actual - predicted`` output
      tokens (the paper's length-prediction variant). No per-step reports are
      needed, so this instance's ``charges`` is False. A request dispatched
      again after a preemption is charged its prompt again, not its output.

    Parameters: ``input_weight`` (1.0), ``output_weight`` (2.0), ``charge``,
    ``default_output_tokens`` (256). When to use: tenants of different request
    sizes and rates that must each get their weighted share of tokens.
    Push/pop O(log n + log T), ``on_served`` O(log T).
    """

    charges = True

    def __init__(
        self,
        tenants: Mapping[str, Tenant] | None = None,
        *,
        input_weight: float = 1.0,
        output_weight: float = 2.0,
        charge: str = "served",
        default_output_tokens: int = 256,
    ) -> None:
        super().__init__(tenants)
        self.input_weight = check_number("input_weight", input_weight)
        self.output_weight = check_number("output_weight", output_weight)
        self.charge = check_choice("charge", charge, CHARGE_MODES)
        self.default_output_tokens = check_tokens("default_output_tokens", default_output_tokens)
        self.charges = self.charge == "served"
        # served mode: prompt tokens charged at dispatch and not yet reported as prefill.
        self._prefill_credit: dict[str, int] = {}
        # admission mode: request -> the output tokens charged for it at dispatch.
        self._charged_output: dict[Request, int] = {}

    def predicted_output(self, req: Request) -> int:
        """The predicted output tokens, or the default when there is no prediction."""
        predicted = req.predicted_output_tokens
        return self.default_output_tokens if predicted is None else predicted

    def pop_charge(self, req: Request) -> float:
        """The prompt, and in admission mode the predicted output (once per request)."""
        amount = self.input_weight * req.prompt_tokens
        if self.charge != "served" and req not in self._charged_output:
            amount += self.output_weight * self.predicted_output(req)
        return amount

    def charge_pop(self, req: Request) -> None:
        """Charge the prompt, and in admission mode the predicted output."""
        amount = self.pop_charge(req)
        if self.charge == "served":
            credit = self._prefill_credit
            credit[req.tenant] = credit.get(req.tenant, 0) + req.prompt_tokens
        elif req not in self._charged_output:
            self._charged_output[req] = self.predicted_output(req)
        self._charge(req.tenant, amount)

    def on_served(self, tenant: str, prefill_tokens: int, decode_tokens: int, now: float) -> None:
        """Served mode: charge output tokens, and prefill beyond the prompts charged."""
        if self.charge != "served":
            return
        if prefill_tokens < 0:  # a prompt over-estimated: take the excess back
            self._charge(tenant, self.input_weight * prefill_tokens)
            prefill_tokens = 0
        credit = self._prefill_credit.get(tenant, 0)
        covered = min(credit, prefill_tokens)
        if covered:
            self._prefill_credit[tenant] = credit - covered
        amount = self.input_weight * (prefill_tokens - covered) + self.output_weight * decode_tokens
        if amount:
            self._charge(tenant, amount)

    def on_finish(self, req: Request, output_tokens: int, now: float) -> None:
        """Admission mode: reconcile the predicted output with the actual one."""
        predicted = self._charged_output.pop(req, None)
        if predicted is not None and output_tokens != predicted:
            self._charge(req.tenant, self.output_weight * (output_tokens - predicted))


@POLICIES.register("fair-sjf")
class FairSjfPolicy(VtcPolicy):
    """Fair across tenants, shortest job first within a tenant.

    VTC chooses the tenant (same counters, charging and parameters as
    ``vtc``); inside the chosen tenant the request with the fewest predicted
    output tokens goes first (ties in arrival order). Each tenant keeps its
    token share while its own short requests jump its own long ones, so one
    tenant's long jobs never delay another tenant's short ones by more than
    the fairness bound. The victim is a request of the tenant furthest ahead,
    its longest predicted one.

    Origin: a hybrid of VTC (OSDI'24) and DriftSched's SJF. When to use:
    multi-tenant serving with a usable length predictor. Push/pop
    O(log n + log T).
    """

    def within_key(self, req: Request) -> float:
        """Predicted output tokens."""
        return float(self.predicted_output(req))

    def pick_victim(self, running: Sequence[Request], now: float) -> Request:
        """The longest predicted request of the tenant with the highest counter."""
        return last_max(
            running, lambda req: (self.counter(req.tenant), float(self.predicted_output(req)))
        )
