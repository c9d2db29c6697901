"""`fairserve predictor latency --out` then `predictor score` on another workload."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from fairserve.cli.predictor import predictor_app
from fairserve.core.predict.latency import E2E_TERMS, TTFT_TERMS, LatencyModel
from fairserve.store import save_latency_model


def write_trace(path: Path, n: int = 600) -> None:
    """A CSV trace unlike the training load: steady 3 req/s, two tenants, short answers."""
    rng = np.random.default_rng(3)
    prompt = rng.integers(50, 3000, size=n)
    output = rng.integers(2, 200, size=n)
    rows = ["arrival_s,prompt_tokens,output_tokens,tenant"]
    rows += [
        f"{i / 3:.3f},{p},{o},t{i % 2}" for i, (p, o) in enumerate(zip(prompt, output, strict=True))
    ]
    path.write_text("\n".join(rows) + "\n")


def test_train_save_score_on_another_workload(tmp_path: Path) -> None:
    model = tmp_path / "latency.json"
    runner = CliRunner()
    trained = runner.invoke(
        predictor_app, ["latency", "--requests", "1000", "--out", str(model), "--json"]
    )
    assert trained.exit_code == 0, trained.output
    saved = json.loads(model.read_text())
    assert saved["version"] == 2 and saved["length_predictor"] == "history"
    assert saved["token_budget"] == 8192 and saved["gpu"] == "H100-80GB"
    trace = tmp_path / "other.csv"
    write_trace(trace)
    scored = runner.invoke(predictor_app, ["score", str(model), "--trace", str(trace), "--json"])
    assert scored.exit_code == 0, scored.output
    report = json.loads(scored.output)
    assert report["rows"] == 600 and report["length_predictor"] == "history"
    for target in ("ttft", "tpot", "e2e", "slowdown"):
        assert 0 < report[f"{target}_mae_pct"] < 1000, report
    doubled = runner.invoke(
        predictor_app, ["score", str(model), "--rate-scale", "2", "--requests", "500"]
    )
    assert doubled.exit_code == 0, doubled.output
    assert "x2 rate" in doubled.output and "slowdown" in doubled.output


def test_bad_model_files_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(predictor_app, ["score", str(tmp_path / "none.json")])
    assert missing.exit_code == 2 and "none.json: no latency model here" in missing.output
    garbled = tmp_path / "garbled.json"
    garbled.write_text('{"version": 2, "ttft": {"steps": 1}}')
    bad = runner.invoke(predictor_app, ["score", str(garbled)])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert "garbled.json" in bad.output and "'ttft'" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    text = tmp_path / "text.json"
    text.write_text("not json")
    assert "not JSON" in runner.invoke(predictor_app, ["score", str(text)]).output
    old = save_latency_model(
        LatencyModel((1e-3,) * len(TTFT_TERMS), (1e-3,) * len(E2E_TERMS), 8192),
        tmp_path / "v1.json",
    )
    refused = runner.invoke(predictor_app, ["score", str(old)])
    assert refused.exit_code == 2 and "version-1" in refused.output
