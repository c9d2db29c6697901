"""``fairserve policy train`` end to end through the installed command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fairserve.core.policies.learned_rank import RankModel
from fairserve.store import load_ranker


def fairserve(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fairserve", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def write_trace(path: Path, n: int = 240) -> None:
    """Two tenants, varied lengths, arrivals fast enough that a small engine queues."""
    rows = ["arrival_s,prompt_tokens,output_tokens,tenant"]
    for i in range(n):
        rows.append(f"{i * 0.02:.4f},{50 + 97 * i % 900},{5 + 53 * i % 400},{'ab'[i % 2]}")
    path.write_text("\n".join(rows) + "\n")


def test_train_writes_a_ranker_and_scores_it_on_the_held_out_part(tmp_path: Path) -> None:
    trace, out = tmp_path / "trace.csv", tmp_path / "models" / "ranker.json"
    write_trace(trace)
    proc = fairserve("policy", "train", "--trace", str(trace), "--out", str(out),
                     "--predictor", "oracle", "--max-num-seqs", "4", "--placement", "engine",
                     "--teachers", "0", "--train-windows", "2", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ranker"] == str(out)
    assert set(report["heldout"]) == {"fifo", "sjf", "learned-rank"}
    assert all(row["completed"] == 120 for row in report["heldout"].values())
    model = load_ranker(out)
    assert isinstance(model, RankModel) and dict(model.weights) == report["weights"]
    assert set(model.tenant_offsets) == {"a", "b"}
    assert model.metrics["predictor"] == "oracle" and model.metrics["test_requests"] == 120
    assert model.metrics["train_requests"] == 120
    # The model it wrote runs in the simulator like any policy.
    sim = fairserve("simulate", "--trace", str(trace), "--policy", f"learned-rank:path={out}",
                    "--predictor", "oracle", "--json")  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    assert json.loads(sim.stdout)["completed"] == 240


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    write_trace(trace, 20)
    for args, message in [
        (["--out", str(tmp_path / "r.json"), "--train-fraction", "1.5"], "--train-fraction"),
        ([], "--out FILE is required"),
        (["--out", str(tmp_path / "r.json"), "--teachers", "x"], "--teachers"),
        (["--out", str(tmp_path / "r.json"), "--train-windows", "0"], "--train-windows"),
        (["--out", str(tmp_path / "r.json"), "--predictor", "psychic"], "unknown predictor"),
    ]:
        proc = fairserve("policy", "train", "--trace", str(trace), *args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
