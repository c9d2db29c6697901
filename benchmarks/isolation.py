"""Isolation of a light tenant from a flooding one, per policy.

Two scenarios on one Llama-3.1-8B / H100-80GB engine behind the policy's global
queue (engine queue of 1):

- decode-heavy flood: the heavy tenant sends 100 req/s of short prompts and
  long answers (about 2.9x what the engine sustains), max_num_seqs 128;
- prefill-heavy flood: 150 req/s of 500-token prompts and 150-token answers,
  max_num_seqs 256 (vLLM's default), where every step carries a full chunk of
  prefill and slows every decode.

The light tenant sends 1 req/s in both. Prints the light tenant's E2E p50/p99
and the ratio of its p99 to its p99 alone (same requests, same engine), and
writes benchmarks/results/isolation.json.

    .venv/bin/python benchmarks/isolation.py
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from fairserve.experiments.studies import Flood, isolation

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ("fifo", "priority", "sjf", "wrr", "vtc", "uwfq", "fair-sjf")
SCENARIOS = {
    "decode-heavy flood (max_num_seqs 128)": Flood(),
    "prefill-heavy flood (max_num_seqs 256)": Flood(
        heavy_rate_per_s=150.0,
        heavy_prompt_tokens=500.0,
        heavy_output_tokens=150.0,
        light_prompt_tokens=500.0,
        max_num_seqs=256,
    ),
}


def main() -> None:
    report: dict[str, object] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": "python benchmarks/isolation.py",
    }
    for name, flood in SCENARIOS.items():
        rows = isolation(flood, POLICIES)
        print(
            f"\n{name}: light 1 req/s, heavy {flood.heavy_rate_per_s:g} req/s, {flood.duration_s:g} s"
        )
        print(
            f"{'policy':10} {'light p50 s':>12} {'light p99 s':>12} {'p99 / alone':>12} {'heavy req/s':>12}"
        )
        for r in rows:
            print(
                f"{r.policy:10} {r.light_p50_e2e_s:12.2f} {r.light_p99_e2e_s:12.2f} "
                f"{r.p99_ratio:12.2f} {r.heavy_throughput_req_s:12.1f}"
            )
        print(f"light alone: p99 {rows[0].alone_p99_e2e_s:.2f} s")
        report[name] = {
            "flood": asdict(flood),
            "results": [asdict(r) | {"p99_ratio": r.p99_ratio} for r in rows],
        }
    out = ROOT / "benchmarks" / "results" / "isolation.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
