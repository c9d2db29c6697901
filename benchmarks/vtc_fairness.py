"""VTC's claim: the service difference of backlogged tenants stays bounded (fifo's grows).

Two tenants on one Llama-3.1-8B/H100 engine behind the policy's global queue
(``studies.Flood`` with a second heavy sender): ``heavy`` sends 100 req/s,
``light`` 10 req/s of the same requests (100-token prompts, 400-token answers),
both far above their share of the ~6 req/s the engine completes, so both stay
backlogged. Fairness (``metrics.fairness``: backlog exact in time, service
attributed to prefill and decode) over the first half and the whole run.
Writes benchmarks/results/vtc_fairness.json.

    FAIRSERVE_PURE_PYTHON=1 .venv/bin/python benchmarks/vtc_fairness.py
"""

from __future__ import annotations

import json
from pathlib import Path

from fairserve.experiments.studies import Flood
from fairserve.metrics.fairness import fairness
from fairserve.sim.run import simulate


def main() -> None:
    flood = Flood(light_rate_per_s=10.0, light_prompt_tokens=100.0, light_output_tokens=400.0)
    rows = []
    for policy in ("fifo", "vtc"):
        records = simulate(flood.workload().requests(), flood.config(policy)).records
        half = records.select(records.arrival_s < flood.duration_s / 2)
        full_fair, half_fair = fairness(records, window_s=1.0), fairness(half, window_s=1.0)
        row = {
            "policy": policy,
            "max_service_diff_half": round(half_fair.max_service_diff),
            "max_service_diff_full": round(full_fair.max_service_diff),
            "max_window_service_diff": round(full_fair.max_window_service_diff),
            "jain": round(full_fair.jain, 4),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(__file__).parent / "results" / "vtc_fairness.json"
    out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
