"""Generators: statistical properties on large samples, and determinism.

Tolerances are several standard errors of the estimate for the sample sizes
used (stated per test), so the tests are not flaky yet fail on a wrong formula.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairserve.workload import generate as gen
from fairserve.workload.generate import ConversationShape, TenantMix, synthetic

N = 200_000
FAST = settings(max_examples=15, deadline=None)


def _cv(times: np.ndarray) -> float:
    gaps = np.diff(times)
    return float(gaps.std() / gaps.mean())


@FAST
@given(
    rate=st.floats(0.1, 500.0),
    cv=st.floats(0.3, 3.0),
    seed=st.integers(0, 2**31),
)
def test_gamma_arrivals_match_rate_and_cv(rate: float, cv: float, seed: int) -> None:
    # Relative standard error: mean gap cv/sqrt(N) <= 0.7%; sample CV <= 1%.
    times = gen.gamma_arrivals(N, rate, cv, np.random.default_rng(seed))
    assert np.all(np.diff(times) >= 0)
    empirical_rate = (N - 1) / (times[-1] - times[0])
    assert empirical_rate == pytest.approx(rate, rel=0.03)
    assert _cv(times) == pytest.approx(cv, rel=0.06)


@FAST
@given(rate=st.floats(0.01, 1000.0), seed=st.integers(0, 2**31))
def test_poisson_arrivals_have_cv_one(rate: float, seed: int) -> None:
    times = gen.poisson_arrivals(N, rate, np.random.default_rng(seed))
    assert (N - 1) / (times[-1] - times[0]) == pytest.approx(rate, rel=0.02)
    assert _cv(times) == pytest.approx(1.0, rel=0.02)


@FAST
@given(
    mean=st.floats(50.0, 5000.0),
    sigma=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31),
)
def test_lognormal_lengths_match_mean_and_sigma(mean: float, sigma: float, seed: int) -> None:
    # Standard error of the mean: sqrt(exp(s^2)-1)/sqrt(N) <= 0.3%.
    values = gen.lognormal_lengths(N, mean, sigma, np.random.default_rng(seed), max_tokens=10**9)
    assert values.min() >= 1
    assert values.mean() == pytest.approx(mean, rel=0.02)
    if sigma > 0.2:
        assert np.log(values).std() == pytest.approx(sigma, rel=0.05)


@FAST
@given(a=st.floats(0.8, 2.5), cap=st.integers(10, 5000), seed=st.integers(0, 2**31))
def test_zipf_lengths_match_the_bounded_zipf_moments(a: float, cap: int, seed: int) -> None:
    pmf = gen.zipf_pmf(a, cap)
    k = np.arange(1, cap + 1)
    mean = float((k * pmf).sum())
    second = float((k * k * pmf).sum())
    values = gen.zipf_lengths(N, a, np.random.default_rng(seed), max_tokens=cap)
    assert values.min() >= 1 and values.max() <= cap
    std_err = math.sqrt(second - mean * mean) / math.sqrt(N)
    assert abs(values.mean() - mean) < 5 * std_err
    assert np.mean(values == 1) == pytest.approx(pmf[0], abs=5 * math.sqrt(pmf[0] / N))


def test_onoff_bursts_have_the_long_run_rate_and_are_bursty() -> None:
    rng = np.random.default_rng(4)
    times = gen.onoff_arrivals(N, 20.0, 5.0, 15.0, rng)
    assert np.all(np.diff(times) >= 0)
    expected = 20.0 * 5.0 / (5.0 + 15.0)
    # About 2,000 on/off cycles: the rate estimate is within a few percent.
    assert (N - 1) / (times[-1] - times[0]) == pytest.approx(expected, rel=0.08)
    assert _cv(times) > 1.5


def test_diurnal_rate_follows_the_curve() -> None:
    rng = np.random.default_rng(5)
    times = gen.diurnal_arrivals(2 * 86_400.0, 2.0, rng, amplitude=0.8, peak_s=12 * 3600.0)
    assert len(times) == pytest.approx(2.0 * 2 * 86_400, rel=0.02)
    hour = np.floor(times / 3600) % 24
    peak = np.sum(hour == 12)
    trough = np.sum(hour == 0)
    # rate ratio (1 + 0.8 cos 0) / (1 + 0.8 cos pi) averaged over an hour, about 8.6
    assert 6 < peak / trough < 12


def test_replay_keeps_gaps_and_speeds_up() -> None:
    times = gen.replay_arrivals([10.0, 12.0, 11.0], speedup=2.0)
    assert times.tolist() == [0.0, 0.5, 1.0]


@FAST
@given(
    n=st.integers(0, 2000),
    rate=st.floats(0.1, 100.0),
    arrival=st.sampled_from(["poisson", "gamma"]),
    length=st.sampled_from(["lognormal", "zipf"]),
    seed=st.integers(0, 2**31),
)
def test_same_seed_same_workload(n: int, rate: float, arrival: str, length: str, seed: int) -> None:
    kwargs = {
        "arrival": arrival,
        "cv": 2.0 if arrival == "gamma" else 1.0,
        "length": length,
        "tenants": [("a", 1.0), ("b", 2.0)],
        "seed": seed,
    }
    one = synthetic(n, rate, **kwargs)  # type: ignore[arg-type]
    two = synthetic(n, rate, **kwargs)  # type: ignore[arg-type]
    assert len(one) == n
    for column in ("arrival_s", "prompt_tokens", "output_tokens", "tenant_codes"):
        assert np.array_equal(getattr(one, column), getattr(two, column))
    if n > 50:
        other = synthetic(n, rate, **{**kwargs, "seed": seed + 1})  # type: ignore[arg-type]
        assert not np.array_equal(one.arrival_s, other.arrival_s)


def test_synthetic_tenant_shares_and_configs() -> None:
    wl = synthetic(
        100_000,
        50.0,
        tenants=[TenantMix("gold", 1.0, weight=4, priority=0), TenantMix("free", 3.0, priority=2)],
        seed=2,
    )
    share = float(np.mean(wl.tenant == "gold"))
    assert share == pytest.approx(0.25, abs=0.01)
    first = {r.tenant: r for r in wl.requests()}
    assert first["free"].priority == 2
    assert wl.tenant_config("gold").weight == 4


def test_synthetic_rejects_meaningless_parameters() -> None:
    with pytest.raises(ValueError, match="cv applies to arrival='gamma'"):
        synthetic(10, 1.0, cv=2.0)
    with pytest.raises(ValueError, match="zipf' has no mean"):
        synthetic(10, 1.0, length="zipf", prompt_mean_tokens=100)
    with pytest.raises(ValueError, match="rate_per_s"):
        synthetic(10, 0.0)
    with pytest.raises(ValueError, match="unique"):
        synthetic(10, 1.0, tenants=[("a", 1), ("a", 2)])


def _conversations() -> gen.Workload:
    rng = np.random.default_rng(9)
    starts = gen.poisson_arrivals(400, 1.0, rng)
    return gen.tenant_workload(
        TenantMix("chat"),
        starts,
        lambda n, r: gen.lognormal_lengths(n, 200, 0.5, r, max_tokens=2000),
        lambda n, r: gen.lognormal_lengths(n, 100, 0.5, r, max_tokens=2000),
        rng,
        conversation=ConversationShape(turns_mean=4, think_time_s=10, shared_prefix_tokens=64),
        block_tokens=16,
    )


def test_conversation_prompts_grow_by_the_previous_turns() -> None:
    wl = _conversations()
    assert wl.conversation_id is not None and wl.turn is not None and wl.prefix_hashes is not None
    by_conv: dict[str, list[int]] = {}
    for row, conv in enumerate(wl.conversation_id.tolist()):
        by_conv.setdefault(conv, []).append(row)
    turns = [len(rows) for rows in by_conv.values()]
    assert np.mean(turns) == pytest.approx(4.0, rel=0.15)
    gaps = []
    for rows in by_conv.values():
        assert [int(wl.turn[r]) for r in rows] == list(range(len(rows)))
        assert wl.prompt_tokens[rows[0]] >= 64 + 1
        for a, b in itertools.pairwise(rows):
            # prompt_{k+1} = prompt_k + output_k + new user message (>= 1 token)
            assert wl.prompt_tokens[b] >= wl.prompt_tokens[a] + wl.output_tokens[a] + 1
            gaps.append(wl.arrival_s[b] - wl.arrival_s[a])
            ha, hb = wl.prefix_hashes[a], wl.prefix_hashes[b]
            assert hb[: len(ha)] == ha  # the earlier prompt is a prefix of the later one
    assert np.mean(gaps) == pytest.approx(10.0, rel=0.15)


def test_shared_prefix_blocks_are_shared_across_conversations_only() -> None:
    wl = _conversations()
    assert wl.prefix_hashes is not None and wl.conversation_id is not None
    firsts = {}
    for hashes, conv in zip(wl.prefix_hashes.tolist(), wl.conversation_id.tolist(), strict=True):
        assert len(hashes) == 0 or len(hashes) >= 4
        firsts.setdefault(conv, hashes)
    system = {h[:4] for h in firsts.values()}
    assert len(system) == 1  # 64 shared tokens = 4 blocks of 16, the same for everyone
    owners: dict[int, str] = {}
    for hashes, conv in zip(wl.prefix_hashes.tolist(), wl.conversation_id.tolist(), strict=True):
        for h in hashes[4:]:
            assert owners.setdefault(h, conv) == conv
