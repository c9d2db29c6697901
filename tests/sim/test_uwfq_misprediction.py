"""uwfq and fair-sjf stay fair when a burst arrives under-predicted (UWFQ's small-job claim)."""

from __future__ import annotations

import pytest

from fairserve.experiments.studies import BurstyMisprediction


@pytest.fixture(scope="module")
def study() -> BurstyMisprediction:
    return BurstyMisprediction()


@pytest.fixture(scope="module")
def vtc(study: BurstyMisprediction) -> dict[str, float]:
    return study.small_job_e2e_s("vtc")


@pytest.mark.parametrize("policy", ["uwfq", "fair-sjf"])
def test_small_jobs_within_1_2x_of_vtc_with_the_history_predictor(
    study: BurstyMisprediction, vtc: dict[str, float], policy: str
) -> None:
    # benchmarks/results/uwfq_misprediction.json: before re-tagging, uwfq's steady
    # tenants' small jobs took 12.38 s against vtc's 3.79 s.
    got = study.small_job_e2e_s(policy)
    assert got["steady_small_mean_s"] <= 1.2 * vtc["steady_small_mean_s"]
    assert got["small_mean_s"] <= 1.2 * vtc["small_mean_s"]
