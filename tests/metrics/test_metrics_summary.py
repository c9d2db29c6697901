"""The run summary: hand-worked figures, the per-tenant split, properties, edge cases."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairserve.core.model import SLO, Outcome
from fairserve.metrics.records import RecordArrays, RequestRecords
from fairserve.metrics.summary import (
    EngineStats,
    LatencyStats,
    Summary,
    latency_stats,
    summarize,
)

NAN = float("nan")


@dataclass(frozen=True)
class Row:
    """One ended request, times absolute in seconds."""

    tenant: str
    arrival_s: float
    scheduled_s: float
    first_token_s: float
    finish_s: float
    output_tokens: int
    outcome: Outcome = Outcome.COMPLETED
    prompt_tokens: int = 100
    cached_prompt_tokens: int = 0
    preemptions: int = 0


def make_records(rows: list[Row]) -> RecordArrays:
    records = RequestRecords()
    for i, row in enumerate(rows):
        records.add(
            request_id=i,
            tenant=row.tenant,
            instance=0,
            outcome=row.outcome,
            arrival_s=row.arrival_s,
            first_scheduled_s=row.scheduled_s,
            first_token_s=row.first_token_s,
            finish_s=row.finish_s,
            prompt_tokens=row.prompt_tokens,
            output_tokens=row.output_tokens,
            cached_prompt_tokens=row.cached_prompt_tokens,
            preemptions=row.preemptions,
        )
    return records.to_numpy()


# Hand-worked run. Tenant "a": five completed requests; tenant "b": one completed,
# one failed, one cancelled. Per request: ttft, e2e, queue, tpot in the comments.
HAND_ROWS = [
    Row("a", 0.0, 0.5, 1.0, 3.0, 5, cached_prompt_tokens=50),  # 1, 3, 0.5, 0.5
    Row("b", 0.0, NAN, NAN, 2.0, 0, Outcome.FAILED, 300, 300, preemptions=1),
    Row("a", 1.0, 1.0, 3.0, 4.0, 3),  # 2, 3, 0, 0.5
    Row("a", 2.0, 3.0, 5.0, 5.0, 1),  # 3, 3, 1, NaN (one token)
    Row("a", 3.0, 4.0, 7.0, 9.0, 2, preemptions=2),  # 4, 6, 1, 2
    Row("a", 4.0, 6.0, 9.0, 10.0, 5),  # 5, 6, 2, 0.25
    Row("b", 5.0, 5.0, 5.5, 12.0, 14, prompt_tokens=200, cached_prompt_tokens=100),
    Row("b", 6.0, 6.0, 7.0, 8.0, 3, Outcome.CANCELLED, 50, 50),
]
HAND_SLOS = {"a": SLO("interactive", ttft_s=3.0, tpot_s=1.0)}
HAND_DEFAULT = SLO("batch", e2e_s=5.0)


@pytest.fixture
def hand() -> Summary:
    return summarize(make_records(HAND_ROWS), slos=HAND_SLOS, default_slo=HAND_DEFAULT)


def assert_stats(stats: LatencyStats, p50: float, p90: float, p99: float, mean: float) -> None:
    assert (stats.p50, stats.p90, stats.p99, stats.mean) == pytest.approx((p50, p90, p99, mean))


def test_hand_worked_counts_and_rates(hand: Summary) -> None:
    assert (hand.requests, hand.completed, hand.failed, hand.cancelled) == (8, 6, 1, 1)
    assert hand.sim_time_s == 12.0  # last finish 12 - first arrival 0
    assert hand.throughput_tok_s == pytest.approx(30 / 12)  # 5+3+1+2+5+14 completed tokens
    assert hand.throughput_req_s == pytest.approx(6 / 12)
    assert hand.input_throughput_tok_s == pytest.approx(700 / 12)
    assert hand.prefix_cache_hit_rate == pytest.approx(150 / 700)  # failed/cancelled excluded
    assert hand.preemptions == 3
    assert math.isnan(hand.kv_util_mean) and math.isnan(hand.kv_util_peak)


def test_hand_worked_latencies(hand: Summary) -> None:
    # Overall TTFT over completed: [0.5, 1, 2, 3, 4, 5]; p50 at index 2.5, p90 4.5, p99 4.95.
    assert_stats(hand.ttft_s, 2.5, 4.5, 4.95, 15.5 / 6)
    a = hand.per_tenant["a"]
    assert_stats(a.ttft_s, 3.0, 4.6, 4.96, 3.0)
    # TPOT [0.25, 0.5, 0.5, 2]: the one-token output is left out.
    assert_stats(a.tpot_s, 0.5, 1.55, 1.955, 0.8125)
    assert_stats(a.e2e_s, 3.0, 6.0, 6.0, 4.2)
    assert_stats(a.queue_s, 1.0, 1.6, 1.96, 0.9)
    b = hand.per_tenant["b"]
    for stats, value in ((b.ttft_s, 0.5), (b.tpot_s, 0.5), (b.e2e_s, 7.0), (b.queue_s, 0.0)):
        assert_stats(stats, value, value, value, value)


def test_hand_worked_goodput(hand: Summary) -> None:
    # "a" (ttft <= 3, tpot <= 1): requests 0, 2 and 3 meet it (the one-token output
    # has no TPOT); "b" (default, e2e <= 5): its completed request took 7 s.
    assert hand.goodput.req_s == pytest.approx(3 / 12)
    assert hand.goodput.tok_s == pytest.approx((5 + 3 + 1) / 12)
    assert hand.goodput.fraction == pytest.approx(3 / 8)
    assert hand.per_tenant["a"].goodput.fraction == pytest.approx(3 / 5)
    assert hand.per_tenant["a"].goodput.tok_s == pytest.approx(9 / 12)
    assert hand.per_tenant["b"].goodput.fraction == 0.0
    assert hand.per_tenant["b"].goodput.req_s == 0.0


def test_per_tenant_split(hand: Summary) -> None:
    assert list(hand.per_tenant) == ["a", "b"]
    a, b = hand.per_tenant["a"], hand.per_tenant["b"]
    assert (a.requests, a.completed, b.requests, b.completed) == (5, 5, 3, 1)
    assert a.throughput_tok_s == pytest.approx(16 / 12)
    assert b.throughput_tok_s == pytest.approx(14 / 12)


def test_no_slo_means_every_completed_request_meets_it() -> None:
    summary = summarize(make_records(HAND_ROWS))
    assert summary.goodput.fraction == pytest.approx(6 / 8)
    assert summary.goodput.req_s == summary.throughput_req_s
    assert summary.goodput.tok_s == summary.throughput_tok_s


def test_tenant_slo_overrides_default() -> None:
    # With only a default TTFT objective of 3 s, "a" loses requests 3 and 4, "b" keeps its one.
    summary = summarize(make_records(HAND_ROWS), default_slo=SLO(ttft_s=3.0))
    assert summary.per_tenant["a"].goodput.fraction == pytest.approx(3 / 5)
    assert summary.per_tenant["b"].goodput.fraction == pytest.approx(1 / 3)
    relaxed = summarize(
        make_records(HAND_ROWS), slos={"a": SLO(ttft_s=10.0)}, default_slo=SLO(ttft_s=3.0)
    )
    assert relaxed.per_tenant["a"].goodput.fraction == 1.0


def test_duration_and_engine_override() -> None:
    engine = EngineStats(
        preemptions=7, kv_util_mean=0.4, kv_util_peak=0.95, prefix_cache_hit_rate=0.3
    )
    summary = summarize(make_records(HAND_ROWS), duration_s=60.0, engine=engine)
    assert summary.sim_time_s == 60.0
    assert summary.throughput_tok_s == pytest.approx(30 / 60)
    assert summary.preemptions == 7
    assert (summary.kv_util_mean, summary.kv_util_peak) == (0.4, 0.95)
    # The dict's hit rate is the records' one, not the engine's.
    assert summary.to_dict()["prefix_cache_hit_rate"] == pytest.approx(150 / 700)
    assert summary.to_dict()["kv_utilization"] == {"mean": 0.4, "peak": 0.95}


@pytest.mark.parametrize("duration_s", [0.0, -1.0, NAN])
def test_bad_duration_raises(duration_s: float) -> None:
    with pytest.raises(ValueError, match="duration_s"):
        summarize(make_records(HAND_ROWS), duration_s=duration_s)


def test_to_dict_keys_and_json(hand: Summary) -> None:
    data = hand.to_dict()
    assert set(data) == {
        "requests", "completed", "failed", "cancelled", "sim_time_s", "throughput_tok_s",
        "throughput_req_s", "input_throughput_tok_s", "preemptions", "ttft_s", "tpot_s",
        "e2e_s", "queue_s", "goodput", "kv_utilization", "prefix_cache_hit_rate", "per_tenant",
        "warnings", "slo_concurrency_tpot_s", "slo_concurrency_held",
    }  # fmt: skip
    assert set(data["per_tenant"]["a"]) == {
        "requests", "completed", "ttft_s", "tpot_s", "e2e_s", "queue_s", "goodput",
        "throughput_tok_s",
    }  # fmt: skip
    assert set(data["ttft_s"]) == {"p50", "p90", "p99", "mean"}
    assert set(data["goodput"]) == {"req_s", "tok_s", "fraction"}
    assert data["kv_utilization"] == {"mean": None, "peak": None}
    round_trip = json.loads(json.dumps(data, allow_nan=False))
    assert round_trip["per_tenant"]["a"]["ttft_s"]["p90"] == pytest.approx(4.6)
    assert round_trip["goodput"]["fraction"] == pytest.approx(3 / 8)


def test_empty_records() -> None:
    summary = summarize(RequestRecords().to_numpy())
    assert (summary.requests, summary.completed, summary.per_tenant) == (0, 0, {})
    assert math.isnan(summary.sim_time_s) and math.isnan(summary.throughput_tok_s)
    assert math.isnan(summary.ttft_s.p50) and math.isnan(summary.goodput.fraction)
    data = summary.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["ttft_s"] == {"p50": None, "p90": None, "p99": None, "mean": None}
    assert data["sim_time_s"] is None and data["goodput"]["req_s"] is None


def test_tenant_without_completions_has_undefined_latency() -> None:
    rows = [*HAND_ROWS, Row("c", 1.0, NAN, NAN, 1.5, 0, Outcome.FAILED)]
    summary = summarize(make_records(rows))
    c = summary.per_tenant["c"]
    assert (c.requests, c.completed, c.goodput.fraction, c.throughput_tok_s) == (1, 0, 0.0, 0.0)
    assert all(math.isnan(x) for x in (c.ttft_s.p50, c.tpot_s.p99, c.e2e_s.mean, c.queue_s.p90))
    data = summary.to_dict()["per_tenant"]["c"]
    assert data["e2e_s"]["mean"] is None
    json.dumps(summary.to_dict(), allow_nan=False)
    # Tenant "a"'s figures do not change when another tenant is added.
    assert summary.per_tenant["a"] == summarize(make_records(HAND_ROWS)).per_tenant["a"]


def test_latency_stats_hand_worked_and_nan() -> None:
    assert_stats(latency_stats(np.array([5.0, np.nan, 1.0, 2.0, 4.0, 3.0])), 3.0, 4.6, 4.96, 3.0)
    for empty in (np.array([]), np.array([np.nan, np.nan])):
        stats = latency_stats(empty)
        assert all(math.isnan(x) for x in (stats.p50, stats.p90, stats.p99, stats.mean))


@given(st.lists(st.floats(0.0, 1e4, allow_nan=False), min_size=1, max_size=50))
def test_latency_stats_matches_numpy(values: list[float]) -> None:
    array = np.array(values)
    stats = latency_stats(array)
    expected = np.percentile(array, [50, 90, 99])
    np.testing.assert_allclose([stats.p50, stats.p90, stats.p99], expected, rtol=1e-12, atol=1e-9)
    assert stats.mean == pytest.approx(float(array.mean()))
    assert array.min() <= stats.p50 <= stats.p90 <= stats.p99 <= array.max()
    assert array.min() <= stats.mean <= array.max()


# A generated run: each request's tenant, outcome and delays.
request = st.tuples(
    st.sampled_from(["x", "y", "z"]),
    st.sampled_from(list(Outcome)),
    st.floats(0.0, 100.0),  # arrival
    st.floats(0.0, 5.0),  # queueing
    st.floats(0.0, 5.0),  # scheduled -> first token
    st.floats(0.0, 50.0),  # first token -> finish
    st.integers(1, 64),  # output tokens
)


def rows_of(generated: list[tuple[str, Outcome, float, float, float, float, int]]) -> list[Row]:
    rows = []
    for tenant, outcome, arrival, queue, prefill, decode, output in generated:
        scheduled = arrival + queue
        first = scheduled + prefill
        rows.append(Row(tenant, arrival, scheduled, first, first + decode, output, outcome))
    return rows


@settings(max_examples=60, deadline=None)
@given(st.lists(request, max_size=40), st.floats(0.1, 10.0))
def test_summary_properties(
    generated: list[tuple[str, Outcome, float, float, float, float, int]], ttft_slo_s: float
) -> None:
    records = make_records(rows_of(generated))
    summary = summarize(records, default_slo=SLO(ttft_s=ttft_slo_s))
    tenants = summary.per_tenant.values()
    assert sum(t.completed for t in tenants) == summary.completed == int(records.completed.sum())
    assert sum(t.requests for t in tenants) == summary.requests == len(generated)
    assert summary.completed + summary.failed + summary.cancelled == summary.requests
    json.dumps(summary.to_dict(), allow_nan=False)
    for name, tenant in summary.per_tenant.items():
        mask = records.completed & (records.tenant == records.tenant_names.index(name))
        for stats, column in (
            (tenant.ttft_s, records.ttft_s),
            (tenant.tpot_s, records.tpot_s),
            (tenant.e2e_s, records.e2e_s),
            (tenant.queue_s, records.queue_s),
        ):
            samples = column[mask & ~np.isnan(column)]
            if samples.size == 0:
                assert math.isnan(stats.p50) and math.isnan(stats.mean)
                continue
            assert samples.min() <= stats.p50 <= stats.p90 <= stats.p99 <= samples.max()
            assert samples.min() <= stats.mean <= samples.max()
            np.testing.assert_allclose(
                [stats.p50, stats.p90, stats.p99],
                np.percentile(samples, [50, 90, 99]),
                rtol=1e-9,
                atol=1e-9,
            )
        met = int((mask & (records.ttft_s <= ttft_slo_s)).sum())
        assert tenant.goodput.fraction == pytest.approx(met / tenant.requests)
        assert 0.0 <= tenant.goodput.fraction <= 1.0
