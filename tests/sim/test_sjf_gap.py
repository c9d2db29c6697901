"""SJF with a real predictor against FIFO and the SRPT oracle on Azure conversation lengths."""

from __future__ import annotations

import numpy as np

from fairserve.experiments.studies import SjfGap, gap_closed
from fairserve.workload import load_trace
from tests.traces import real_trace


def test_sjf_on_predicted_work_closes_most_of_the_gap_to_srpt() -> None:
    trace = real_trace("azure-llm-2023/AzureLLMInferenceTrace_conv.csv")
    wl = load_trace(trace)
    # 95% of saturated throughput, Gamma CV 2 arrivals, max_num_seqs 64.
    gap = SjfGap(np.asarray(wl.prompt_tokens), np.asarray(wl.output_tokens), requests=4000)
    fifo, oracle = gap.mean_e2e_s("fifo"), gap.mean_e2e_s("oracle-srpt")
    assert oracle < 0.97 * fifo  # there is a real gap to close at this load
    history = gap.mean_e2e_s("sjf", "history", policy_params={"prompt_weight": 1.0})
    assert gap_closed(fifo, oracle, history) >= 0.6
