"""``fairserve profile`` against the simulated engine: profile -> calibrate -> cost check."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fairserve.loadgen.profile import ProbeError, decode_window
from tests.gateway.servers import Proc, free_port

# A model whose steps (15-60 ms) are long against the loopback round trip, on a
# GPU whose profile is fitted on measurements.
ENGINE = ["--model", "Llama-3.1-8B", "--gpu", "A100-80GB", "--max-num-seqs", "64"]
# Small on purpose: the simulated engine runs in real time on a shared machine.
PROBES = [
    "--prefill-tokens", "256,1024,4096",
    "--batches", "1,8,32",
    "--contexts", "256,2048",
    "--decode-tokens", "24",
    "--repeats", "3",
]  # fmt: skip
# One model at tp 1 with one prompt per prefill probe cannot tell these from the
# per-step cost (every prefill row pays each once); calibrate refuses without them.
FIX = "layer_overhead_s,eager_layer_overhead_s,prefill_seq_overhead_s"


def fairserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fairserve", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def engine() -> Iterator[Proc]:
    port = free_port()
    proc = Proc(["engine", "--port", str(port), *ENGINE], port).wait_ready()
    try:
        yield proc
    finally:
        proc.kill()


def cost_check(steps: Path, *extra: str) -> dict[str, object]:
    proc = fairserve("cost", "check", str(steps), *ENGINE[:4], *extra, "--json")
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_profile_calibrate_check_round_trip(engine: Proc, tmp_path: Path) -> None:
    steps = tmp_path / "steps.csv"
    proc = fairserve("profile", "--url", engine.url, "--model", "Llama-3.1-8B",
                     "--out", str(steps), *PROBES)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with steps.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 + 3 * 2
    assert {r["decode_seqs"] for r in rows} == {"0", "1", "8", "32"}
    # The probes measure the engine's own steps: its shipped profile predicts them
    # (0.5-2.2% on an idle machine; the engine runs in real time, so a busy one
    # slows some steps).
    shipped = cost_check(steps)
    assert shipped["mape"] < 10.0, shipped
    profile = tmp_path / "profile.yaml"
    proc = fairserve("calibrate", str(steps), *ENGINE[:4], "--fix", FIX, "--out", str(profile))
    assert proc.returncode == 0, proc.stderr
    calibrated = cost_check(steps, "--profile", str(profile))
    assert calibrated["mape"] < 3.0, calibrated


def test_unreachable_engine_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    proc = fairserve("profile", "--url", f"http://127.0.0.1:{port}", "--model", "m",
                     "--out", str(tmp_path / "s.csv"), "--repeats", "1")  # fmt: skip
    assert proc.returncode == 2
    assert "cannot reach the engine" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_probe_list_names_the_option(tmp_path: Path) -> None:
    proc = fairserve("profile", "--url", "http://127.0.0.1:1", "--model", "m", "--batches", "1,x")
    assert proc.returncode == 2 and "--batches" in proc.stderr


def test_decode_window_is_where_every_stream_runs() -> None:
    # Stream a starts at once; b's prefill ends at t=1.0; steps of 0.1 s from there.
    a = [0.5, 1.0, 1.1, 1.2, 1.3, 1.4]
    b = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    step_s, index = decode_window([a, b])  # the median gap of each stream in the window
    assert step_s == pytest.approx(0.1)
    assert index == pytest.approx(((1 + 5) / 2 + (0 + 4) / 2) / 2)
    with pytest.raises(ProbeError, match="no decode window"):
        decode_window([[0.0, 0.1], [5.0, 5.1]])
