"""What gateway replicas share, behind one small interface (docs/gateway.md, "Several replicas").

A replica keeps its own queue; the decisions that must hold for the fleet as a
whole read and charge a :class:`SharedState`:

- **rate limits** (exact): one atomic check-and-charge of the tenant's request
  and token buckets per admitted request (:meth:`SharedState.take_rate`);
- **engine slots** (exact): a request is dispatched to a backend only while it
  holds one of that backend's ``max_concurrency`` slots, counted over every
  replica (:meth:`~SharedState.has_slot`, :meth:`~SharedState.take_slot`,
  :meth:`~SharedState.give_slot`, called by the dispatcher);
- **fair-queuing counters and queue lengths** (approximate): the counters of a
  policy with :class:`~fairserve.core.policies.FleetCounters` (``vtc``, ``wrr``,
  ``fair-sjf``, ``uwfq``'s virtual system) and the queues merged into the
  fleet's every ``state.sync_interval_s``; :meth:`~SharedState.queued` is the
  tenant's queue over the fleet as of the last merge, for ``max_queued``;
- **the predictor's online learning** (approximate): each replica's updates
  (:meth:`~SharedState.learned`) reach the others at their next merge, and a
  replica that starts learns the fleet's recent ones.

:class:`~fairserve.gateway.shared.memory.MemoryState` (one replica) is the
default; :class:`~fairserve.gateway.shared.redis_state.RedisState` shares them
through Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fairserve.core.policies.base import Policy
    from fairserve.core.predict import Predictor
    from fairserve.gateway.backends.state import BackendState
    from fairserve.gateway.dispatch import Scheduler
    from fairserve.gateway.metrics import GatewayMetrics
    from fairserve.gateway.tenants import Tenants, TenantState


class StateUnavailable(Exception):
    """The shared state cannot be reached and ``state.on_unavailable`` is ``closed``."""


class SharedState(Protocol):
    """The state a gateway's decisions read and charge; one per gateway process."""

    shared: bool  # False: this replica's own state only

    def bind(
        self,
        scheduler: Scheduler,
        policy: Policy,
        tenants: Tenants,
        metrics: GatewayMetrics,
        predictor: Predictor | None = None,
    ) -> None:
        """Attach to the gateway's parts (once, before :meth:`start`)."""

    async def start(self) -> None:
        """Connect and start the background work (on the serving event loop)."""

    async def close(self) -> None:
        """Stop the background work and give back what this replica holds."""

    def check_available(self) -> None:
        """Raise :class:`StateUnavailable` when requests must be refused for want of the state."""

    async def take_rate(self, tenant: TenantState, cost_tokens: int, now_s: float) -> float:
        """Charge one request of ``cost_tokens`` to the tenant's buckets, both or neither.

        Returns 0 when charged, else the seconds until it would fit (nothing charged).
        """

    def queued(self, tenant: TenantState) -> int:
        """The tenant's requests queued over the fleet (this replica's counted now)."""

    def has_slot(self, backend: BackendState) -> bool:
        """Whether this replica may send one more request to ``backend`` now."""

    def take_slot(self, backend: BackendState) -> None:
        """A request was sent to ``backend`` (after :meth:`has_slot` said yes)."""

    def give_slot(self, backend: BackendState) -> None:
        """A request sent to ``backend`` ended."""

    def learned(self, cls: str, value: float) -> None:
        """This replica's predictor made update ``(cls, value)`` (see ``SharedLearning``)."""
