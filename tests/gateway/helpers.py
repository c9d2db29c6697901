"""Gateway configs and small client helpers for the tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from fairserve.core.model import Request
from fairserve.core.policies import POLICIES
from fairserve.core.route import ROUTERS
from fairserve.gateway.app import Gateway, create_app
from fairserve.gateway.backends.state import BackendState
from fairserve.gateway.config import GatewayConfig, parse_config
from fairserve.gateway.dispatch import Scheduler, Ticket
from fairserve.gateway.tenants import Tenants, TenantState
from tests.gateway.servers import ServerThread

MODEL = "Qwen2.5-1.5B"
KEY_A = "sk-tenant-a"
KEY_B = "sk-tenant-b"


def gateway_config(backend_urls: Sequence[str], **overrides: Any) -> GatewayConfig:
    """Two tenants (a, b) in front of ``backend_urls``; fast health checks."""
    data: dict[str, Any] = {
        "policy": "fifo",
        "router": "least-tokens",
        "models": [MODEL],
        "tenants": {
            "a": {"api_key": KEY_A, "weight": 1, "slo": {"ttft_s": 1.0}},
            "b": {"api_key": KEY_B, "weight": 1, "priority": 1},
        },
        "backends": [{"url": u, "max_concurrency": 32} for u in backend_urls],
        "dispatch": {"health_interval_s": 0.2, "metrics_interval_s": 0.1},
        "server": {"record_requests": True, "drain_grace_s": 5},
    }
    for key, value in overrides.items():
        data[key] = value
    return parse_config(data)


@contextlib.contextmanager
def gateway_thread(config: GatewayConfig) -> Iterator[tuple[ServerThread, Gateway]]:
    """The gateway app served in this process; yields the server and the Gateway state."""
    app = create_app(config)
    with ServerThread(app) as server:
        yield server, app.state.gateway


def ended_total(gateway: Gateway) -> int:
    """Admitted requests that have ended."""
    return sum(gateway.outcomes.values())


class LightBesideFlood:
    """One backend (64 seats), tenant ``light`` with a TPOT objective, tenant ``heavy``
    without: the setup of the SLO-driven concurrency unit tests."""

    def __init__(self, tpot_s: float, dispatch: dict[str, Any] | None = None) -> None:
        url = "http://127.0.0.1:1"
        self.config = gateway_config([url], tenants={
            "light": {"api_key": "sk-a", "slo": {"tpot_s": tpot_s}}, "heavy": {"api_key": "sk-b"},
        }, backends=[{"url": url, "max_concurrency": 64}], **({"dispatch": dispatch} if dispatch else {}))  # fmt: skip
        tenants = Tenants(self.config, 0.0)
        self.light, self.heavy = tenants.by_name["light"], tenants.by_name["heavy"]
        self.backend = BackendState(0, self.config.backends[0])

    def flood(self, n: int = 12) -> tuple[Scheduler, list[Ticket]]:
        """A fifo scheduler with the light tenant's objective in force and ``n`` of the
        heavy tenant's requests submitted (call it inside the event loop)."""
        scheduler = Scheduler(POLICIES.build("fifo"), ROUTERS.build("least-tokens"), [self.backend],
                              lambda: 0.0, tenants=[self.light, self.heavy],
                              config=self.config.dispatch)  # fmt: skip
        self.light.active = 1  # the objective is in force
        flood = [scheduler.submit(Request(i, 0.0, 10, 10, tenant="heavy"), self.heavy, 60.0)
                 for i in range(n)]  # fmt: skip
        return scheduler, flood

    def submit(self, scheduler: Scheduler, rid: int, tenant: TenantState) -> Ticket:
        """One more 10-token request of ``tenant``."""
        return scheduler.submit(Request(rid, 0.0, 10, 10, tenant=tenant.name), tenant, 60.0)
