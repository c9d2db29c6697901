"""The gateway's and the simulated engine's /metrics: names, books that balance, promtool.

Also the engine-facing parts the metrics show: capacity read from the
engine, the priority-scheduler check at start-up, and the fail-fast 503 when
no backend is healthy.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fairserve.gateway.app import Gateway
from tests.gateway.helpers import KEY_A, KEY_B, MODEL, ended_total, gateway_config, gateway_thread
from tests.gateway.servers import engine_thread, free_port
from tests.helpers import wait_until

OUTCOMES = ("completed", "cancelled", "failed", "expired")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples}  # fmt: skip


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# promtool's lint reserves ':' for recording rules, but vLLM's own names carry it
# (vllm:...); keeping vLLM's names is the point, so that one complaint is allowed.
_VLLM_COLON = "metric names should not contain ':'"


def _promtool(text: str, *, vllm_names: bool = False) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    done = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=30)  # fmt: skip
    problems = [line for line in (done.stdout + done.stderr).decode().splitlines()
                if line.strip() and not (vllm_names and line.endswith(_VLLM_COLON))]  # fmt: skip
    assert not problems, problems
    assert done.returncode == 0 or vllm_names


def _send(url: str, key: str, n: int, max_tokens: int = 8) -> list[int]:
    body = {"model": MODEL, "prompt": "hello metrics", "max_tokens": max_tokens}
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(timeout=20) as client:
        return [client.post(url + "/v1/completions", json=body, headers=headers).status_code
                for _ in range(n)]  # fmt: skip


def test_engine_metrics_are_vllms_and_promtool_clean() -> None:
    with engine_thread() as engine:
        _send(engine.url, "x", 3)
        text = httpx.get(engine.url + "/metrics").text
    samples = _samples(text)
    labels = {"engine": "0", "model_name": MODEL}
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                 "vllm:kv_cache_usage_perc", "vllm:num_preemptions_total",
                 "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"):  # fmt: skip
        assert (name, tuple(sorted(labels.items()))) in samples, name
    assert "vllm:gpu_cache_usage_perc" not in text  # the name vLLM retired
    assert _value(samples, "vllm:generation_tokens_total", **labels) == 24
    assert _value(samples, "vllm:e2e_request_latency_seconds_count", **labels) == 3
    assert _value(samples, "vllm:time_to_first_token_seconds_count", **labels) == 3
    assert _value(samples, "vllm:request_success_total", finished_reason="length", **labels) == 3
    _promtool(text, vllm_names=True)


def _books_balance(gateway: Gateway, text: str) -> None:
    samples = _samples(text)
    for tenant in ("a", "b"):
        admitted = _value(samples, "fairserve_requests_admitted_total", tenant=tenant)
        ended = sum(_value(samples, "fairserve_requests_total", tenant=tenant, outcome=o)
                    for o in OUTCOMES)  # fmt: skip
        in_flight = _value(samples, "fairserve_requests_in_flight", tenant=tenant)
        assert admitted == ended + in_flight, (tenant, admitted, ended, in_flight)
    assert gateway.admitted == ended_total(gateway) + len(gateway.ledger.flights)


def test_gateway_metrics_balance_per_tenant_and_per_backend() -> None:
    with engine_thread() as engine:
        config = gateway_config([engine.url])
        with gateway_thread(config) as (server, gateway):
            assert _send(server.url, KEY_A, 4) == [200] * 4
            assert _send(server.url, KEY_B, 2) == [200] * 2
            assert wait_until(lambda: ended_total(gateway) == 6)
            assert wait_until(lambda: gateway.backends[0].engine is not None)
            text = httpx.get(server.url + "/metrics").text
    _books_balance(gateway, text)
    samples = _samples(text)
    backend = engine.url
    assert _value(samples, "fairserve_requests_admitted_total", tenant="a") == 4
    assert _value(samples, "fairserve_backend_requests_total", backend=backend,
                  outcome="completed") == 6  # fmt: skip
    assert _value(samples, "fairserve_backend_e2e_request_latency_seconds_count",
                  backend=backend) == 6  # fmt: skip
    assert ("fairserve_backend_kv_cache_usage_perc", (("backend", backend),)) in samples
    # Tenant a has a 1 s TTFT objective, b none: only a is counted, and it met it.
    assert _value(samples, "fairserve_slo_requests_total", tenant="a", objective="ttft",
                  met="true") == 4  # fmt: skip
    assert _value(samples, "fairserve_slo_requests_total", tenant="a", objective="all",
                  met="true") == 4  # fmt: skip
    assert not any(k[0] == "fairserve_slo_requests_total" and ("tenant", "b") in k[1]
                   for k in samples)  # fmt: skip
    assert "fairserve_time_to_first_token_seconds_bucket" in text
    assert 'le="2560.0"' in text  # vLLM's TTFT buckets
    _promtool(text)


def test_priority_on_an_fcfs_engine_warns_at_start(caplog: pytest.LogCaptureFixture) -> None:
    with engine_thread() as engine:
        backends = [{"url": engine.url, "priority": True}]
        with (
            caplog.at_level(logging.WARNING, logger="fairserve.gateway"),
            gateway_thread(gateway_config([engine.url], backends=backends)) as (_server, gateway),
        ):
            assert wait_until(lambda: gateway.backends[0].scheduling_policy is not None)
    assert gateway.backends[0].scheduling_policy == "fcfs"
    assert any("schedules fcfs" in r.getMessage() for r in caplog.records)


def test_no_healthy_backend_fails_fast_with_503_and_retry_after() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with gateway_thread(gateway_config([dead])) as (server, gateway):
        assert wait_until(lambda: not gateway.backends[0].healthy)
        start = time.monotonic()
        reply = httpx.post(server.url + "/v1/completions", timeout=10,
                           json={"model": MODEL, "prompt": "x", "max_tokens": 4},
                           headers={"Authorization": f"Bearer {KEY_A}"})  # fmt: skip
        took_s = time.monotonic() - start
        text = httpx.get(server.url + "/metrics").text
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "no_healthy_backend"
    assert int(reply.headers["retry-after"]) >= 1 and took_s < 2.0
    assert _value(_samples(text), "fairserve_requests_total", tenant="a",
                  outcome="rejected_503") == 1  # fmt: skip
    _books_balance(gateway, text)
