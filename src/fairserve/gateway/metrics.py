"""The gateway's Prometheus metrics (one registry per app, so tests can build many).

Histograms that mean what a vLLM histogram means carry its name after the
``fairserve_`` prefix and its buckets (:mod:`fairserve.metrics.buckets`), so
dashboards made for vLLM chart the gateway's view beside the engine's:

==========================================================  ==========================================
fairserve                                                   vLLM
==========================================================  ==========================================
``fairserve_time_to_first_token_seconds``                   ``vllm:time_to_first_token_seconds``
``fairserve_request_time_per_output_token_seconds``         ``vllm:request_time_per_output_token_seconds``
``fairserve_e2e_request_latency_seconds``                   ``vllm:e2e_request_latency_seconds``
``fairserve_request_queue_time_seconds``                    ``vllm:request_queue_time_seconds``
==========================================================  ==========================================

The gateway's figures start when the request reaches the gateway (its queue
time is the wait in the policy's queue, before any engine saw it).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from fairserve.metrics.buckets import (
    INTER_TOKEN_LATENCY_S,
    REQUEST_LATENCY_S,
    TIME_TO_FIRST_TOKEN_S,
)

# The ``*_created`` timestamp series double the exposition for no use here.
disable_created_metrics()

_ERROR_BUCKETS_TOKENS = (1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Children:
    """A labelled metric whose children are looked up once per label set.

    prometheus-client's ``labels()`` takes a lock and builds a key on every
    call (a few microseconds); the request path calls it a dozen times per
    request, always with the same few label sets (tenants, backends and
    outcomes are bounded by the config).
    """

    __slots__ = ("_cache", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._cache: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        """The child for these label values."""
        child = self._cache.get(values)
        if child is None:
            child = self._cache[values] = self.metric.labels(*values)
        return child


class GatewayMetrics:
    """Counters, gauges and histograms named ``fairserve_*``.

    ``outcome`` of ``fairserve_requests_total``: ``completed``, ``cancelled``
    (client went away or shutdown), ``failed`` (upstream error or no healthy
    backend), ``expired`` (waited past the tenant's ``max_queue_wait_s``) for
    admitted requests; ``rejected_<status>`` (400/401/404/413/429/503 before
    admission) for the rest. For every tenant, at any time:
    ``fairserve_requests_admitted_total = completed + cancelled + failed +
    expired + fairserve_requests_in_flight``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._tenant_metrics()
        self._backend_metrics()
        self.predictor_error = Histogram(
            "fairserve_predictor_abs_error_tokens",
            "|predicted - actual| output tokens of completed requests.",
            buckets=_ERROR_BUCKETS_TOKENS,
            registry=self.registry,
        )
        for name, metric in list(vars(self).items()):
            if getattr(metric, "_labelnames", ()):
                setattr(self, name, _Children(metric))

    def _tenant_metrics(self) -> None:
        r, t = self.registry, ["tenant"]
        self.requests = Counter("fairserve_requests", "Requests by tenant and outcome.",
                                ["tenant", "outcome"], registry=r)  # fmt: skip
        self.admitted = Counter("fairserve_requests_admitted", "Requests admitted.", t, registry=r)
        self.in_flight = Gauge("fairserve_requests_in_flight",
                               "Admitted requests not ended yet (queued or on a backend).", t,
                               registry=r)  # fmt: skip
        self.tokens = Counter("fairserve_tokens", "Tokens by tenant and kind (prompt, completion).",
                              ["tenant", "kind"], registry=r)  # fmt: skip
        self.queue_length = Gauge("fairserve_queue_length", "Requests waiting in the policy queue.",
                                  t, registry=r)  # fmt: skip
        self.slo = Counter("fairserve_slo_requests",
                           "Completed requests of tenants with an SLO, by objective "
                           "(ttft, tpot, e2e, all) and whether it was met.",
                           ["tenant", "objective", "met"], registry=r)  # fmt: skip
        self.ttft = Histogram("fairserve_time_to_first_token_seconds",
                              "Arrival at the gateway to first token.", t,
                              buckets=TIME_TO_FIRST_TOKEN_S, registry=r)  # fmt: skip
        self.tpot = Histogram("fairserve_request_time_per_output_token_seconds",
                              "Mean time between a request's output tokens.", t,
                              buckets=INTER_TOKEN_LATENCY_S, registry=r)  # fmt: skip
        self.e2e = Histogram("fairserve_e2e_request_latency_seconds",
                             "Arrival at the gateway to last token.", t,
                             buckets=REQUEST_LATENCY_S, registry=r)  # fmt: skip
        self.queue_wait = Histogram("fairserve_request_queue_time_seconds",
                                    "Arrival to dispatch to a backend (the policy's queue).", t,
                                    buckets=REQUEST_LATENCY_S, registry=r)  # fmt: skip

    def _backend_metrics(self) -> None:
        r, b = self.registry, ["backend"]
        self.inflight = Gauge("fairserve_backend_inflight", "Requests sent to a backend, not ended.",
                              b, registry=r)  # fmt: skip
        self.healthy = Gauge("fairserve_backend_healthy", "1 when the backend takes requests.",
                             b, registry=r)  # fmt: skip
        self.retries = Counter("fairserve_upstream_retries", "Requests retried on another backend.",
                               b, registry=r)  # fmt: skip
        self.backend_requests = Counter("fairserve_backend_requests",
                                        "Requests a backend ended, by outcome.",
                                        ["backend", "outcome"], registry=r)  # fmt: skip
        self.backend_errors = Counter("fairserve_backend_errors",
                                      "Upstream failures by backend and kind (connect, status, "
                                      "stream).", ["backend", "kind"], registry=r)  # fmt: skip
        self.backend_ttft = Histogram("fairserve_backend_time_to_first_token_seconds",
                                      "Dispatch to first token, by backend.", b,
                                      buckets=TIME_TO_FIRST_TOKEN_S, registry=r)  # fmt: skip
        self.backend_e2e = Histogram("fairserve_backend_e2e_request_latency_seconds",
                                     "Dispatch to last token, by backend.", b,
                                     buckets=REQUEST_LATENCY_S, registry=r)  # fmt: skip
        self.engine_running = Gauge("fairserve_backend_engine_running",
                                    "Requests in the engine's batch (its metrics, moved on by "
                                    "what was sent and ended since).", b, registry=r)  # fmt: skip
        self.engine_waiting = Gauge("fairserve_backend_engine_waiting",
                                    "Requests in the engine's own queue (estimated likewise).",
                                    b, registry=r)  # fmt: skip
        self.running_cap = Gauge("fairserve_backend_running_capacity",
                                 "The batch the engine was last seen to hold while full "
                                 "(NaN before it was seen full).", b, registry=r)  # fmt: skip
        self.kv_usage = Gauge("fairserve_backend_kv_cache_usage_perc",
                              "The engine's KV cache use, 0-1 (NaN when it does not report it).",
                              b, registry=r)  # fmt: skip

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
