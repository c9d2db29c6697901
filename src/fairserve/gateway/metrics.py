"""The gateway's Prometheus metrics (one registry per app, so tests can build many)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# The ``*_created`` timestamp series double the exposition for no use here.
disable_created_metrics()

_LATENCY_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
_TPOT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
_ERROR_BUCKETS_TOKENS = (1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class GatewayMetrics:
    """Counters, gauges and histograms named ``fairserve_*``.

    ``outcome`` of ``fairserve_requests_total``: ``completed``, ``cancelled``
    (client went away or shutdown), ``failed`` (upstream error), ``expired``
    (waited past the tenant's ``max_queue_wait_s``) for admitted requests;
    ``rejected_<code>`` (400/401/404/429/503 before admission) for the rest.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("fairserve_requests", "Requests by tenant and outcome.",
                                ["tenant", "outcome"], registry=r)  # fmt: skip
        self.tokens = Counter("fairserve_tokens", "Tokens by tenant and kind (prompt, completion).",
                              ["tenant", "kind"], registry=r)  # fmt: skip
        self.queue_length = Gauge("fairserve_queue_length", "Requests waiting in the policy queue.",
                                  ["tenant"], registry=r)  # fmt: skip
        self.inflight = Gauge("fairserve_backend_inflight", "Requests sent to a backend, not ended.",
                              ["backend"], registry=r)  # fmt: skip
        self.healthy = Gauge("fairserve_backend_healthy", "1 when the backend takes requests.",
                             ["backend"], registry=r)  # fmt: skip
        self.retries = Counter("fairserve_upstream_retries", "Requests retried on another backend.",
                               ["backend"], registry=r)  # fmt: skip
        self.ttft = Histogram("fairserve_ttft_seconds", "Arrival at the gateway to first token.",
                              ["tenant"], buckets=_LATENCY_BUCKETS_S, registry=r)  # fmt: skip
        self.tpot = Histogram("fairserve_tpot_seconds", "Mean time between output tokens.",
                              ["tenant"], buckets=_TPOT_BUCKETS_S, registry=r)  # fmt: skip
        self.e2e = Histogram("fairserve_e2e_seconds", "Arrival to last token.",
                             ["tenant"], buckets=_LATENCY_BUCKETS_S, registry=r)  # fmt: skip
        self.queue_wait = Histogram("fairserve_queue_wait_seconds",
                                    "Arrival to dispatch to a backend.", ["tenant"],
                                    buckets=_LATENCY_BUCKETS_S, registry=r)  # fmt: skip
        self.predictor_error = Histogram(
            "fairserve_predictor_abs_error_tokens",
            "|predicted - actual| output tokens of completed requests.",
            buckets=_ERROR_BUCKETS_TOKENS,
            registry=r,
        )

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
