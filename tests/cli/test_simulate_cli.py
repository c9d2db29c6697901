"""End to end through the installed ``fairserve`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

LATENCY_KEYS = {"p50", "p90", "p99", "mean"}


def fairserve(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fairserve", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def simulate_json(*args: str) -> dict[str, Any]:
    proc = fairserve("simulate", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def write_trace(path: Path, gap_s: float = 0.05) -> None:
    rows = ["arrival_s,prompt_tokens,output_tokens,tenant"]
    for i in range(60):
        rows.append(f"{i * gap_s:.4f},{100 + 7 * i},{10 + i % 13},{'a' if i % 3 else 'b'}")
    path.write_text("\n".join(rows) + "\n")


def test_simulate_a_generic_csv_trace(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    write_trace(trace)
    data = simulate_json("--trace", str(trace))
    for key in (
        "requests",
        "completed",
        "sim_time_s",
        "wall_time_s",
        "throughput_tok_s",
        "preemptions",
    ):
        assert key in data
    assert data["requests"] == data["completed"] == 60
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        assert set(data[key]) >= LATENCY_KEYS
        assert 0 < data[key]["p50"] <= data[key]["p99"]
    assert set(data["per_tenant"]) == {"a", "b"}
    assert data["per_tenant"]["b"]["completed"] == 20
    assert set(data["per_tenant"]["a"]["e2e_s"]) >= LATENCY_KEYS


def test_reference_engine_gives_the_same_figures(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    write_trace(trace, gap_s=0.002)
    fast = simulate_json("--trace", str(trace), "--num-gpu-blocks", "40")
    ref = simulate_json("--trace", str(trace), "--num-gpu-blocks", "40", "--reference")
    assert fast["preemptions"] == ref["preemptions"] > 0
    for key in ("ttft_s", "e2e_s", "tpot_s"):
        for q in ("p50", "p99", "mean"):
            assert fast[key][q] == pytest.approx(ref[key][q], rel=1e-9)


def test_synthetic_workload_with_instances_and_tenants() -> None:
    data = simulate_json(
        "--requests", "300", "--rate", "20", "--instances", "2", "--router", "least-tokens",
        "--tenants", "x:0.7,y:0.3", "--arrival", "gamma", "--cv", "2",
    )  # fmt: skip
    assert data["completed"] == 300
    assert set(data["per_tenant"]) == {"x", "y"}


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("arrival_s,prompt_tokens\n0.0,10\n")
    proc = fairserve("simulate", "--trace", str(trace))
    assert proc.returncode != 0
    assert "bad.csv" in proc.stderr and "output_tokens" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_non_numeric_value_names_file_line_and_column(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0.0,10,5\n0.5,ten,5\n")
    proc = fairserve("simulate", "--trace", str(trace))
    assert proc.returncode != 0
    assert "bad.csv:3" in proc.stderr and "prompt_tokens" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("value", ["0", "-4"])
def test_zero_or_negative_lengths_are_rejected_with_a_reason(tmp_path: Path, value: str) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text(f"arrival_s,prompt_tokens,output_tokens\n0.0,10,5\n0.5,12,{value}\n")
    proc = fairserve("simulate", "--trace", str(trace))
    assert proc.returncode != 0
    assert "bad.csv:3" in proc.stderr and "output_tokens" in proc.stderr
    assert ">= 1" in proc.stderr


def test_unknown_gpu_lists_known_ones() -> None:
    proc = fairserve("simulate", "--gpu", "Z80", "--requests", "5")
    assert proc.returncode != 0
    assert "unknown GPU 'Z80'" in proc.stderr and "H100-80GB" in proc.stderr


# Every decode row reads 1200 tokens per sequence: per-sequence and KV costs act alike;
# every prefill row is one sequence: its per-prefill cost and the eager launches too.
SLOW_ENGINE_FIX = "layer_overhead_s,per_seq_overhead_s,prefill_seq_overhead_s"


def slow_engine_steps(tmp_path: Path) -> Path:
    """Steps of a slow engine: about three times the shipped H100 profile's step times."""
    steps = tmp_path / "steps.csv"
    rows = ["prefill_tokens,decode_seqs,kv_tokens,step_time_s"]
    for b in range(1, 200, 7):
        rows.append(f"0,{b},{b * 1200},{3 * (0.0085 + b * 0.00004):.6f}")
        rows.append(f"{b * 40},0,{b * 40},{3 * (0.012 + b * 40 * 0.00002):.6f}")
    steps.write_text("\n".join(rows) + "\n")
    return steps


def test_calibrate_then_simulate_with_the_profile(tmp_path: Path) -> None:
    steps = slow_engine_steps(tmp_path)
    profile = tmp_path / "prof.yaml"
    proc = fairserve("calibrate", str(steps), "--fix", SLOW_ENGINE_FIX, "--out", str(profile))
    assert proc.returncode == 0, proc.stderr
    assert profile.is_file() and "efficiency" in profile.read_text()
    slow = simulate_json("--requests", "50", "--profile", str(profile))
    default = simulate_json("--requests", "50")
    # The measured steps are slower than the shipped factors predict.
    assert slow["e2e_s"]["mean"] > default["e2e_s"]["mean"]


def test_calibrate_loss_is_chosen_by_name(tmp_path: Path) -> None:
    base = ("calibrate", str(slow_engine_steps(tmp_path)), "--fix", SLOW_ENGINE_FIX, "--json")
    out = {}
    for loss in ("robust", "squares"):
        proc = fairserve(*base, "--loss", loss, "--out", str(tmp_path / f"{loss}.yaml"))
        assert proc.returncode == 0, proc.stderr
        fitted = json.loads(proc.stdout)
        assert fitted["loss"] == loss
        out[loss] = fitted["efficiency"]
        assert "loss: " + loss in (tmp_path / f"{loss}.yaml").read_text()
    assert out["robust"] != out["squares"]
    proc = fairserve(*base, "--loss", "l1", "--out", str(tmp_path / "x.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("allowed: robust, squares")


def test_compare_runs_every_combination_on_the_same_workload() -> None:
    proc = fairserve(
        "compare", "--policies", "fifo,vtc", "--router", "round-robin,least-tokens",
        "--predictor", "noisy-oracle:sigma=0.5", "--requests", "300", "--rate", "30",
        "--instances", "2", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    combos = {(r["policy"], r["router"]) for r in rows}
    assert combos == {
        ("fifo", "round-robin"), ("fifo", "least-tokens"),
        ("vtc", "round-robin"), ("vtc", "least-tokens"),
    }  # fmt: skip
    for r in rows:
        assert r["predictor"] == "noisy-oracle:sigma=0.5"
        assert r["requests"] == r["completed"] == 300
        assert set(r["fairness"]) == {"jain", "max_service_diff", "max_window_service_diff",
                                      "window_s", "worst_wait_s"}  # fmt: skip
        assert set(r["ttft_s"]) >= LATENCY_KEYS and "per_tenant" in r
        assert r["predictor_error"]["mae"] > 0


def test_compare_rejects_an_unknown_policy() -> None:
    proc = fairserve("compare", "--policies", "fifo,nope", "--requests", "10")
    assert proc.returncode != 0
    assert "unknown policy 'nope'" in proc.stderr and "vtc" in proc.stderr


def test_compare_takes_parameterised_routers_and_policies(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    write_trace(trace)
    proc = fairserve(
        "compare", "--trace", str(trace), "--policies", "fifo,vtc",
        "--router", "prefix-affinity:imbalance=2", "--instances", "2", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["policy"], r["router"]) for r in rows] == [
        ("fifo", "prefix-affinity:imbalance=2"), ("vtc", "prefix-affinity:imbalance=2"),
    ]  # fmt: skip
    assert all(r["completed"] == 60 for r in rows)


def test_compare_lists_continue_a_component_after_a_comma() -> None:
    # sjf's two parameters, then vtc: two policies; a mapping value keeps its commas.
    proc = fairserve(
        "compare", "--policies", "sjf:prompt_weight=1,default_output_tokens=100,vtc",
        "--requests", "40",
        "--predictors", "driftsched:priors_tokens={chat: 200, code: 50},alpha=0.2", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["policy"] for r in rows] == ["sjf:prompt_weight=1,default_output_tokens=100", "vtc"]
    assert rows[0]["predictor"] == "driftsched:priors_tokens={chat: 200, code: 50},alpha=0.2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policies", "vtc:bogus=1"], "error: policy 'vtc': unknown parameter 'bogus'; allowed: "),
        (["--router", "prefix-affinity:imbalance=0.5"], "error: router prefix-affinity:imbalance=0.5: "),
        (["--policies", "vtc:=1"], "error: 'vtc:=1': expected"),
        (["--admission", "slo:model=/nonexistent/model.json"], "error: admission slo:model="),
        (["--admission", "slo:slack=0.5"], "error: admission 'slo': missing parameter 'model'"),
        (["--model", "Llama-2-70B", "--gpu", "L4"], "error: Llama-2-70B does not fit on L4"),
    ],
)  # fmt: skip
def test_bad_components_fail_with_one_line(args: list[str], message: str) -> None:
    proc = fairserve("compare", "--requests", "10", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_simulate_with_admission_shorthand_and_spec_agree(tmp_path: Path) -> None:
    proc = fairserve("simulate", "--requests", "10", "--admission-slack", "0.5")
    assert (
        proc.returncode == 2 and "--admission-slack applies with --admission-model" in proc.stderr
    )
    both = fairserve("simulate", "--requests", "10", "--admission", "slo:model=x",
                     "--admission-model", "x")  # fmt: skip
    assert both.returncode == 2 and "not both" in both.stderr
