"""Latency predictor: the TTFT and E2E a request would get if dispatched now to an instance.

Input is the instance's batch composition at dispatch (:class:`BatchState`):
how many sequences decode and their KV context, how many prefill tokens are
queued ahead, and the request's own prompt and predicted output. The model is
physically motivated, linear in the terms of an engine step's cost (a step
costs a fixed part, a part per prefill token, per decoding sequence and per
KV token read) multiplied by how many steps the request waits through:

* TTFT ~ a*P + S*(b + c*D + d*K/1000), where P = queued prefill + prompt
  tokens, S = the steps needed to prefill them beside D decodes with the
  token budget, K = the decodes' context tokens;
* E2E ~ TTFT terms + O*(e + f*(D+1) + g*(K + D*O/2 + prompt + O/2)/1000),
  O the (predicted) output tokens: the decode steps, each reading a context
  that grows as the batch generates.

Coefficients are non-negative (:func:`fit`: the least mean absolute relative
error, so short and long requests count alike). The fitted model is
a plain object with :meth:`LatencyModel.predict`; it does no I/O and reads no
clock, so admission and routing can call it per decision. Training data come
from simulator telemetry (``fairserve predictor latency``); saving and loading
the model (JSON) is :mod:`fairserve.store.models`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BatchState:
    """An instance's load as seen by one request at dispatch, plus the request's size."""

    num_decodes: int
    decode_context_tokens: int
    queued_prefill_tokens: int
    prompt_tokens: int
    predicted_output_tokens: int

    def __post_init__(self) -> None:
        for key in ("num_decodes", "decode_context_tokens", "queued_prefill_tokens"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.prompt_tokens < 1 or self.predicted_output_tokens < 1:
            raise ValueError("prompt_tokens and predicted_output_tokens must be >= 1")


TTFT_TERMS = ("prefill_tokens", "steps", "steps_x_decodes", "steps_x_kv_k")
E2E_TERMS = (*TTFT_TERMS, "out_tokens", "out_x_batch", "out_x_context_k")


def _as_arrays(states: Sequence[BatchState]) -> tuple[F64, F64, F64, F64, F64]:
    cols = np.asarray(
        [
            (
                s.num_decodes,
                s.decode_context_tokens,
                s.queued_prefill_tokens,
                s.prompt_tokens,
                s.predicted_output_tokens,
            )
            for s in states
        ],
        dtype=np.float64,
    ).reshape(-1, 5)
    return cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3], cols[:, 4]


def design(states: Sequence[BatchState], token_budget: int) -> tuple[F64, F64]:
    """The TTFT and E2E design matrices (one row per state, columns as the *_TERMS)."""
    d, k, q, p, o = _as_arrays(states)
    prefill = q + p
    steps = np.maximum(1.0, np.ceil(prefill / np.maximum(token_budget - d, 1.0)))
    ttft = np.column_stack([prefill, steps, steps * d, steps * k / 1000.0])
    context = k + d * o / 2.0 + p + o / 2.0
    decode = np.column_stack([o, o * (d + 1.0), o * context / 1000.0])
    return ttft, np.column_stack([ttft, decode])


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Fitted coefficients (seconds per term) and the engine's token budget."""

    ttft_coef: tuple[float, ...]
    e2e_coef: tuple[float, ...]
    token_budget: int

    def predict(self, state: BatchState) -> tuple[float, float]:
        """``(ttft_s, e2e_s)`` for one dispatch decision."""
        ttft, e2e = self.predict_many([state])
        return float(ttft[0]), float(e2e[0])

    def predict_many(self, states: Sequence[BatchState]) -> tuple[F64, F64]:
        """TTFT and E2E arrays for many states at once."""
        x_ttft, x_e2e = design(states, self.token_budget)
        ttft = x_ttft @ np.asarray(self.ttft_coef)
        e2e = np.maximum(x_e2e @ np.asarray(self.e2e_coef), ttft)
        return ttft, e2e

    def predict_view(
        self, num_decodes: int, decode_context_tokens: int, queued_prefill_tokens: int,
        prompt_tokens: int, predicted_output_tokens: int,
    ) -> tuple[float, float]:  # fmt: skip
        """``(ttft_s, e2e_s)`` from an instance's load figures and the request's size."""
        state = BatchState(num_decodes, decode_context_tokens, queued_prefill_tokens,
                           prompt_tokens, max(1, predicted_output_tokens))  # fmt: skip
        return self.predict(state)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyModel:
        """Inverse of :meth:`as_dict` (a saved model); errors name the missing key."""
        try:
            ttft = tuple(float(data["ttft"][t]) for t in TTFT_TERMS)
            e2e = tuple(float(data["e2e"][t]) for t in E2E_TERMS)
            return cls(ttft, e2e, int(data["token_budget"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"latency model: missing or bad key {exc}") from exc

    def as_dict(self) -> dict[str, object]:
        """Coefficients by term name (for JSON and docs)."""
        return {
            "ttft": dict(zip(TTFT_TERMS, self.ttft_coef, strict=True)),
            "e2e": dict(zip(E2E_TERMS, self.e2e_coef, strict=True)),
            "token_budget": self.token_budget,
        }


def _nnls_relative(x: F64, y: F64, rounds: int = 15) -> tuple[float, ...]:
    """Non-negative coefficients minimising the mean absolute relative error.

    Iteratively reweighted least squares: each round solves a weighted NNLS
    whose weights ``1 / (y |residual|)`` make squared error mimic absolute
    relative error (plain squared relative error would bias estimates low).
    """
    y = np.maximum(y, 1e-9)
    weight = 1.0 / y**2  # round one: squared relative error
    coef = np.zeros(x.shape[1])
    for _ in range(rounds):
        root = np.sqrt(weight)
        coef, _ = optimize.nnls(x * root[:, None], y * root, maxiter=50 * x.shape[1])
        rel = np.abs(x @ coef - y) / y
        weight = 1.0 / (y**2 * np.maximum(rel, 1e-3))
    return tuple(float(c) for c in coef)


def fit(
    states: Sequence[BatchState], ttft_s: npt.ArrayLike, e2e_s: npt.ArrayLike, token_budget: int
) -> LatencyModel:
    """Non-negative coefficients of least mean absolute relative error, for TTFT and E2E."""
    y_ttft = np.asarray(ttft_s, dtype=np.float64)
    y_e2e = np.asarray(e2e_s, dtype=np.float64)
    if not len(states) == y_ttft.size == y_e2e.size:
        raise ValueError("states, ttft_s and e2e_s must have the same length")
    if len(states) < len(E2E_TERMS):
        raise ValueError(f"need at least {len(E2E_TERMS)} samples, got {len(states)}")
    x_ttft, x_e2e = design(states, token_budget)
    return LatencyModel(_nnls_relative(x_ttft, y_ttft), _nnls_relative(x_e2e, y_e2e), token_budget)


def mae_percent(predicted: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Mean absolute error relative to the actual value, in percent."""
    pred = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(actual, dtype=np.float64)
    if pred.size == 0:
        return math.nan
    return float(100.0 * np.mean(np.abs(pred - true) / np.maximum(true, 1e-12)))


@dataclass(frozen=True, slots=True)
class LatencyReport:
    """Held-out error of a fitted latency model."""

    train_rows: int
    test_rows: int
    ttft_mae_pct: float
    e2e_mae_pct: float
    ttft_median_ape_pct: float
    e2e_median_ape_pct: float

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON output."""
        return asdict(self)


def fit_and_score(
    states: Sequence[BatchState],
    ttft_s: npt.ArrayLike,
    e2e_s: npt.ArrayLike,
    token_budget: int,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> tuple[LatencyModel, LatencyReport]:
    """Fit on a random part of the samples and report the error on the rest."""
    y_ttft = np.asarray(ttft_s, dtype=np.float64)
    y_e2e = np.asarray(e2e_s, dtype=np.float64)
    perm = np.random.default_rng(seed).permutation(len(states))
    n_test = max(1, round(len(states) * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    model = fit([states[i] for i in train], y_ttft[train], y_e2e[train], token_budget)
    p_ttft, p_e2e = model.predict_many([states[i] for i in test])
    ape_ttft = np.abs(p_ttft - y_ttft[test]) / y_ttft[test]
    ape_e2e = np.abs(p_e2e - y_e2e[test]) / y_e2e[test]
    report = LatencyReport(
        train_rows=int(train.size),
        test_rows=int(test.size),
        ttft_mae_pct=float(100 * ape_ttft.mean()),
        e2e_mae_pct=float(100 * ape_e2e.mean()),
        ttft_median_ape_pct=float(100 * np.median(ape_ttft)),
        e2e_median_ape_pct=float(100 * np.median(ape_e2e)),
    )
    return model, report
