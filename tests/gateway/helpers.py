"""Gateway configs and small client helpers for the tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from fairserve.gateway.app import Gateway, create_app
from fairserve.gateway.config import GatewayConfig, parse_config
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
