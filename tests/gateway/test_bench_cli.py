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
    assert set(live) == set(json.loads(sim.output))
    assert live["completed"] == live["requests"] > 10
    assert set(live["per_tenant"]) == {"a", "b"}
    assert live["per_tenant"]["a"]["completed"] > 0
    # --out: a bench run directory that `fairserve report` reads, and its report.
    run_dir = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run_dir["kind"] == "bench" and set(run_dir["tenants"]) == {"a", "b"}
    assert (tmp_path / "run" / "report.html").stat().st_size > 10_000
