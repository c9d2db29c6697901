"""Run directories: what the writer stores and the reader gives back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fairserve.core.model import Outcome
from fairserve.metrics.records import RequestRecords
from fairserve.metrics.summary import summarize
from fairserve.report.run_dir import (
    FORMAT_VERSION,
    RunData,
    RunDirError,
    read_run_dir,
    write_run_dir,
)

NAN = float("nan")


def tiny_records() -> RequestRecords:
    """Three requests: two of tenant a (one never scheduled: failed), one of b."""
    rec = RequestRecords()
    rec.add(0, "a", 0, Outcome.COMPLETED, 0.0, 0.5, 1.0, 3.0, 100, 20, 0, 0)
    rec.add(1, "b", 0, Outcome.COMPLETED, 1.0, 1.0, 1.2, 2.0, 50, 10, 16, 1)
    rec.add(2, "a", -1, Outcome.FAILED, 2.0, NAN, NAN, 2.0, 9000, 0, 0, 0, "too long")
    return rec


def test_simulate_run_round_trip(simulate_dir: Path) -> None:
    run = read_run_dir(simulate_dir)
    assert run.kind == "simulate"
    assert run.labels == ("fifo",)
    assert run.tenants == ("batch", "chat")
    assert run.weights == {"batch": 1.0, "chat": 2.0}
    assert run.records.height == 400
    assert set(run.records["tenant"].unique()) == {"chat", "batch"}
    assert run.predictions is None  # no predictor, no predictions file
    assert run.summaries["fifo"]["summary"]["requests"] == 400
    assert "jain" in run.summaries["fifo"]["fairness"]


def test_compare_run_keeps_each_configuration(compare_dir: Path) -> None:
    run = read_run_dir(compare_dir)
    assert run.labels == ("fifo", "vtc")
    assert run.records_of("vtc").height == 400
    assert run.predictions is not None
    assert set(run.predictions["run"].unique()) == {"fifo", "vtc"}
    assert (run.predictions["actual_tokens"] > 0).all()


def test_records_keep_names_times_and_nan(tmp_path: Path) -> None:
    arrays = tiny_records().to_numpy()
    summary = summarize(arrays).to_dict()
    runs = [("x", arrays, summary, None, None)]  # the plain-tuple form
    write_run_dir(tmp_path, "bench", {"url": "http://127.0.0.1:1"}, runs)
    frame = read_run_dir(tmp_path).records
    assert frame["tenant"].to_list() == ["a", "b", "a"]
    assert frame["outcome"].to_list() == ["completed", "completed", "failed"]
    assert frame["first_scheduled_s"].is_nan().to_list() == [False, False, True]
    assert frame["cached_prompt_tokens"].to_list() == [0, 16, 0]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION
    assert config["weights"] == {"a": 1.0, "b": 1.0}  # unnamed tenants weigh 1


def test_rewrite_without_predictions_drops_the_stale_file(tmp_path: Path) -> None:
    arrays = tiny_records().to_numpy()
    summary = summarize(arrays).to_dict()
    pred = np.array([10, 12]), np.array([20, 10])
    write_run_dir(tmp_path, "simulate", {}, [("x", arrays, summary, None, pred)])
    assert (tmp_path / "predictions.parquet").exists()
    write_run_dir(tmp_path, "simulate", {}, [("x", arrays, summary, None, None)])
    assert read_run_dir(tmp_path).predictions is None


def test_writer_rejects_bad_input(tmp_path: Path) -> None:
    arrays = tiny_records().to_numpy()
    summary = summarize(arrays).to_dict()
    with pytest.raises(ValueError, match="kind"):
        write_run_dir(tmp_path, "replay", {}, [("x", arrays, summary, None, None)])
    with pytest.raises(ValueError, match="distinct"):
        write_run_dir(tmp_path, "compare", {}, [("x", arrays, summary, None, None)] * 2)
    with pytest.raises(ValueError, match="both"):
        RunData("x", arrays, summary, predicted_tokens=np.array([1]))


def test_reader_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no such directory"):
        read_run_dir(tmp_path / "absent")
    with pytest.raises(RunDirError, match=r"not a run directory \(no config.json\)"):
        read_run_dir(tmp_path)
    (tmp_path / "config.json").write_text('{"format": "fairserve-run", "format_version": 99}')
    with pytest.raises(RunDirError, match="format_version 99"):
        read_run_dir(tmp_path)


def test_records_frame_is_parquet(simulate_dir: Path) -> None:
    frame = pl.read_parquet(simulate_dir / "records.parquet")
    assert {"run", "tenant", "outcome", "arrival_s", "finish_s", "output_tokens"} <= set(
        frame.columns
    )
