"""Benchmark: a 10-million-row BurstGPT CSV read into the Request stream.

Generates the CSV (seeded, BurstGPT columns, ~1.8% zero-token failures) in a
temporary folder, then in a fresh child process per run: reads it with
``load_trace`` or with the bounded-memory ``stream_trace``, and consumes every
``Request``. Prints the elapsed time and the child's peak RSS for each run and
the median.

    python benchmarks/trace_read.py                  # 10M rows, 3 runs, both modes
    python benchmarks/trace_read.py --rows 1000000 --runs 1 --mode stream
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

TARGET_S = 10.0


def write_burstgpt(path: Path, rows: int, seed: int = 0) -> None:
    """A BurstGPT-format CSV with Gamma arrivals and Zipf-like lengths."""
    rng = np.random.default_rng(seed)
    chunk = 2_000_000
    start = 0.0
    with path.open("wb") as fh:
        for first in range(0, rows, chunk):
            n = min(chunk, rows - first)
            gaps = rng.gamma(0.5, 2 * 0.01, size=n)  # CV ~1.41, 100 req/s
            times = start + np.cumsum(gaps)
            start = float(times[-1])
            prompt = np.minimum(rng.zipf(1.1, size=n), 1024) + rng.integers(0, 600, size=n)
            response = np.minimum(rng.zipf(1.1, size=n), 1024) + rng.integers(0, 300, size=n)
            response[rng.random(n) < 0.018] = 0  # failures
            frame = pl.DataFrame(
                {
                    "Timestamp": np.round(times, 3),
                    "Model": np.where(rng.random(n) < 0.8, "ChatGPT", "GPT-4"),
                    "Request tokens": prompt,
                    "Response tokens": response,
                    "Total tokens": prompt + response,
                    "Log Type": np.where(rng.random(n) < 0.6, "Conversation log", "API log"),
                }
            )
            frame.write_csv(fh, include_header=first == 0)


CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from fairserve.workload import load_trace
from fairserve.workload.readers.stream import stream_trace
path, mode = sys.argv[1], sys.argv[2]
count = tokens = 0
if mode == "load":
    wl = load_trace(path, fmt="burstgpt", tenant_by="model")
    stream = wl.requests()
else:
    stream = stream_trace(path, fmt="burstgpt", tenant_by="model")
for req in stream:
    count += 1
    tokens += req.prompt_tokens
elapsed = time.perf_counter() - t0
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"elapsed_s": elapsed, "peak_rss_mib": peak_kib / 1024, "requests": count, "prompt_tokens": tokens}))
"""


def run_child(path: Path, mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mode", choices=["load", "stream", "both"], default="both")
    args = parser.parse_args()
    modes = ["load", "stream"] if args.mode == "both" else [args.mode]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "burstgpt.csv"
        t0 = time.perf_counter()
        write_burstgpt(path, args.rows)
        size_mib = path.stat().st_size / 2**20
        print(f"wrote {args.rows:,} rows ({size_mib:,.0f} MiB) in {time.perf_counter() - t0:.1f} s")
        for mode in modes:
            results = [run_child(path, mode) for _ in range(args.runs)]
            for r in results:
                print(
                    f"  {mode:6s} {r['elapsed_s']:6.2f} s  peak RSS {r['peak_rss_mib']:7.0f} MiB  "
                    f"{int(r['requests']):,} requests"
                )
            med_s = statistics.median(r["elapsed_s"] for r in results)
            med_rss = statistics.median(r["peak_rss_mib"] for r in results)
            verdict = "OK" if med_s < TARGET_S else "SLOWER THAN TARGET"
            print(
                f"{mode}: median {med_s:.2f} s, peak RSS {med_rss:.0f} MiB over {args.runs} runs "
                f"(target < {TARGET_S:.0f} s: {verdict})"
            )
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} python "
        f"{platform.python_version()}, date {datetime.now(UTC):%Y-%m-%d}"
    )


if __name__ == "__main__":
    main()
