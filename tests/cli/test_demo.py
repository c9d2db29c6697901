"""The main job: ``fairserve demo`` (what ``make demo`` runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fairserve", "demo", *args]
    env = {"COLUMNS": "160", "PATH": "/usr/bin:/bin"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def test_demo_prints_the_comparison_and_writes_the_report(tmp_path: Path) -> None:
    proc = run_demo("--out", str(tmp_path / "demo"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for policy in ("fifo", "priority", "sjf", "vtc", "uwfq", "oracle-srpt"):
        assert policy in out
    for tenant in ("chat", "code", "batch"):
        assert tenant in out
    report = tmp_path / "demo" / "report.html"
    assert f"report: {report}" in out.replace("\n", "")
    assert report.is_file() and report.stat().st_size > 10_000


def test_demo_live_runs_the_gateway_beside_the_simulator(tmp_path: Path) -> None:
    proc = run_demo("--out", str(tmp_path / "demo"), "--live")
    assert proc.returncode == 0, proc.stderr
    assert "live gateway vs simulator" in proc.stdout
    # Every request of the slice completed through the real gateway.
    line = next(x for x in proc.stdout.splitlines() if x.startswith("live: "))
    done, total = line.split()[1].split("/")
    assert done == total and int(total) > 100
