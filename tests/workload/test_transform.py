"""Transforms: windows, scaling, merging, tenant assignment, sampling."""

from __future__ import annotations

import numpy as np
import pytest

from fairserve.core.model import Tenant
from fairserve.workload import TraceError, Workload
from fairserve.workload import transform as tf
from fairserve.workload.generate import synthetic
from fairserve.workload.stats import compute_stats


def test_window_selects_half_open_interval_and_rebases() -> None:
    wl = Workload.from_arrays([0, 1, 2, 3, 4], [1] * 5, [1] * 5)
    out = tf.window(wl, 1, 3)
    assert out.arrival_s.tolist() == [0.0, 1.0]
    assert tf.window(wl, 1, 3, rebase=False).arrival_s.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="start_s < end_s"):
        tf.window(wl, 3, 1)


def test_scale_to_rate_hits_the_target() -> None:
    wl = synthetic(5000, 3.0, seed=1)
    out = tf.scale_to_rate(wl, 12.0)
    assert compute_stats(out)["rate_per_s"] == pytest.approx(12.0)
    assert np.array_equal(out.prompt_tokens, wl.prompt_tokens)


def test_scale_to_load_sets_offered_tokens() -> None:
    wl = synthetic(5000, 3.0, seed=1)
    out = tf.scale_to_load(wl, 0.5, 10_000.0)
    tokens = wl.prompt_tokens.sum() + wl.output_tokens.sum()
    assert tokens / out.duration_s == pytest.approx(5_000.0)
    weighted = tf.scale_to_load(wl, 1.0, 10_000.0, prompt_weight=1.0, output_weight=2.0)
    work = wl.prompt_tokens.sum() + 2 * wl.output_tokens.sum()
    assert work / weighted.duration_s == pytest.approx(10_000.0)


def test_merge_as_tenants_aligns_starts() -> None:
    a = Workload.from_arrays([100.0, 101.0], [1, 2], [1, 1], meta={"source": "a"})
    b = Workload.from_arrays([5.0, 5.5, 7.0], [3, 4, 5], [1, 1, 1], ["x", "y", "x"])
    merged = tf.merge({"code": a, "conv": b})
    assert merged.arrival_s.tolist() == [0.0, 0.0, 0.5, 1.0, 2.0]
    assert merged.tenant.tolist() == ["code", "conv/x", "conv/y", "code", "conv/x"]
    assert compute_stats(merged)["tenants"] == {"code": 0.4, "conv/x": 0.4, "conv/y": 0.2}


def test_merge_rejects_mixed_prefix_block_sizes() -> None:
    a = Workload.from_arrays([0], [600], [1], prefix_hashes=[(1,)], prefix_block_tokens=512)
    b = Workload.from_arrays([0], [600], [1], prefix_hashes=[(1,)], prefix_block_tokens=16)
    with pytest.raises(TraceError, match="different prefix block sizes"):
        tf.merge({"a": a, "b": b})


def test_tenants_by_hash_is_stable_and_proportional() -> None:
    wl = synthetic(20_000, 10.0, seed=3)
    out = tf.tenants_by_hash(wl, {"a": 1.0, "b": 3.0})
    again = tf.tenants_by_hash(wl, {"a": 1.0, "b": 3.0})
    assert np.array_equal(out.tenant_codes, again.tenant_codes)
    assert np.mean(out.tenant == "a") == pytest.approx(0.25, abs=0.02)


def test_tenants_by_hash_keeps_conversations_together() -> None:
    wl = Workload.from_arrays(
        np.arange(6.0), [1] * 6, [1] * 6, conversation_id=["c1", "c2", "c1", "c3", "c2", "c1"]
    )
    out = tf.tenants_by_hash(wl, ["p", "q", "r"], key="conversation_id")
    per_conv: dict[str, set[str]] = {}
    for conv, tenant in zip(wl.conversation_id.tolist(), out.tenant.tolist(), strict=True):  # type: ignore[union-attr]
        per_conv.setdefault(conv, set()).add(tenant)
    assert all(len(t) == 1 for t in per_conv.values())


def test_tenants_by_column_model() -> None:
    wl = Workload.from_arrays([0, 1], [1, 1], [1, 1], model=["m1", "m2"])
    assert tf.tenants_by_column(wl, "model").tenant.tolist() == ["m1", "m2"]
    with pytest.raises(TraceError, match="no 'conversation_id' column"):
        tf.tenants_by_column(wl, "conversation_id")


def test_sample_fraction_and_count() -> None:
    wl = synthetic(10_000, 10.0, seed=3)
    half = tf.sample(wl, fraction=0.5, seed=1)
    assert len(half) == pytest.approx(5000, abs=250)
    assert np.all(np.diff(half.arrival_s) >= 0)
    assert len(tf.sample(wl, n=123)) == 123
    with pytest.raises(ValueError, match="exactly one"):
        tf.sample(wl)


def test_tenant_configs_must_name_existing_tenants() -> None:
    wl = Workload.from_arrays([0], [1], [1], "a")
    out = tf.with_tenant_configs(wl, [Tenant("a", weight=3)])
    assert out.tenant_config("a").weight == 3
    with pytest.raises(TraceError, match=r"tenant config for \['zz'\]"):
        tf.with_tenant_configs(wl, [Tenant("zz")])
