"""Live reports: a bench run's report uses the gateway's tenants, weights, SLOs and policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from fairserve.cli.app import app
from fairserve.gateway.config import parse_config
from fairserve.report.run_dir import read_run_dir
from tests.gateway.helpers import KEY_A, KEY_B, MODEL, gateway_thread
from tests.gateway.servers import engine_thread

# The workload spec weighs both tenants 1 and gives no SLOs; the gateway does otherwise.
SPEC = {"seed": 2, "duration_s": 1.5, "sources": [
    {"tenant": "a", "arrival": {"process": "poisson", "rate_per_s": 6},
     "prompt": {"dist": "constant", "tokens": 20}, "output": {"dist": "constant", "tokens": 6}},
    {"tenant": "b", "arrival": {"process": "poisson", "rate_per_s": 6},
     "prompt": {"dist": "constant", "tokens": 30}, "output": {"dist": "constant", "tokens": 4}},
]}  # fmt: skip


def gateway_data(url: str) -> dict[str, Any]:
    return {
        "policy": "vtc",
        "router": "least-tokens",
        "models": [MODEL],
        "tenants": {
            "a": {"api_key": KEY_A, "weight": 3, "slo": {"ttft_s": 2.0}},
            "b": {"api_key": KEY_B, "weight": 1},
        },
        "backends": [{"url": url, "max_concurrency": 16}],
        "dispatch": {"health_interval_s": 0.2, "metrics_interval_s": 0.1},
        "server": {"drain_grace_s": 5},
    }


def test_bench_report_takes_the_gateways_view(tmp_path: Path) -> None:
    spec, config = tmp_path / "w.yaml", tmp_path / "gateway.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    with engine_thread() as engine:
        data = gateway_data(engine.url)
        config.write_text(yaml.safe_dump(data))
        with gateway_thread(parse_config(data)) as (server, _):
            base = ["bench", "--base-url", server.url, "--workload", str(spec), "--json"]
            own = CliRunner().invoke(
                app, [*base, "--keys-from", str(config), "--out", str(tmp_path / "own")]
            )
            keyed = [*base, "--tenant-key", f"a={KEY_A}", "--tenant-key", f"b={KEY_B}"]
            plain = CliRunner().invoke(app, [*keyed, "--out", str(tmp_path / "spec")])
    assert own.exit_code == 0, own.output
    assert plain.exit_code == 0, plain.output
    run = read_run_dir(tmp_path / "own")
    assert run.labels == ("vtc",)  # the run is named by the gateway's policy
    assert run.weights == {"a": 3.0, "b": 1.0}
    assert set(run.slos) == {"a"} and run.slos["a"].ttft_s == 2.0
    assert run.config["policy"] == "vtc" and run.config["router"] == "least-tokens"
    html = (tmp_path / "own" / "report.html").read_text()
    assert "fairserve live bench report" in html and "policy: vtc" in html
    assert "tenants, weights and SLOs from the gateway&#x27;s config" in html
    assert "a (TTFT ≤ 2 s)" in html.split('id="verdict"')[1]
    # Without the gateway's config: the spec's view, and the report says so.
    fallback = json.loads((tmp_path / "spec" / "config.json").read_text())
    assert fallback["weights"] == {"a": 1.0, "b": 1.0} and fallback["slos"] == {}
    assert "not the gateway's" in fallback["config"]["tenants_from"]
