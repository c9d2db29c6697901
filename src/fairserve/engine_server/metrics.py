"""The simulated engine's /metrics, in current vLLM's names and buckets.

Gauges are read from the engine when scraped; counters and histograms from
the engine's request records (so they cover the requests that ended: a
request's prompt counts toward ``vllm:prompt_tokens_total`` and the prefix
cache figures once it finished or was cancelled, where vLLM counts it at its
prefill). Times are the engine model's seconds (wall seconds divided by
``time_scale``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fairserve.engine_server.realtime import RealtimeEngine
from fairserve.metrics.buckets import (
    INTER_TOKEN_LATENCY_S,
    REQUEST_LATENCY_S,
    TIME_TO_FIRST_TOKEN_S,
)


def _histogram(
    name: str, doc: str, labels: dict[str, str], values: np.ndarray, buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    values = values[~np.isnan(values)]
    counts = np.searchsorted(np.sort(values), np.asarray(buckets), side="right")
    pairs = [(repr(float(b)), float(c)) for b, c in zip(buckets, counts, strict=True)]
    pairs.append(("+Inf", float(len(values))))
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), pairs, float(values.sum()))
    return family


class EngineCollector(Collector):
    """One engine's metrics, built at each scrape."""

    def __init__(self, engine: RealtimeEngine, model_name: str, finished: Counter[str]) -> None:
        self.engine = engine
        self.labels = {"engine": "0", "model_name": model_name}
        self.finished = finished  # finish reason -> requests (stop, length, abort, error)

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=list(self.labels))
        family.add_metric(list(self.labels.values()), value)
        return family

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=list(self.labels))
        family.add_metric(list(self.labels.values()), value)
        return family

    def collect(self) -> Iterator[Metric]:
        e = self.engine
        yield self._gauge("vllm:num_requests_running", "Requests in the batch.", e.num_running)
        yield self._gauge("vllm:num_requests_waiting", "Requests queued, preempted included.",
                          e.num_waiting)  # fmt: skip
        yield self._gauge("vllm:kv_cache_usage_perc", "KV cache use, 0-1.", e.kv_usage)
        yield self._counter("vllm:num_preemptions", "Preemptions.", e.engine.preemptions)
        yield self._counter("vllm:generation_tokens", "Tokens generated.", e.tokens_total)
        yield from self._from_records()
        success = CounterMetricFamily("vllm:request_success", "Finished requests by reason.",
                                      labels=[*self.labels, "finished_reason"])  # fmt: skip
        for reason in ("stop", "length", "abort", "error"):
            success.add_metric([*self.labels.values(), reason], self.finished[reason])
        yield success

    def _from_records(self) -> Iterator[Metric]:
        a = self.engine.records.to_numpy()
        prompts = float(a.prompt_tokens.sum())
        yield self._counter("vllm:prompt_tokens", "Prompt tokens of ended requests.", prompts)
        yield self._counter("vllm:prefix_cache_queries",
                            "Prompt tokens looked up in the prefix cache.", prompts)  # fmt: skip
        yield self._counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.",
                            float(a.cached_prompt_tokens.sum()))  # fmt: skip
        done = a.select(a.completed)
        h: list[tuple[str, str, Any, tuple[float, ...]]] = [
            ("vllm:time_to_first_token_seconds", "Time to first token.", done.ttft_s,
             TIME_TO_FIRST_TOKEN_S),
            ("vllm:request_time_per_output_token_seconds", "Mean time per output token.",
             done.tpot_s, INTER_TOKEN_LATENCY_S),
            ("vllm:e2e_request_latency_seconds", "Arrival to finish.", done.e2e_s,
             REQUEST_LATENCY_S),
            ("vllm:request_queue_time_seconds", "Arrival to first scheduled.", done.queue_s,
             REQUEST_LATENCY_S),
        ]  # fmt: skip
        for name, doc, values, buckets in h:
            yield _histogram(name, doc, self.labels, np.asarray(values, dtype=float), buckets)


def engine_registry(engine: RealtimeEngine, model_name: str, finished: Counter[str]) -> Any:
    """A registry holding only the engine's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine, model_name, finished))
    return registry


def render(registry: Any) -> bytes:
    """The exposition text."""
    return bytes(generate_latest(registry))
