"""Workload realism in the readers and ``trace stats``: ServeGen clients that cannot be
sampled, batched timestamps, the last rate bin, conversation statistics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fairserve.workload import TraceError, load_trace
from fairserve.workload.base import Workload
from fairserve.workload.stats import (
    compute_stats,
    conversation_stats,
    rate_over_time,
    timestamp_batching,
)

HIST = {"0": {"input_tokens": "{100: 1.0}", "output_tokens": "{10: 1.0}"}}


def servegen_folder(root: Path) -> Path:
    """Client 1 usable (2 req/s); 2 with an empty dataset (3 req/s), 3 with none (5 req/s),
    4 with one that is not JSON (10 req/s, for half of the hour)."""
    folder = root / "sg"
    folder.mkdir()
    rates = {"1": "2", "2": "3", "3": "5", "4": "10"}
    for client, rate in rates.items():
        rows = [f"{w * 600},{rate},1.0,Gamma,1,1" for w in range(6)]
        if client == "4":
            rows = rows[:3] + [f"{w * 600},0,0,,0,0" for w in range(3, 6)]
        (folder / f"chunk-{client}-trace.csv").write_text("\n".join(rows) + "\n")
    (folder / "chunk-1-dataset.json").write_text(json.dumps(HIST))
    (folder / "chunk-2-dataset.json").write_text("")
    (folder / "chunk-4-dataset.json").write_text("{not json")
    return folder


def test_servegen_skips_unusable_clients_naming_each_with_its_share(tmp_path: Path) -> None:
    folder = servegen_folder(tmp_path)
    wl = load_trace(folder, duration_s=3600)
    assert wl.tenant_names() == ("client-1",)
    skipped = {c["client"]: c for c in wl.meta["skipped_clients"]}
    assert wl.meta["clients_skipped"] == 3 and set(skipped) == {"2", "3", "4"}
    # Mean rates over the hour: 2, 3, 5 and 10 * 0.5 = 5 req/s; 15 in all.
    assert skipped["2"]["rate_share"] == pytest.approx(3 / 15)
    assert skipped["3"]["rate_share"] == pytest.approx(5 / 15)
    assert skipped["4"]["rate_share"] == pytest.approx(5 / 15)
    assert "the file is empty" in skipped["2"]["reason"]
    assert "no chunk-3-dataset.json" in skipped["3"]["reason"]
    assert "not valid JSON" in skipped["4"]["reason"]
    (warning,) = wl.meta["warnings"]
    assert warning.startswith("skipped 3 of 4 ServeGen clients")
    assert "86.7% of the request rate" in warning
    with pytest.raises(TraceError, match=r"chunk-2-dataset\.json: the file is empty"):
        load_trace(folder, duration_s=3600, strict=True)


def test_trace_stats_on_such_a_folder_exits_0_and_warns(tmp_path: Path) -> None:
    folder = servegen_folder(tmp_path)
    cmd = [sys.executable, "-m", "fairserve", "trace", "stats", str(folder), "--json"]
    env = {"COLUMNS": "100", "PATH": "/usr/bin:/bin"}
    if "FAIRSERVE_PURE_PYTHON" in os.environ:  # the same build as the test run
        env["FAIRSERVE_PURE_PYTHON"] = os.environ["FAIRSERVE_PURE_PYTHON"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["clients_skipped"] == 3 and len(stats["skipped_clients"]) == 3
    err = " ".join(proc.stderr.split())
    assert err.startswith("warning: skipped 3 of 4 ServeGen clients")
    for client in ("2 (20.0%", "3 (33.3%", "4 (33.3%"):
        assert client in err
    strict = subprocess.run(
        [*cmd, "--strict"], capture_output=True, text=True, timeout=120, env=env
    )
    assert strict.returncode == 2 and "the file is empty" in strict.stderr


def wl_at(arrival_s: np.ndarray, conversation_id: list[str] | None = None) -> Workload:
    n = arrival_s.size
    return Workload.from_arrays(
        arrival_s, np.full(n, 10), np.full(n, 5), conversation_id=conversation_id
    )


def test_batched_timestamps_are_flagged() -> None:
    # Mooncake-like: ten requests every 3 s, so 90% of the gaps are 0.
    batched = np.repeat(np.arange(0.0, 300.0, 3.0), 10)
    found = timestamp_batching(batched)
    assert found == {"zero_gap_share": pytest.approx(0.9, abs=0.01), "batched": True,
                     "quantum_s": 3.0}  # fmt: skip
    stats = compute_stats(wl_at(batched))
    assert stats["timestamps"]["batched"]
    assert any("timestamps come in batches (most often 3 s apart)" in w for w in stats["warnings"])
    smooth = np.cumsum(np.random.default_rng(0).exponential(1.0, 500))
    assert timestamp_batching(smooth) == {"zero_gap_share": 0.0, "batched": False}
    assert compute_stats(wl_at(smooth))["warnings"] == []


def test_last_rate_bin_is_divided_by_its_own_width() -> None:
    # One arrival a second, 0..130 s: bins of 50 s are [0, 50), [50, 100), [100, 130].
    series = rate_over_time(wl_at(np.arange(0.0, 131.0)), 50.0)
    assert series["start_s"] == [0.0, 50.0, 100.0] and series["last_bin_s"] == 30.0
    assert series["rate_per_s"] == pytest.approx([1.0, 1.0, 31 / 30])
    # A last sliver under half a bin joins the bin before it: 0..110 s -> [0, 50), [50, 110].
    sliver = rate_over_time(wl_at(np.arange(0.0, 111.0)), 50.0)
    assert sliver["start_s"] == [0.0, 50.0] and sliver["rate_per_s"] == pytest.approx([1, 61 / 60])


def test_conversation_statistics() -> None:
    # a: turns at 0, 10, 30 s; b: at 5, 6 s; c: one turn at 7 s.
    arrival = np.array([0.0, 5.0, 6.0, 7.0, 10.0, 30.0])
    ids = ["a", "b", "b", "c", "a", "a"]
    conv = conversation_stats(wl_at(arrival, ids))
    assert conv is not None
    assert conv["conversations"] == 3 and conv["multi_turn_share"] == pytest.approx(2 / 3)
    assert conv["turns"]["mean"] == pytest.approx(2.0) and conv["turns"]["max"] == 3
    assert conv["turn_interval_s"]["mean"] == pytest.approx((10 + 20 + 1) / 3)
    assert conversation_stats(wl_at(arrival)) is None
    assert compute_stats(wl_at(arrival, ids))["conversation_stats"] == conv
