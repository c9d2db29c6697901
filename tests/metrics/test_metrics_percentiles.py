"""Grouped percentiles against numpy's own, group by group."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fairserve.metrics.percentiles import group_samples, sorted_percentiles

QS = np.array([0.0, 50.0, 90.0, 99.0, 100.0])

finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
sample = st.tuples(st.integers(0, 4), st.one_of(finite, st.just(float("nan"))))


def test_hand_worked_groups() -> None:
    values = np.array([5.0, 1.0, np.nan, 4.0, 2.0, 3.0, 10.0])
    codes = np.array([0, 0, 0, 0, 0, 2, 2])
    samples = group_samples(values, codes, 4)
    assert samples.values.tolist() == [1.0, 2.0, 4.0, 5.0, 3.0, 10.0]
    assert samples.overall.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 10.0]
    assert samples.counts.tolist() == [4, 0, 2, 0]
    assert samples.starts.tolist() == [0, 4, 4, 6]
    assert samples.sums.tolist() == [12.0, 0.0, 13.0, 0.0]
    got = sorted_percentiles(samples.values, samples.starts, samples.counts, np.array([50.0, 90.0]))
    # group 0: [1, 2, 4, 5], index 1.5 -> 3.0 and index 2.7 -> 4.7; group 2: [3, 10]
    assert got[0] == pytest.approx([3.0, 4.7])
    assert got[2] == pytest.approx([6.5, 9.3])
    assert np.isnan(got[1]).all() and np.isnan(got[3]).all()


def test_no_samples_at_all() -> None:
    samples = group_samples(np.array([np.nan, np.nan]), np.array([0, 1]), 2)
    assert samples.values.size == 0 and samples.counts.tolist() == [0, 0]
    got = sorted_percentiles(samples.values, samples.starts, samples.counts, QS)
    assert got.shape == (2, QS.size) and np.isnan(got).all()


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        group_samples(np.zeros(3), np.zeros(2, dtype=np.int64), 1)


@given(st.lists(sample, max_size=60))
def test_matches_numpy_per_group(rows: list[tuple[int, float]]) -> None:
    codes = np.array([c for c, _ in rows], dtype=np.int64)
    values = np.array([v for _, v in rows], dtype=np.float64)
    samples = group_samples(values, codes, 5)
    got = sorted_percentiles(samples.values, samples.starts, samples.counts, QS)
    for group in range(5):
        mine = values[(codes == group) & ~np.isnan(values)]
        if mine.size == 0:
            assert np.isnan(got[group]).all()
            continue
        np.testing.assert_allclose(got[group], np.percentile(mine, QS), rtol=1e-12, atol=1e-9)
        # Exact, not approximate: ordered and within the samples' range.
        assert got[group][0] == mine.min() and got[group][-1] == mine.max()
        assert (np.diff(got[group]) >= 0).all()
