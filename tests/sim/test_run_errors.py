"""A run that cannot mean anything is an error: a router without the predictor it
reads, an engine configuration that fails every request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fairserve.cli.app import app
from fairserve.sim.run import SimConfig
from tests.sim.factories import config, req, run


def test_predicted_load_without_a_predictor_is_refused() -> None:
    with pytest.raises(ValueError, match=r"predicted-load .*set predictor"):
        SimConfig(router="predicted-load")
    with pytest.raises(ValueError, match="p2c:predicted=true"):
        SimConfig(router="p2c:predicted=true")
    SimConfig(router="predicted-load", predictor="history")  # fine with one
    SimConfig(router="p2c")


def test_every_request_failing_is_an_error_with_the_reason() -> None:
    # Prefix hash blocks of 24 tokens cannot map onto 16-token KV blocks.
    reqs = [req(i, 0.1 * i, 100, 10, hashes=[i, i + 1], block_tokens=24) for i in range(5)]
    result = run(reqs, config())
    error = result.error()
    assert error is not None
    assert "every request failed (5 of 5)" in error
    assert "prefix_block_tokens 24 is not a multiple of block_size 16" in error
    # One request served: the run is a run (its failures are reported, not fatal).
    ok = run([*reqs, req(9, 1.0, 100, 10)], config())
    assert ok.error() is None


def _trace(path: Path) -> Path:
    rows = [
        json.dumps({"timestamp": 100 * i, "input_length": 1024, "output_length": 20,
                    "hash_ids": [i, i + 1]})
        for i in range(8)
    ]  # fmt: skip
    path.write_text("\n".join(rows) + "\n")
    return path


def test_cli_exits_non_zero_and_says_why(tmp_path: Path) -> None:
    trace = _trace(tmp_path / "trace.jsonl")  # Mooncake format: 512-token hash blocks
    runner = CliRunner()
    out = runner.invoke(app, ["simulate", "--trace", str(trace), "--block-size", "48", "--json"])
    assert out.exit_code == 1
    data = json.loads(out.stdout.splitlines()[0])
    assert "not a multiple of block_size 48" in data["error"]
    assert data["failed"] == 8
    plain = runner.invoke(app, ["simulate", "--trace", str(trace), "--block-size", "48"])
    assert plain.exit_code == 1
    assert "every request failed" in plain.output
    good = runner.invoke(app, ["simulate", "--trace", str(trace), "--json"])
    assert good.exit_code == 0, good.output
    assert json.loads(good.stdout)["completed"] == 8
