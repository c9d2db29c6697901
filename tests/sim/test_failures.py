"""Failed requests are simulated, not dropped: they queue, prefill and hold KV blocks, then
end as failed with no output; both engines agree on them."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fairserve.core.model import FAILED_AFTER_PROMPT, Outcome, Request
from fairserve.metrics.records import OUTCOME_CODES
from fairserve.sim.config import EngineConfig
from fairserve.sim.engine import Engine
from fairserve.sim.stepper import StepEngine
from fairserve.workload.base import Workload
from tests.sim.factories import config, run
from tests.sim.test_engine_properties import (
    SETTINGS,
    assert_exactly_once_and_conserved,
    assert_same_records,
    scenarios,
    simulate,
)

FAILED = OUTCOME_CODES.index(Outcome.FAILED)


@st.composite
def failing_scenarios(draw: st.DrawFn) -> tuple[list[Request], EngineConfig, int, int]:
    reqs, cfg, instances, cap = draw(scenarios())
    flags = draw(st.lists(st.booleans(), min_size=len(reqs), max_size=len(reqs)))
    return (
        [dataclasses.replace(r, fails=f) for r, f in zip(reqs, flags, strict=True)],
        cfg,
        instances,
        cap,
    )


@given(failing_scenarios())
@SETTINGS
def test_both_engines_agree_on_requests_that_fail(
    scenario: tuple[list[Request], EngineConfig, int, int],
) -> None:
    reqs, cfg, instances, cap = scenario
    fast, fast_engines = simulate(Engine, reqs, cfg, instances, cap)
    ref, _ = simulate(StepEngine, reqs, cfg, instances, cap)
    assert_same_records(fast, ref, instance=True)
    assert_exactly_once_and_conserved(fast, reqs, fast_engines)  # type: ignore[arg-type]
    failing = {r.id for r in reqs if r.fails}
    for rid, outcome, out in zip(
        fast.request_id.tolist(), fast.outcome.tolist(), fast.output_tokens.tolist(), strict=True
    ):
        if rid in failing:
            assert outcome == FAILED and out == 0


def _workload(failed: list[bool]) -> Workload:
    n = len(failed)
    return Workload.from_arrays(
        np.arange(n) * 0.05, np.full(n, 2000), np.where(failed, 0, 200), failed=failed
    )


def test_a_failed_request_costs_its_prompt_and_delays_the_others() -> None:
    failed = [i % 3 == 0 for i in range(60)]
    wl = _workload(failed)
    cfg = config(max_num_seqs=8)
    kept = run(list(wl.requests()), cfg)
    dropped = run(list(wl.drop_failed().requests()), cfg)
    rec = kept.records
    fails = rec.outcome == FAILED
    assert int(fails.sum()) == sum(failed)
    assert set(kept.failure_reasons.values()) == {FAILED_AFTER_PROMPT}
    # Served up to their prompt: scheduled, no first token, ended after scheduling.
    assert np.isnan(rec.first_token_s[fails]).all()
    assert (rec.finish_s[fails] > rec.first_scheduled_s[fails]).all()
    assert (rec.output_tokens[fails] == 0).all()
    # Their prompts took engine time: the other requests wait longer than with them dropped.
    ok = rec.outcome != FAILED
    ttft_kept = float(np.mean(rec.first_token_s[ok] - rec.arrival_s[ok]))
    d = dropped.records
    ttft_dropped = float(np.mean(d.first_token_s - d.arrival_s))
    assert ttft_kept > 1.05 * ttft_dropped
    # The engine's busy time holds their prefills: the run ends later with them.
    assert float(rec.finish_s.max()) > float(d.finish_s.max())
    summary = kept.summary()
    assert summary.failed == sum(failed) and summary.completed == 60 - sum(failed)
    ttft = summary.to_dict()["ttft_s"]  # of the completed requests only
    assert ttft["p50"] is not None and not math.isnan(ttft["p50"])
