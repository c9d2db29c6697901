"""UWFQ's small-job claim under bursty overload with a real (history) predictor and the oracle.

``fairserve.experiments.studies.BurstyMisprediction``: a tenant whose bursts of
large requests arrive under-predicted twenty-fold beside two steady tenants of
small requests. Mean E2E of small requests (all, and the steady tenants') under
fifo, vtc, uwfq and fair-sjf. Writes benchmarks/results/uwfq_misprediction.json.

    FAIRSERVE_PURE_PYTHON=1 .venv/bin/python benchmarks/uwfq_misprediction.py
"""

from __future__ import annotations

import json
from pathlib import Path

from fairserve.experiments.studies import BurstyMisprediction


def main() -> None:
    study = BurstyMisprediction()
    rows = []
    for policy in ("fifo", "vtc", "uwfq", "fair-sjf"):
        for predictor in ("history", "oracle"):
            row = {"policy": policy, "predictor": predictor,
                   **{k: round(v, 2) for k, v in study.small_job_e2e_s(policy, predictor).items()}}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(__file__).parent / "results" / "uwfq_misprediction.json"
    out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
