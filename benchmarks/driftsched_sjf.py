"""DriftSched's SJF claim on a DriftSched-like setup: median E2E down, P99 not up, against FIFO.

Three tenants with priorities and heterogeneous lengths on one Llama-3.1-8B/L4
engine (``fairserve.experiments.studies.DriftSchedMix``), at three total
arrival rates; plain SJF (``max_wait_s=null``), the default ``sjf`` (wait cap
30 s) and two other caps. Writes benchmarks/results/driftsched_sjf.json.

    FAIRSERVE_PURE_PYTHON=1 .venv/bin/python benchmarks/driftsched_sjf.py
"""

from __future__ import annotations

import json
from pathlib import Path

from fairserve.experiments.studies import DriftSchedMix

POLICIES = ("fifo", "sjf:max_wait_s=null", "sjf", "sjf:max_wait_s=45", "sjf:max_wait_s=60",
            "priority:level=tenant")  # fmt: skip
RATES = (0.8, 0.9, 1.0)


def main() -> None:
    rows = []
    for rate in RATES:
        mix = DriftSchedMix(rate_per_s=rate)
        fifo = mix.e2e_s("fifo")
        for policy in POLICIES:
            e2e = fifo if policy == "fifo" else mix.e2e_s(policy)
            row = {
                "rate_per_s": rate,
                "policy": policy,
                **{f"e2e_{k}_s": round(v, 2) for k, v in e2e.items()},
                "p50_vs_fifo": round(e2e["p50"] / fifo["p50"] - 1, 4),
                "p99_vs_fifo": round(e2e["p99"] / fifo["p99"] - 1, 4),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(__file__).parent / "results" / "driftsched_sjf.json"
    out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
