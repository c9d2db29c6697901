"""Fairness figures on hand-built records."""

from __future__ import annotations

import pytest

from fairserve.core.model import Outcome
from fairserve.metrics.fairness import fairness
from fairserve.metrics.records import RecordArrays, RequestRecords


def build(rows: list[tuple[str, float, float, float, int, int]]) -> RecordArrays:
    """Rows of (tenant, arrival, first scheduled, finish, prompt, output)."""
    records = RequestRecords()
    for i, (tenant, arrival, sched, finish, prompt, output) in enumerate(rows):
        records.add(i, tenant, 0, Outcome.COMPLETED, arrival, sched, sched + 0.01, finish,
                    prompt, output, 0, 0)  # fmt: skip
    return records.to_numpy()


def backlogged_pair(share_b: float) -> RecordArrays:
    """Two tenants with requests queued from t=0, served one after another for 100 s.

    Each request takes 1 s; tenant a gets 1 - share_b of the service.
    """
    rows = []
    n_b = round(100 * share_b)
    for k in range(100):
        tenant = "b" if k % round(100 / max(n_b, 1)) == 0 and n_b else "a"
        rows.append((tenant, 0.0, float(k), float(k + 1), 100, 50))
    # Both keep a request waiting until the end.
    rows.append(("a", 0.0, 100.0, 101.0, 100, 50))
    rows.append(("b", 0.0, 100.0, 101.0, 100, 50))
    return build(rows)


def test_equal_service_is_fair() -> None:
    fair = fairness(backlogged_pair(0.5), window_s=10.0)
    assert fair.jain == pytest.approx(1.0, abs=1e-9)
    assert fair.max_service_diff <= 200 + 1e-6  # one request of 100 + 2 x 50 at most
    assert fair.worst_wait_s == pytest.approx(100.0)


def test_skewed_service_lowers_jain_and_grows_the_difference() -> None:
    fair = fairness(backlogged_pair(0.1), window_s=10.0)
    # Per 10 s window: a gets 9 requests, b 1: Jain = (10)^2 / (2 * (81 + 1)).
    assert fair.jain == pytest.approx(100 / 164, rel=1e-6)
    # a is ahead by 8 requests of 200 service units a window, over the 100 s in
    # which both have a request queued (until the last two are scheduled at t=100).
    assert fair.max_service_diff == pytest.approx(8 * 200 * 10, rel=1e-9)
    # Within any 10 s: at most 9 requests' worth ([91, 101): a's last 9, no b).
    assert fair.max_window_service_diff == pytest.approx(9 * 200, rel=1e-6)
    assert fair.to_dict()["window_s"] == 10.0


def test_weights_scale_the_service() -> None:
    # a gets 2/3 of the service with weight 2: weighted service is equal.
    rows = []
    for k in range(99):
        rows.append(("b" if k % 3 == 2 else "a", 0.0, float(k), float(k + 1), 100, 50))
    rows += [("a", 0.0, 99.0, 100.0, 100, 50), ("b", 0.0, 99.0, 100.0, 100, 50)]
    fair = fairness(build(rows), {"a": 2.0, "b": 1.0}, window_s=3.0)
    assert fair.jain == pytest.approx(1.0, abs=1e-9)


def test_no_completed_request_gives_nan() -> None:
    import math

    fair = fairness(RequestRecords().to_numpy())
    assert math.isnan(fair.jain) and fair.to_dict()["jain"] is None


def test_a_tenant_served_on_arrival_is_never_backlogged() -> None:
    # The heavy tenant always has requests queued and takes most of the engine;
    # the light one's requests are scheduled the moment they arrive. Its whole
    # demand is served, so there is no unfairness to it to count.
    rows = [("heavy", 0.0, float(k), float(k + 1), 100, 500) for k in range(100)]
    rows.append(("heavy", 0.0, 100.0, 101.0, 100, 500))
    rows += [("light", float(k), float(k), float(k) + 0.5, 100, 5) for k in range(0, 100, 10)]
    fair = fairness(build(rows), window_s=10.0)
    assert fair.max_service_diff == 0.0 and fair.max_window_service_diff == 0.0
    assert fair.windows == 0  # never two tenants backlogged at once


def test_service_is_attributed_to_the_steps_that_did_it() -> None:
    # b's request: a 1,000-token prefill in its first second, then 10 s of decode.
    # a's request is queued during b's prefill only: the difference counts the
    # prefill, not a tenth of b's whole service.
    records = RequestRecords()
    records.add(0, "b", 0, Outcome.COMPLETED, 0.0, 0.0, 1.0, 11.0, 1000, 10, 0, 0)
    records.add(1, "a", 0, Outcome.COMPLETED, 0.0, 1.0, 1.5, 2.0, 10, 10, 0, 0)
    records.add(2, "b", 0, Outcome.COMPLETED, 0.0, 1.0, 1.5, 2.0, 10, 10, 0, 0)
    fair = fairness(records.to_numpy(), window_s=1.0)
    # Both backlogged over [0, 1): b is served its 1,000-token prompt, a nothing.
    assert fair.max_service_diff == pytest.approx(1000.0, rel=1e-6)


def test_client_records_without_a_scheduled_time_count_until_the_first_token() -> None:
    """A client (fairserve bench) sees no scheduling time: a request counts as queued
    until its first token, and the skew is still seen (it used to read as Jain 1)."""
    seen = backlogged_pair(0.1)
    records = RequestRecords()
    for i in range(len(seen.arrival_s)):
        records.add(i, seen.tenant_names[seen.tenant[i]], 0, Outcome.COMPLETED,
                    float(seen.arrival_s[i]), float("nan"), float(seen.first_token_s[i]),
                    float(seen.finish_s[i]), int(seen.prompt_tokens[i]),
                    int(seen.output_tokens[i]), 0, 0)  # fmt: skip
    client = fairness(records.to_numpy(), window_s=10.0)
    assert client.jain == pytest.approx(fairness(seen, window_s=10.0).jain, rel=0.02)
    assert client.jain < 0.7
