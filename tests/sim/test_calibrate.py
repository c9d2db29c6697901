"""Fitting the cost model's efficiency factors from measured step times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fairserve.sim.calibrate import Loss, StepFileError, errors, fit, read_steps
from fairserve.sim.cost import CostModel, Efficiency


def write_steps(path: Path, model: CostModel, rng: np.random.Generator, noise: float) -> None:
    rows = ["prefill_tokens,prefill_seqs,decode_seqs,kv_tokens,step_time_s"]
    for _ in range(400):
        decode = int(rng.integers(0, 256))
        # 1-4 prefill sequences of one length: more than one tells the per-prefill
        # cost from the eager-launch cost every non-decode step pays.
        chunks = int(rng.choice([0, 0, int(rng.integers(1, 5))]))
        chunk = int(rng.integers(16, 2048))
        prefill = chunks * chunk
        if decode == 0 and prefill == 0:
            decode = 1
        context = decode * int(rng.integers(100, 3000))  # what the decodes read
        pairs = context + chunks * chunk * (chunk + 1) // 2
        seqs = decode + chunks
        t = model.step_time_s(prefill, decode, context + prefill, pairs, seqs, chunks)
        t *= 1 + noise * rng.standard_normal()
        rows.append(f"{prefill},{chunks},{decode},{context},{t:.9g}")
    path.write_text("\n".join(rows) + "\n")


def test_fit_recovers_the_factors_that_made_the_steps(tmp_path: Path) -> None:
    truth = Efficiency(
        mfu=0.42, mbu=0.66, step_overhead_s=0.0012, per_seq_overhead_s=0.00001, kv_mbu=0.5
    )
    measured = CostModel.from_names("H100-80GB", "Llama-3.1-8B", 1, truth)
    path = tmp_path / "steps.csv"
    write_steps(path, measured, np.random.default_rng(3), noise=0.01)
    base = CostModel.from_names("H100-80GB", "Llama-3.1-8B")
    # One model: the per-step and per-layer overheads act alike, so one is held.
    result = fit(base, read_steps(path), fixed=("layer_overhead_s",))
    eff = result.model.efficiency
    assert eff.mfu == pytest.approx(truth.mfu, rel=0.05)
    assert eff.mbu == pytest.approx(truth.mbu, rel=0.05)
    assert eff.step_overhead_s == pytest.approx(truth.step_overhead_s, rel=0.15)
    assert eff.kv_mbu == pytest.approx(truth.kv_mbu, rel=0.05)
    assert result.mape_after < 0.02 < result.mape_before
    # tp = 1 everywhere: the all-reduce terms cannot matter and are held, not guessed.
    assert result.held["allreduce_latency_s"] == "no row depends on it"


def test_the_robust_loss_is_not_pulled_by_a_few_outlying_steps(tmp_path: Path) -> None:
    truth = Efficiency(mfu=0.42, mbu=0.66, step_overhead_s=0.0012, kv_mbu=0.5)
    measured = CostModel.from_names("H100-80GB", "Llama-3.1-8B", 1, truth)
    path = tmp_path / "steps.csv"
    write_steps(path, measured, np.random.default_rng(5), noise=0.01)
    steps = read_steps(path)
    # One step in twenty taken at 2.5x its time (a host hiccup, a kernel switch).
    spoiled = steps.step_time_s.copy()
    spoiled[::20] *= 2.5
    bad = type(steps)(**{**steps.__dict__, "step_time_s": spoiled})
    base = CostModel.from_names("H100-80GB", "Llama-3.1-8B")
    fits = {loss: fit(base, bad, ("layer_overhead_s",), loss) for loss in Loss}
    clean_error = {
        loss: errors(base, f.model.efficiency, steps)["mape"] for loss, f in fits.items()
    }
    # Against the clean steps, the robust fit stays within a few percent; least
    # squares spreads the outliers over every factor.
    assert clean_error[Loss.ROBUST] < 2.0 < clean_error[Loss.SQUARES]
    assert fits[Loss.ROBUST].model.efficiency.mfu == pytest.approx(truth.mfu, rel=0.05)


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
