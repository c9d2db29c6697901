"""Fit the cost model's efficiency factors to measured step times.

Two kinds of CSV are read. Step rows, one engine step each:
``prefill_tokens, prefill_seqs, decode_seqs, kv_tokens, step_time_s`` with an
optional ``tp`` per row (``prefill_seqs``, how many sequences the prefill
tokens belong to, defaults to 1; ``kv_tokens`` counts the context the decode
sequences read, 0 in a prefill-only step). Request-level batch measurements,
``prompt, batch, out, prefill_s, tbt_s`` (optional ``tp``): each row becomes one
prefill step of ``batch`` prompts and one decode step at the mean context of
its ``out`` tokens (exact: a decode step's time is linear in its context).

The fit works on log-factors inside physical bounds, minimises the log-error
of every predicted step (robustly by default: ``Loss``) plus a weak prior that
keeps factors the data hardly constrains near their defaults, and checks first
that the data can tell each term from the others.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from fairserve.sim.cost import DURATIONS, FRACTIONS, CostModel, Efficiency

STEP_COLUMNS = ("prefill_tokens", "decode_seqs", "kv_tokens", "step_time_s")
REQUEST_COLUMNS = ("prompt", "batch", "out", "prefill_s", "tbt_s")
TERMS = FRACTIONS + DURATIONS

# Physical ranges of each factor: a fit outside them is absorbing a missing term.
BOUNDS: dict[str, tuple[float, float]] = {
    "mfu": (0.05, 1.0),
    "mbu": (0.2, 1.0),
    "attention_mfu": (0.02, 1.0),
    "kv_mbu": (0.05, 1.0),
    "interconnect_efficiency": (0.05, 1.0),
    "step_overhead_s": (1e-6, 0.2),
    "per_seq_overhead_s": (1e-8, 5e-3),
    "layer_overhead_s": (1e-8, 2e-3),
    "eager_layer_overhead_s": (1e-8, 2e-3),
    "allreduce_latency_s": (1e-7, 1e-3),
    "prefill_seq_overhead_s": (1e-8, 0.2),
}
# Weight of the prior on each log-factor, relative to one step's log-error.
PRIOR_WEIGHT = 0.002
COLLINEAR_TOLERANCE = 1e-4
# Log-error (about 5%) past which the robust loss weighs a step's error linearly.
ROBUST_SCALE = 0.05


class Loss(StrEnum):
    """How the fit weighs each step's log-error.

    ``ROBUST`` (soft L1: quadratic up to ``ROBUST_SCALE``, linear past it) fits
    the mean absolute error that ``cost check`` reports, and a few steps no
    term of the model explains (a measurement artefact, a kernel switch) pull
    the factors less than under ``SQUARES`` (plain least squares).
    """

    ROBUST = "robust"
    SQUARES = "squares"


class StepFileError(ValueError):
    """A malformed step-time file; the message names file, line and column."""


class UnidentifiableError(ValueError):
    """The steps cannot tell a term of the cost model from the others."""


@dataclass(frozen=True)
class StepTable:
    """Measured steps as arrays, in the cost model's terms (``kv_tokens`` and
    ``attn_pairs`` include the prefill tokens' own)."""

    prefill_tokens: np.ndarray
    decode_seqs: np.ndarray
    kv_tokens: np.ndarray
    attn_pairs: np.ndarray
    num_seqs: np.ndarray
    prefill_seqs: np.ndarray
    step_time_s: np.ndarray
    tp: np.ndarray

    def __len__(self) -> int:
        return int(self.step_time_s.shape[0])

    @property
    def is_prefill(self) -> np.ndarray:
        """Rows with prefill tokens (mixed steps count as prefill)."""
        return np.asarray(self.prefill_tokens > 0)

    def subset(self, mask: np.ndarray) -> StepTable:
        """The rows where ``mask`` holds."""
        return StepTable(**{k: v[mask] for k, v in self.__dict__.items()})


@dataclass(frozen=True)
class FitResult:
    """The fitted factors, how well they fit, and what the fit could not pin down."""

    model: CostModel
    rows: int
    mape_before: float  # mean absolute percentage error with the starting factors (fraction)
    mape_after: float
    errors: dict[str, object] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)  # term -> why it was not fitted
    loss: str = "robust"  # a Loss value: how the steps' errors were weighed

    def fit_dict(self) -> dict[str, object]:
        """Fit statistics for the profile file."""
        return {
            "loss": self.loss,
            "rows": self.rows,
            "mape_before": self.mape_before,
            "mape_after": self.mape_after,
            "errors": self.errors,
            "warnings": self.warnings,
            "held": self.held,
        }


# --- reading -----------------------------------------------------------------------


def _number(path: Path, line: int, column: str, text: str, integer: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    ok = math.isfinite(value) and value >= 0 and (not integer or value.is_integer())
    positive = column.endswith("_s") or column in ("tp", "batch")
    if positive:
        ok = ok and value > 0
    if not ok:
        expected = "a number > 0" if column.endswith("_s") else "an integer >= 0"
        if column in ("tp", "batch"):
            expected = "an integer >= 1"
        raise StepFileError(f"{path}:{line}: column {column!r}: expected {expected}, got {text!r}")
    return value


def _step_row(
    path: Path, line: int, row: dict[str, str], tp: int
) -> tuple[float, float, float, float, float, float]:
    """(prefill_tokens, prefill_seqs, decode_seqs, kv_tokens, step_time_s, tp) of a step row."""
    get = {c: _number(path, line, c, row[c] or "", c != "step_time_s") for c in STEP_COLUMNS}
    p = get["prefill_tokens"]
    s_text = row.get("prefill_seqs")
    seqs = _number(path, line, "prefill_seqs", s_text, True) if s_text else float(p > 0)
    if p > 0 and seqs == 0:
        raise StepFileError(f"{path}:{line}: column 'prefill_seqs': 0 with prefill tokens")
    t_text = row.get("tp")
    row_tp = _number(path, line, "tp", t_text, True) if t_text else tp
    return p, seqs, get["decode_seqs"], get["kv_tokens"], get["step_time_s"], row_tp


def _request_rows(
    path: Path, line: int, row: dict[str, str], tp: int
) -> list[tuple[float, float, float, float, float, float]]:
    """A batch measurement as its prefill step and its mean decode step."""
    get = {c: _number(path, line, c, row[c] or "", not c.endswith("_s")) for c in REQUEST_COLUMNS}
    t_text = row.get("tp")
    row_tp = _number(path, line, "tp", t_text, True) if t_text else tp
    prompt, batch, out = get["prompt"], get["batch"], get["out"]
    prefill = (prompt * batch, batch, 0.0, 0.0, get["prefill_s"], row_tp)
    # Decode steps run at contexts prompt+1 .. prompt+out-1; the mean is prompt + out/2.
    decode = (0.0, 0.0, batch, batch * (prompt + out / 2), get["tbt_s"], row_tp)
    return [prefill, decode]


def read_steps(path: Path, tp: int = 1) -> StepTable:
    """Read step rows or request-level rows; ``tp`` for rows without a ``tp`` column.

    Fails with file, line and column on bad input.
    """
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise StepFileError(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        requests = all(c in header for c in REQUEST_COLUMNS)
        missing = [c for c in STEP_COLUMNS if c not in header]
        if missing and not requests:
            raise StepFileError(
                f"{path}:1: missing column(s) {', '.join(missing)}; required: "
                f"{', '.join(STEP_COLUMNS)} (step rows) or {', '.join(REQUEST_COLUMNS)} (requests)"
            )
        rows: list[tuple[float, float, float, float, float, float]] = []
        for row in reader:
            if requests:
                rows.extend(_request_rows(path, reader.line_num, row, tp))
            else:
                rows.append(_step_row(path, reader.line_num, row, tp))
    if not rows:
        raise StepFileError(f"{path}: no steps (the file has a header but no rows)")
    return _table(np.asarray(rows, dtype=np.float64))


def _table(rows: np.ndarray) -> StepTable:
    p, s, d, k, t, tp = rows.T
    # Prefill chunks are taken as equal and fresh: sum of n(n+1)/2 over the s chunks.
    chunk = np.divide(p, s, out=np.zeros_like(p), where=s > 0)
    pairs = k + s * chunk * (chunk + 1) / 2
    return StepTable(p, d, k + p, pairs, d + s, s, t, tp.astype(np.int64))


# --- predicting and scoring ----------------------------------------------------------


def predict(base: CostModel, efficiency: Efficiency, steps: StepTable) -> np.ndarray:
    """Predicted step times, each row on a model at its own ``tp``."""
    out = np.empty(len(steps))
    for tp in np.unique(steps.tp):
        mask = steps.tp == tp
        model = CostModel(base.gpu, base.model, int(tp), efficiency)
        part = steps.subset(mask)
        out[mask] = model.step_times_s(
            part.prefill_tokens,
            part.decode_seqs,
            part.kv_tokens,
            part.attn_pairs,
            part.num_seqs,
            part.prefill_seqs,
        )
    return out


def _scores(pct: np.ndarray, prefill: np.ndarray) -> dict[str, float | int | None]:
    def mean(mask: np.ndarray) -> float | None:
        return round(float(np.mean(pct[mask])), 3) if mask.any() else None

    everything = np.ones_like(prefill, dtype=bool)
    return {
        "n": int(pct.shape[0]),
        "mape": mean(everything),
        "mape_prefill": mean(prefill),
        "mape_decode": mean(~prefill),
    }


def errors(base: CostModel, efficiency: Efficiency, steps: StepTable) -> dict[str, object]:
    """Absolute percentage errors: overall, per regime, and per tp (``by_tp``)."""
    pred = predict(base, efficiency, steps)
    pct = 100.0 * np.abs(pred - steps.step_time_s) / steps.step_time_s
    prefill = steps.is_prefill
    result: dict[str, object] = dict(_scores(pct, prefill))
    result["by_tp"] = {
        str(int(tp)): _scores(pct[steps.tp == tp], prefill[steps.tp == tp])
        for tp in np.unique(steps.tp)
    }
    return result


# --- fitting ---------------------------------------------------------------------------


def _log_residuals(
    base: CostModel, start: Efficiency, names: list[str], x: np.ndarray, steps: StepTable
) -> np.ndarray:
    values = {n: float(math.exp(v)) for n, v in zip(names, x, strict=True)}
    eff = Efficiency(**{**asdict(start), **values})
    return np.asarray(np.log(predict(base, eff, steps) / steps.step_time_s))


def _jacobian(
    base: CostModel, start: Efficiency, names: list[str], x: np.ndarray, steps: StepTable
) -> np.ndarray:
    h = -1e-4  # a backward step: a factor at its bound of 1 stays valid
    r0 = _log_residuals(base, start, names, x, steps)
    cols = []
    for i in range(len(names)):
        xi = x.copy()
        xi[i] += h
        cols.append((_log_residuals(base, start, names, xi, steps) - r0) / h)
    return np.stack(cols, axis=1)


def identify(
    base: CostModel, start: Efficiency, names: list[str], steps: StepTable
) -> tuple[list[str], dict[str, str]]:
    """The terms the steps can fit, and why each other term cannot be.

    A term no row depends on is held (it cannot change these predictions); a
    term whose effect on the rows is a mix of other terms' effects cannot be
    told apart from them and raises ``UnidentifiableError``.
    """
    x = np.log([getattr(start, n) for n in names])
    jac = _jacobian(base, start, names, x, steps)
    norms = np.linalg.norm(jac, axis=0)
    held = {n: "no row depends on it" for n, v in zip(names, norms, strict=True) if v < 1e-9}
    live = [i for i, n in enumerate(names) if n not in held]
    # Each term against the terms before it (TERMS order): the one refused is
    # the later of a collinear group, and its mates are the ones that explain it.
    for k, i in enumerate(live):
        others = live[:k]
        if not others:
            continue
        a = jac[:, others] / norms[others]
        coef, *_ = np.linalg.lstsq(a, jac[:, i] / norms[i], rcond=None)
        left = np.linalg.norm(jac[:, i] / norms[i] - a @ coef)
        if left < COLLINEAR_TOLERANCE:
            mates = [names[others[j]] for j in np.argsort(-np.abs(coef))[:2]]
            raise UnidentifiableError(
                f"these steps cannot identify {names[i]}: its effect on every row is that of "
                f"{' and '.join(mates)}; add steps that separate them (other tp degrees, models "
                f"or batch shapes) or hold one at its default (--fix {names[i]})"
            )
    return [names[i] for i in live], held


def _robust(r: np.ndarray) -> np.ndarray:
    """Residuals whose squares sum to the soft-L1 loss of ``r`` (signs kept)."""
    z = r / ROBUST_SCALE
    return np.asarray(np.sign(r) * ROBUST_SCALE * np.sqrt(2.0 * (np.sqrt(1.0 + z * z) - 1.0)))


def fit(
    model: CostModel, steps: StepTable, fixed: tuple[str, ...] = (), loss: Loss = Loss.ROBUST
) -> FitResult:
    """Fit ``model``'s efficiency factors to ``steps``; the hardware and shape stay fixed.

    ``fixed`` names factors to hold at their starting values; ``loss`` how each
    step's log-error counts (the prior on the factors is quadratic either way).
    Raises ``UnidentifiableError`` when the steps cannot tell a term from the others.
    """
    unknown = [n for n in fixed if n not in TERMS]
    if unknown:
        raise ValueError(f"unknown factor(s) {', '.join(unknown)}; factors: {', '.join(TERMS)}")
    start = model.efficiency
    names, held = identify(model, start, [n for n in TERMS if n not in fixed], steps)
    held.update({n: "held by request" for n in fixed})
    lower = np.log([BOUNDS[n][0] for n in names])
    upper = np.log([BOUNDS[n][1] for n in names])
    prior = np.clip(np.log([getattr(start, n) for n in names]), lower + 1e-9, upper - 1e-9)
    weight = PRIOR_WEIGHT * math.sqrt(len(steps))

    def residuals(x: np.ndarray) -> np.ndarray:
        data = _log_residuals(model, start, names, x, steps)
        if loss is Loss.ROBUST:
            data = _robust(data)
        return np.concatenate([data, weight * (x - prior) / math.log(10)])

    result = least_squares(
        residuals, prior, bounds=(lower, upper), x_scale="jac", ftol=1e-12, xtol=1e-12
    )
    values = {n: float(math.exp(v)) for n, v in zip(names, result.x, strict=True)}
    fitted = Efficiency(**{**asdict(start), **values})
    warnings = [
        f"{n} = {values[n]:.3g} sits on its bound {BOUNDS[n]}: a term the model lacks may be "
        "absorbed by it"
        for n, v, lo, hi in zip(names, result.x, lower, upper, strict=True)
        if v - lo < 1e-3 or hi - v < 1e-3
    ]
    before = errors(model, start, steps)
    after = errors(model, fitted, steps)
    return FitResult(
        model.with_efficiency(fitted),
        len(steps),
        float(before["mape"]) / 100,  # type: ignore[arg-type]
        float(after["mape"]) / 100,  # type: ignore[arg-type]
        after,
        warnings,
        held,
        loss.value,
    )
