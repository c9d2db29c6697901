"""SJF with a real predictor against FIFO, the SRPT oracle and the lower bound on Azure conversation lengths."""

from __future__ import annotations

import numpy as np
import pytest

from fairserve.experiments.studies import SjfGap, gap_closed
from fairserve.workload import load_trace
from tests.traces import real_trace


def test_sjf_gap_against_a_bound_that_is_a_bound() -> None:
    trace = real_trace("azure-llm-2023/AzureLLMInferenceTrace_conv.csv")
    wl = load_trace(trace)
    # 95% of saturated throughput, Gamma CV 2 arrivals, max_num_seqs 64.
    gap = SjfGap(np.asarray(wl.prompt_tokens), np.asarray(wl.output_tokens), requests=4000)
    fifo, oracle = gap.mean_e2e_s("fifo"), gap.mean_e2e_s("oracle-srpt")
    bound = gap.bound_mean_e2e_s()
    assert bound < oracle < fifo
    # With a cost per running sequence per step (the shipped profile), a request's
    # cost is mostly the decode steps it holds a slot for: ordering by the true
    # output beats ordering by prompt + output (docs/policies.md has the full-size run).
    output_only = gap.mean_e2e_s("sjf", "noisy-oracle", {"sigma": 0.0}, {"prompt_weight": 0.0})
    history = gap.mean_e2e_s("sjf", "history", policy_params={"prompt_weight": 1.0})
    assert output_only < oracle
    closed = [gap_closed(fifo, bound, v) for v in (oracle, output_only, history)]
    assert all(0.0 <= c <= 1.0 for c in closed)
    assert closed[1] > closed[0]  # the queue-level SRPT oracle is not the best order


def test_gap_closed_stays_in_the_unit_interval() -> None:
    assert gap_closed(10.0, 4.0, 7.0) == 0.5
    assert gap_closed(10.0, 4.0, 4.0) == 1.0
    assert gap_closed(10.0, 4.0, 12.0) == 0.0  # worse than the reference
    assert gap_closed(4.0, 4.0, 4.0) == 1.0
    with pytest.raises(ValueError, match="below the lower bound"):
        gap_closed(10.0, 4.0, 3.0)
