"""Readers on the real public traces in ../shared/traces (skipped when absent).

Every expected value is computed here independently with the csv/json modules.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from fairserve.workload import load_trace
from fairserve.workload.stats import compute_stats

from .conftest import real_trace


def _azure_rows(path: Path) -> tuple[list[float], list[int], list[int]]:
    times, prompt, output = [], [], []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            stamp = row["TIMESTAMP"]
            head, frac = stamp.split(".")
            moment = datetime.strptime(head, "%Y-%m-%d %H:%M:%S")
            times.append(moment.timestamp() + float("0." + frac))
            prompt.append(int(row["ContextTokens"]))
            output.append(int(row["GeneratedTokens"]))
    return times, prompt, output


@pytest.mark.parametrize(("name", "rows"), [("conv", 19_366), ("code", 8_819)])
def test_azure_2023_counts_and_stats(name: str, rows: int) -> None:
    path = real_trace(f"azure-llm-2023/AzureLLMInferenceTrace_{name}.csv")
    wl = load_trace(path)
    times, prompt, output = _azure_rows(path)
    assert len(wl) == rows == len(times)
    order = sorted(range(rows), key=lambda i: times[i])
    gaps = [times[order[i + 1]] - times[order[i]] for i in range(rows - 1)]
    duration = times[order[-1]] - times[order[0]]
    stats = compute_stats(wl)
    assert stats["requests"] == rows
    assert stats["duration_s"] == pytest.approx(duration, abs=1e-5)
    assert stats["rate_per_s"] == pytest.approx((rows - 1) / duration, rel=1e-9)
    cv = statistics.pstdev(gaps) / statistics.fmean(gaps)
    assert stats["interarrival_cv"] == pytest.approx(cv, rel=1e-6)
    assert stats["prompt_tokens"]["mean"] == pytest.approx(statistics.fmean(prompt))
    assert stats["output_tokens"]["mean"] == pytest.approx(statistics.fmean(output))
    assert stats["prompt_tokens"]["p50"] == pytest.approx(statistics.median(prompt))
    # p99 with linear interpolation, computed by hand.
    ordered = sorted(output)
    pos = 0.99 * (rows - 1)
    lo = math.floor(pos)
    p99 = ordered[lo] + (ordered[min(lo + 1, rows - 1)] - ordered[lo]) * (pos - lo)
    assert stats["output_tokens"]["p99"] == pytest.approx(p99)
    assert stats["tenants"] == {"default": 1.0}
    assert sum(wl.prompt_tokens.tolist()) == sum(prompt)


def test_mooncake_synthetic_counts_and_prefix_reuse() -> None:
    path = real_trace("mooncake-synthetic/synthetic_trace.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    wl = load_trace(path)
    assert len(wl) == len(records) == 3_993
    seen: set[int] = set()
    reused = total = 0
    for r in sorted(records, key=lambda r: r["timestamp"]):
        for h in r["hash_ids"]:
            total += 1
            reused += h in seen
            seen.add(h)
    stats = compute_stats(wl)
    assert stats["prefix_reuse_ratio"] == pytest.approx(reused / total)
    assert 0.6 < stats["prefix_reuse_ratio"] < 0.7  # the README says 64%
    assert stats["duration_s"] == pytest.approx(
        (max(r["timestamp"] for r in records) - min(r["timestamp"] for r in records)) / 1000
    )
    assert stats["prompt_tokens"]["mean"] == pytest.approx(
        statistics.fmean(r["input_length"] for r in records)
    )
    assert wl.prefix_hashes is not None
    assert sum(len(h) for h in wl.prefix_hashes.tolist()) == total


def test_sharegpt_lengths_as_an_empirical_distribution() -> None:
    """The Llama-2 ShareGPT length table has no timestamps: it feeds empirical lengths."""
    path = real_trace("sharegpt-lengths/sharegpt_8k_filtered_stats_llama2_tokenizer.csv")
    from fairserve.workload.generate import empirical_lengths

    with path.open(newline="") as fh:
        decode = [int(r["num_decode_tokens"]) for r in csv.DictReader(fh)]
    assert len(decode) == 30_731
    drawn = empirical_lengths(200_000, decode, np.random.default_rng(1))
    assert set(np.unique(drawn).tolist()) <= set(decode)
    assert drawn.mean() == pytest.approx(statistics.fmean(decode), rel=0.02)


def test_servegen_real_folder_window_by_window() -> None:
    folder = real_trace("servegen/language/m-small")
    client = "0"
    trace_csv = folder / f"chunk-{client}-trace.csv"
    with trace_csv.open(newline="") as fh:
        windows = [r for r in csv.reader(fh) if r]
    # The busiest window of client 0: the sampled rate must match the file's.
    busiest = max(windows, key=lambda r: float(r[1]))
    start = float(busiest[0])
    wl = load_trace(trace_csv, start_s=start, duration_s=600, seed=3)
    expected = float(busiest[1]) * 600
    assert abs(len(wl) - expected) < 6 * math.sqrt(expected) * max(1.0, float(busiest[2]))
    assert wl.tenant_names() == (f"client-{client}",)
    again = load_trace(trace_csv, start_s=start, duration_s=600, seed=3)
    assert np.array_equal(wl.arrival_s, again.arrival_s)
    # The lengths come from the dataset histogram's support.
    hists = json.loads((folder / f"chunk-{client}-dataset.json").read_text())
    support: set[int] = set()
    for entry in hists.values():
        support |= {
            int(k)
            for k in entry["input_tokens"].strip("{}").split(", ")
            for k in [k.split(":")[0]]
            if k
        }
    assert set(wl.prompt_tokens.tolist()) <= support | {1}


def test_servegen_real_folder_skips_clients_without_datasets() -> None:
    folder = real_trace("servegen/language/m-small")
    traces = {p.name.split("-")[1] for p in folder.glob("chunk-*-trace.csv")}
    datasets = {p.name.split("-")[1] for p in folder.glob("chunk-*-dataset.json")}
    wl = load_trace(folder, start_s=12 * 3600, duration_s=60)
    assert wl.meta["clients_skipped"] == len(traces - datasets)
    assert set(wl.tenant_names()) <= {f"client-{c}" for c in datasets}
