"""`fairserve bench --json` against the gateway: the keys of `fairserve simulate --json`."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from fairserve.cli.app import app as fairserve_app
from tests.gateway.helpers import KEY_A, KEY_B, gateway_config, gateway_thread
from tests.gateway.servers import engine_thread

SPEC = {"seed": 1, "duration_s": 2, "sources": [
    {"tenant": "a", "arrival": {"process": "poisson", "rate_per_s": 5},
     "prompt": {"dist": "constant", "tokens": 20}, "output": {"dist": "constant", "tokens": 8}},
    {"tenant": "b", "arrival": {"process": "poisson", "rate_per_s": 5},
     "prompt": {"dist": "constant", "tokens": 40}, "output": {"dist": "constant", "tokens": 4}},
]}  # fmt: skip


def test_bench_json_has_the_simulate_keys(tmp_path: Path) -> None:
    spec = tmp_path / "w.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    app = fairserve_app
    with engine_thread() as engine, gateway_thread(gateway_config([engine.url])) as (server, _):
        args = ["bench", "--url", server.url, "--workload", str(spec), "--tenant-key",
                f"a={KEY_A}", "--tenant-key", f"b={KEY_B}", "--json",
                "--out", str(tmp_path / "run")]  # fmt: skip
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    live = json.loads(result.stdout)
    sim = CliRunner().invoke(fairserve_app, ["simulate", "--workload", str(spec), "--json"])
    assert sim.exit_code == 0, sim.output
    assert set(live) - {"latency_ms"} == set(json.loads(sim.output))
    # vllm bench serve's default metrics (ttft, tpot, itl): mean, median, p99 in ms.
    assert set(live["latency_ms"]) == {"ttft", "tpot", "itl"}
    itl = live["latency_ms"]["itl"]
    assert set(itl) == {"mean", "median", "p99"} and 0 < itl["median"] <= itl["p99"]
    assert live["completed"] == live["requests"] > 10
    assert set(live["per_tenant"]) == {"a", "b"}
    assert live["per_tenant"]["a"]["completed"] > 0
    # --out: a bench run directory that `fairserve report` reads, and its report.
    run_dir = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run_dir["kind"] == "bench" and set(run_dir["tenants"]) == {"a", "b"}
    assert (tmp_path / "run" / "report.html").stat().st_size > 10_000


def test_bench_vllm_style_flags_table_and_one_key_warning(tmp_path: Path) -> None:
    spec = tmp_path / "w.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    with engine_thread() as engine, gateway_thread(gateway_config([engine.url])) as (server, _):
        args = ["bench", "--base-url", server.url, "--workload", str(spec), "--api-key", KEY_A,
                "--num-prompts", "6", "--request-rate", "20", "--burstiness", "0.5",
                "--seed", "3", "--percentile-metrics", "ttft,itl,e2el",
                "--metric-percentiles", "50,90"]  # fmt: skip
        result = CliRunner().invoke(fairserve_app, args, env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "warning:" in text and "one API key" in text  # two tenants, one key
    assert "bench (live)" in text and "Live run time (s)" in text
    assert "Simulated time" not in text
    table = text[text.index("Latency (ms)") :]
    assert all(label in table for label in ("TTFT", "ITL", "E2E", "P50", "P90"))
    assert "TPOT" not in table and "P99" not in table


def test_bench_flag_errors_are_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "w.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    base = ["bench", "--base-url", "http://127.0.0.1:9", "--workload", str(spec), "--api-key", "k"]
    for extra, needle in (
        (["--percentile-metrics", "ttft,foo"], "ttft, tpot, itl, e2el"),
        (["--metric-percentiles", "150"], "between 0 and 100"),
        (["--request-rate", "0"], "--request-rate must be > 0"),
    ):
        result = CliRunner().invoke(fairserve_app, base + extra)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and needle in result.output


def test_retime_rate_and_burstiness() -> None:
    import numpy as np

    from fairserve.loadgen.bench import BenchRequest, retime

    reqs = [BenchRequest(i, 5.0 * i, "a", 10, 5, "k") for i in range(4000)]
    assert {r.arrival_s for r in retime(reqs, float("inf"))} == {0.0}
    for burstiness in (0.25, 1.0, 4.0):
        times = np.array([r.arrival_s for r in retime(reqs, 10.0, burstiness, seed=1)])
        gaps = np.diff(times)
        assert abs(gaps.mean() - 0.1) < 0.01  # the rate asked for
        # Gamma gaps of shape k have CV 1/sqrt(k): burstier below 1, smoother above.
        assert abs(gaps.std() / gaps.mean() - burstiness**-0.5) < 0.1
    assert retime(reqs, 10.0, seed=2) == retime(reqs, 10.0, seed=2)
