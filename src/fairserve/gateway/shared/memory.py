"""One replica's state in its own memory: the default, and what Redis falls back to."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fairserve.core.policies.base import Policy
    from fairserve.core.predict import Predictor
    from fairserve.gateway.backends.state import BackendState
    from fairserve.gateway.dispatch import Scheduler
    from fairserve.gateway.metrics import GatewayMetrics
    from fairserve.gateway.tenants import Tenants, TenantState


def take_local(tenant: TenantState, cost_tokens: int, now_s: float) -> float:
    """Check and charge the tenant's own buckets; 0 when charged, else the seconds to wait."""
    wait = 0.0
    if tenant.requests is not None:
        wait = tenant.requests.wait_s(1, now_s)
    if tenant.tokens is not None:
        wait = max(wait, tenant.tokens.wait_s(cost_tokens, now_s))
    if wait > 0:
        return wait
    if tenant.requests is not None:
        tenant.requests.take(1, now_s)
    if tenant.tokens is not None:
        tenant.tokens.take(cost_tokens, now_s)
    return 0.0


class MemoryState:
    """Nothing shared: buckets, counters and capacity are this replica's (``backend: memory``)."""

    shared = False

    def bind(
        self,
        scheduler: Scheduler,
        policy: Policy,
        tenants: Tenants,
        metrics: GatewayMetrics,
        predictor: Predictor | None = None,
    ) -> None:
        """Nothing to attach to."""

    def learned(self, cls: str, value: float) -> None:
        """No other replica to tell."""

    async def start(self) -> None:
        """Nothing to start."""

    async def close(self) -> None:
        """Nothing to stop."""

    def check_available(self) -> None:
        """Always available."""

    async def take_rate(self, tenant: TenantState, cost_tokens: int, now_s: float) -> float:
        """The tenant's own buckets (:func:`take_local`)."""
        return take_local(tenant, cost_tokens, now_s)

    def queued(self, tenant: TenantState) -> int:
        """Queued here."""
        return tenant.queued

    def has_slot(self, backend: BackendState) -> bool:
        """The backend's own limits (``BackendState.has_room``) are the only ones."""
        return True

    def take_slot(self, backend: BackendState) -> None:
        """Counted by the backend's state already."""

    def give_slot(self, backend: BackendState) -> None:
        """Counted by the backend's state already."""
