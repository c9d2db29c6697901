"""``fairserve predictor train`` and ``latency`` through typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fairserve.cli.predictor import predictor_app
from fairserve.core.predict import PREDICTORS
from fairserve.core.registry import ComponentSpec
from fairserve.store import load_model

pytest.importorskip("sklearn", reason="the learned predictor needs the 'learned' extra")


def write_trace(path: Path, n: int = 1200) -> None:
    """A generic CSV trace whose output lengths follow the prompt lengths."""
    rng = np.random.default_rng(0)
    prompt = rng.integers(10, 3000, size=n)
    output = np.maximum(1, (0.3 * prompt * rng.lognormal(0, 0.2, size=n)).astype(int))
    lines = ["arrival_s,prompt_tokens,output_tokens,tenant"]
    lines += [
        f"{i * 0.1:.1f},{p},{o},t{i % 2}"
        for i, (p, o) in enumerate(zip(prompt, output, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n")


def test_train_writes_a_model_and_reports_accuracy(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    write_trace(trace)
    out = tmp_path / "model"
    runner = CliRunner()
    result = runner.invoke(
        predictor_app, ["train", str(trace), "--out", str(out), "--max-iter", "50", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["text"] is False and report["test_rows"] == 240
    assert report["learned"]["mae_tokens"] < report["tenant_mean_baseline"]["mae_tokens"]
    assert {"mae_tokens", "rmse_tokens", "kendall_tau"} <= set(report["learned"])
    assert (
        PREDICTORS.build(ComponentSpec("learned", {"path": out}), load=load_model).model.metrics[
            "test_rows"
        ]
        == 240
    )
    table = runner.invoke(
        predictor_app, ["train", str(trace), "--out", str(out), "--max-iter", "20"]
    )
    assert table.exit_code == 0 and "per-tenant mean" in table.output


def test_train_errors_are_for_people(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    write_trace(trace, 50)
    runner = CliRunner()
    no_text = runner.invoke(predictor_app, ["train", str(trace), "--out", str(tmp_path), "--text"])
    assert no_text.exit_code == 2 and "--no-text" in no_text.output
    bad = runner.invoke(
        predictor_app, ["train", str(trace), "--out", str(tmp_path), "--target", "x"]
    )
    assert bad.exit_code == 2 and "--target" in bad.output
    missing = runner.invoke(predictor_app, ["train", str(tmp_path / "no.csv"), "--out", "x"])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_latency_command_prints_mae_percent() -> None:
    result = CliRunner().invoke(predictor_app, ["latency", "--requests", "800", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ttft_mae_pct"] > 0 and report["e2e_mae_pct"] > 0
    assert report["tpot_mae_pct"] > 0 and report["slowdown_mae_pct"] > 0
    assert report["length_predictor"] == "history"
    assert set(report["coefficients"]["e2e"]) >= {"out_x_one", "steps"}
