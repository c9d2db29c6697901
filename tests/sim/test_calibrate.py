"""Fitting the cost model's efficiency factors from measured step times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fairserve.sim.calibrate import StepFileError, fit, read_steps
from fairserve.sim.cost import CostModel, Efficiency


def write_steps(path: Path, model: CostModel, rng: np.random.Generator, noise: float) -> None:
    rows = ["prefill_tokens,decode_seqs,kv_tokens,step_time_s"]
    for _ in range(400):
        decode = int(rng.integers(0, 256))
        prefill = int(rng.choice([0, 0, int(rng.integers(16, 8192))]))
        if decode == 0 and prefill == 0:
            decode = 1
        kv = decode * int(rng.integers(100, 3000)) + prefill
        pairs = kv + prefill * (prefill - 1) // 2
        seqs = decode + (prefill > 0)
        t = model.step_time_s(prefill, decode, kv, pairs, seqs) * (
            1 + noise * rng.standard_normal()
        )
        rows.append(f"{prefill},{decode},{kv},{t:.9g}")
    path.write_text("\n".join(rows) + "\n")


def test_fit_recovers_the_factors_that_made_the_steps(tmp_path: Path) -> None:
    truth = Efficiency(mfu=0.42, mbu=0.66, step_overhead_s=0.0012, per_seq_overhead_s=0.00001)
    measured = CostModel.from_names("H100-80GB", "Llama-3.1-8B", 1, truth)
    path = tmp_path / "steps.csv"
    write_steps(path, measured, np.random.default_rng(3), noise=0.01)
    result = fit(CostModel.from_names("H100-80GB", "Llama-3.1-8B"), read_steps(path))
    eff = result.model.efficiency
    assert eff.mfu == pytest.approx(truth.mfu, rel=0.05)
    assert eff.mbu == pytest.approx(truth.mbu, rel=0.05)
    assert eff.step_overhead_s == pytest.approx(truth.step_overhead_s, rel=0.15)
    assert result.mape_after < 0.02 < result.mape_before


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "steps.csv"
    path.write_text("prefill_tokens,decode_seqs,step_time_s\n1,2,0.1\n")
    with pytest.raises(StepFileError, match=r"steps\.csv:1: missing column\(s\) kv_tokens"):
        read_steps(path)


def test_bad_value_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "steps.csv"
    path.write_text(
        "prefill_tokens,decode_seqs,kv_tokens,step_time_s\n0,4,400,0.01\n0,x,400,0.01\n"
    )
    with pytest.raises(
        StepFileError, match=r"steps\.csv:3: column 'decode_seqs': expected an integer"
    ):
        read_steps(path)


def test_non_positive_step_time_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "steps.csv"
    path.write_text("prefill_tokens,decode_seqs,kv_tokens,step_time_s\n0,4,400,0\n")
    with pytest.raises(StepFileError, match="step_time_s': expected a number > 0"):
        read_steps(path)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "steps.csv"
    path.write_text("prefill_tokens,decode_seqs,kv_tokens,step_time_s\n")
    with pytest.raises(StepFileError, match="no steps"):
        read_steps(path)
