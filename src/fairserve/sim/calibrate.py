"""Fit the cost model's efficiency factors to measured step times.

Input: a CSV of engine steps with columns ``prefill_tokens, decode_seqs,
kv_tokens, step_time_s`` and, optionally, ``num_seqs`` (sequences in the step;
default ``decode_seqs`` plus one if the step has prefill tokens) and
``attn_pairs`` (default ``kv_tokens + prefill_tokens * (prefill_tokens - 1) / 2``,
exact for decodes and for prefills of fresh prompts). The fit minimises the
relative error of the predicted step times (scipy's bounded least squares).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from fairserve.sim.cost import CostModel, Efficiency

REQUIRED = ("prefill_tokens", "decode_seqs", "kv_tokens", "step_time_s")
OPTIONAL = ("num_seqs", "attn_pairs")


class StepFileError(ValueError):
    """A malformed step-time file; the message names file, line and column."""


@dataclass(frozen=True)
class StepTable:
    """Measured steps as arrays."""

    prefill_tokens: np.ndarray
    decode_seqs: np.ndarray
    kv_tokens: np.ndarray
    attn_pairs: np.ndarray
    num_seqs: np.ndarray
    step_time_s: np.ndarray

    def __len__(self) -> int:
        return int(self.step_time_s.shape[0])


@dataclass(frozen=True)
class FitResult:
    """The fitted model and how well it fits."""

    model: CostModel
    rows: int
    mape_before: float  # mean absolute percentage error with the starting factors
    mape_after: float

    def fit_dict(self) -> dict[str, float]:
        """Fit statistics for the profile file."""
        return {"rows": self.rows, "mape_before": self.mape_before, "mape_after": self.mape_after}


def _number(path: Path, line: int, column: str, text: str, integer: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    ok = math.isfinite(value) and value >= 0 and (not integer or value.is_integer())
    if column == "step_time_s":
        ok = ok and value > 0
    if not ok:
        expected = "a number > 0" if column == "step_time_s" else "an integer >= 0"
        raise StepFileError(f"{path}:{line}: column {column!r}: expected {expected}, got {text!r}")
    return value


def read_steps(path: Path) -> StepTable:
    """Read a step-time CSV, failing with file, line and column on bad input."""
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise StepFileError(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise StepFileError(
                f"{path}:1: missing column(s) {', '.join(missing)}; required: {', '.join(REQUIRED)}"
            )
        cols: dict[str, list[float]] = {c: [] for c in REQUIRED + OPTIONAL}
        for row in reader:
            line = reader.line_num
            for c in REQUIRED:
                cols[c].append(_number(path, line, c, row[c] or "", c != "step_time_s"))
            p, d, k = cols["prefill_tokens"][-1], cols["decode_seqs"][-1], cols["kv_tokens"][-1]
            n_text = row.get("num_seqs")
            a_text = row.get("attn_pairs")
            cols["num_seqs"].append(
                _number(path, line, "num_seqs", n_text, True) if n_text else d + (p > 0)
            )
            cols["attn_pairs"].append(
                _number(path, line, "attn_pairs", a_text, True) if a_text else k + p * (p - 1) / 2
            )
    if not cols["step_time_s"]:
        raise StepFileError(f"{path}: no steps (the file has a header but no rows)")
    arrays = {c: np.asarray(v, dtype=np.float64) for c, v in cols.items()}
    return StepTable(**arrays)


def _predict(model: CostModel, steps: StepTable) -> np.ndarray:
    return model.step_times_s(
        steps.prefill_tokens, steps.decode_seqs, steps.kv_tokens, steps.attn_pairs, steps.num_seqs
    )


def _mape(model: CostModel, steps: StepTable) -> float:
    pred = _predict(model, steps)
    return float(np.mean(np.abs(pred - steps.step_time_s) / steps.step_time_s))


def fit(model: CostModel, steps: StepTable) -> FitResult:
    """Fit ``model``'s efficiency factors to ``steps``; the hardware and shape stay fixed."""
    start = model.efficiency
    names = ["mfu", "mbu", "step_overhead_s", "per_seq_overhead_s"]
    if model.tp > 1:
        names.append("interconnect_efficiency")
    # Overheads are fitted in milliseconds so all parameters have similar scales.
    scale = {"step_overhead_s": 1e-3, "per_seq_overhead_s": 1e-3}
    x0 = [getattr(start, n) / scale.get(n, 1.0) for n in names]
    lower = [1e-3 if n not in scale else 0.0 for n in names]
    upper = [1.0 if n not in scale else np.inf for n in names]
    x0 = [min(max(v, lo + 1e-9), hi) for v, lo, hi in zip(x0, lower, upper, strict=True)]

    def build(x: np.ndarray) -> CostModel:
        values = {n: float(v) * scale.get(n, 1.0) for n, v in zip(names, x, strict=True)}
        eff = Efficiency(**{**_as_dict(start), **values})
        return model.with_efficiency(eff)

    def residuals(x: np.ndarray) -> np.ndarray:
        pred = _predict(build(x), steps)
        return np.asarray((pred - steps.step_time_s) / steps.step_time_s)

    result = least_squares(residuals, np.asarray(x0), bounds=(lower, upper))
    fitted = build(result.x)
    return FitResult(fitted, len(steps), _mape(model, steps), _mape(fitted, steps))


def _as_dict(eff: Efficiency) -> dict[str, float]:
    return {
        "mfu": eff.mfu,
        "mbu": eff.mbu,
        "step_overhead_s": eff.step_overhead_s,
        "per_seq_overhead_s": eff.per_seq_overhead_s,
        "interconnect_efficiency": eff.interconnect_efficiency,
        "allreduce_latency_s": eff.allreduce_latency_s,
    }
