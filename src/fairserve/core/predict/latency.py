"""Latency predictor: what a request would see if dispatched now to an instance.

Input is the instance's batch composition at dispatch (:class:`BatchState`):
how many sequences decode and their KV context, how many prefill tokens and
requests are queued ahead, the output its requests are predicted to still
produce, and the request's own prompt and predicted output.

Two model versions, both linear in the terms of an engine step's cost
(a fixed part, a part per prefill token, per decoding sequence and per KV
token read) times the steps the request lives through, with non-negative
coefficients of least mean absolute relative error (:func:`_nnls_relative`):

* :class:`BatchLatencyModel` (version 2, :func:`fit_batch_model`): TTFT, TPOT
  (mean time per output token after the first), E2E and slowdown (E2E over
  E2E on an idle engine), fitted on states that carry a length predictor's
  *estimate* of the output, so its E2E is honest about that estimate
  (:func:`design2` describes the terms);
* :class:`LatencyModel` (version 1, :func:`fit`): TTFT and E2E only, fitted
  on the true output length. Kept so saved version-1 files still serve:

  - TTFT ~ a*P + S*(b + c*D + d*K/1000), where P = queued prefill + prompt
    tokens, S = the steps needed to prefill them beside D decodes with the
    token budget, K = the decodes' context tokens;
  - E2E ~ TTFT terms + O*(e + f*(D+1) + g*(K + D*O/2 + prompt + O/2)/1000),
    O the (predicted) output tokens.

Fitted models are plain objects (``predict_state`` gives a
:class:`LatencyPrediction`); they do no I/O and read no clock, so admission
and routing can call them per decision. Training data come from simulator
telemetry (``fairserve predictor latency``, :mod:`fairserve.sim.telemetry`);
saving and loading (JSON) is :mod:`fairserve.store.models`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
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
    #: Requests queued at the instance (not yet in its batch).
    num_waiting: int = 0
    #: Output tokens the instance's other requests are predicted to still produce.
    batch_remaining_tokens: int = 0

    def __post_init__(self) -> None:
        for key in ("num_decodes", "decode_context_tokens", "queued_prefill_tokens",
                    "num_waiting", "batch_remaining_tokens"):  # fmt: skip
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

    def predict_state(self, state: BatchState) -> LatencyPrediction:
        """The version-2 interface from this model's two figures: TPOT spreads the
        decode time over the output, slowdown divides by the idle engine's E2E."""
        ttft, e2e = self.predict(state)
        idle = BatchState(0, 0, 0, state.prompt_tokens, state.predicted_output_tokens)
        alone = max(self.predict(idle)[1], 1e-9)
        tpot = (e2e - ttft) / max(1, state.predicted_output_tokens - 1)
        return LatencyPrediction(ttft, tpot, e2e, max(1.0, e2e / alone))

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


def _nnls_relative(
    x: F64, y: F64, rounds: int = 15, sample_weight: F64 | None = None
) -> tuple[float, ...]:
    """Non-negative coefficients minimising the (weighted) mean absolute relative error.

    Iteratively reweighted least squares: each round solves a weighted NNLS
    whose weights ``1 / (y |residual|)`` make squared error mimic absolute
    relative error (plain squared relative error would bias estimates low).
    """
    y = np.maximum(y, 1e-9)
    base = np.ones_like(y) if sample_weight is None else sample_weight
    weight = base / y**2  # round one: squared relative error
    coef = np.zeros(x.shape[1])
    for _ in range(rounds):
        root = np.sqrt(weight)
        coef, _ = optimize.nnls(x * root[:, None], y * root, maxiter=50 * x.shape[1])
        rel = np.abs(x @ coef - y) / y
        weight = base / (y**2 * np.maximum(rel, 1e-3))
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


# ---------------------------------------------------------------- version 2
#: Version of :class:`BatchLatencyModel` (a saved file names it).
MODEL_VERSION = 2

TTFT2_TERMS = (
    "prefill_tokens", "steps", "steps_x_decodes", "steps_x_kv_k",
    "seat_turns", "seat_turns_x_decodes", "seat_turns_x_kv_k",
)  # fmt: skip
TPOT_TERMS = ("one", "batch", "context_k", "queued_prefill_per_out_k")
E2E2_TERMS = (*TTFT2_TERMS, *(f"out_x_{t}" for t in TPOT_TERMS))


def _columns(states: Sequence[BatchState]) -> F64:
    return np.asarray(
        [
            (s.num_decodes, s.decode_context_tokens, s.queued_prefill_tokens, s.prompt_tokens,
             s.predicted_output_tokens, s.num_waiting, s.batch_remaining_tokens)
            for s in states
        ],
        dtype=np.float64,
    ).reshape(-1, 7)  # fmt: skip


def design2(states: Sequence[BatchState], token_budget: int) -> tuple[F64, F64, F64]:
    """TTFT, TPOT and E2E design matrices of :class:`BatchLatencyModel` (columns as
    ``TTFT2_TERMS``, ``TPOT_TERMS`` and ``E2E2_TERMS``).

    * TTFT: the prefill steps (``S`` steps for the queued and own prefill beside
      ``D`` decodes in the token budget) plus, when requests wait for a seat,
      the turns of the batch until one frees (``W / D``: the requests queued
      ahead over the seats; a turn lasts a typical answer's decode steps), each
      step costing a fixed part, a part per decode and per KV token read.
    * TPOT: one decode step of the batch it joins: fixed, per sequence
      (``D + 1``), per KV token read (the batch's and its own context, grown by
      half its estimated output), and the prefill chunks that share its steps
      (the queued prefill ``Q`` per output token it will produce: a queue of
      long prompts keeps every step of its decode full of prefill).
    * E2E: the TTFT terms plus the estimated output ``O`` (less the first token)
      times the TPOT terms; fitted on its own, so the coefficients absorb how
      far the estimate is off on average.

    The queue and the batch enter through physical quantities (steps, turns,
    KV tokens), so a load heavier than the training one extrapolates along them.
    """
    c = _columns(states)
    d, k, q, p, o, w = (c[:, i] for i in range(6))
    steps = np.maximum(1.0, np.ceil((q + p) / np.maximum(token_budget - d, 1.0)))
    turns = w / np.maximum(d, 1.0)
    ttft = np.column_stack([q + p, steps, steps * d, steps * k / 1000.0,
                            turns, turns * d, turns * k / 1000.0])  # fmt: skip
    context = k + p + (d + 1.0) * o / 2.0
    # Prefill tokens per step of its decode: at most what the budget leaves the decodes.
    prefill = np.minimum(q / o, np.maximum(token_budget - d, 0.0))
    tpot = np.column_stack([np.ones_like(d), d + 1.0, context / 1000.0, prefill / 1000.0])
    e2e = np.column_stack([ttft, tpot * np.maximum(o - 1.0, 0.0)[:, None]])
    return ttft, tpot, e2e


ALONE_TERMS = ("prefill_tokens", "steps", "out_tokens", "out_x_context_k")


def design_alone(states: Sequence[BatchState], token_budget: int) -> F64:
    """Design of the latency *alone* (an idle engine): the prompt's prefill steps,
    then the output's decode steps of one sequence reading its growing context."""
    c = _columns(states)
    p, o = c[:, 3], np.maximum(c[:, 4] - 1.0, 0.0)
    steps = np.maximum(1.0, np.ceil(p / token_budget))
    return np.column_stack([p, steps, o, o * (p + o / 2.0) / 1000.0])


def seat_wait_steps(states: Sequence[BatchState], max_num_seqs: int) -> F64:
    """Decode steps a request waits for a seat: none while the batch has one free.

    With ``D`` running and ``max_num_seqs`` seats, a request behind ``W`` queued
    ones needs ``W + 1 - (max_num_seqs - D)`` seats to free. A full batch frees
    seats at its completion rate, ``D`` per typical answer's length (Little's
    law; the request's own estimate ``O`` stands for that length: what is left
    of the running answers, ``R``, is biased low, since the answers still
    running are the long ones), so the wait is ``ahead x O / D`` decode steps.
    Each costs one decode step of the batch (the TPOT model's), which is how
    the wait extrapolates to queues longer than any in the training data.
    """
    c = _columns(states)
    d, o, w = c[:, 0], c[:, 4], c[:, 5]
    ahead = np.maximum(0.0, w + 1.0 - np.maximum(max_num_seqs - d, 0.0))
    return np.asarray(ahead * o / np.maximum(d, 1.0), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class LatencyPrediction:
    """What a request dispatched into a given batch is predicted to see."""

    ttft_s: float
    tpot_s: float  # mean time per output token after the first
    e2e_s: float
    slowdown: float  # E2E in this batch over E2E alone, estimated output both ways


@dataclass(frozen=True, slots=True)
class BatchLatencyModel:
    """Version-2 latency model: TTFT, TPOT, E2E and slowdown from the batch at dispatch.

    Fitted on states that carry the output length a *length predictor*
    estimated (``length_predictor``, a registry spec such as ``history``), so
    its E2E is honest about that estimate; a saved model names the predictor,
    the token budget and the hardware it was fitted for, so it can be scored on
    another workload the same way. Coefficients are seconds per term
    (``TTFT2_TERMS``, ``TPOT_TERMS``, ``E2E2_TERMS``, ``ALONE_TERMS``).
    Slowdown is ``(TTFT + (O-1) TPOT) / alone(O)``: the estimate's error
    largely cancels in the ratio.
    """

    ttft_coef: tuple[float, ...]
    tpot_coef: tuple[float, ...]
    e2e_coef: tuple[float, ...]
    alone_coef: tuple[float, ...]
    token_budget: int
    length_predictor: str = "history"
    gpu: str = "H100-80GB"
    model: str = "Llama-3.1-8B"
    #: The engine's seats (``max_num_seqs``): a request waits for one only when all are taken.
    max_num_seqs: int = 256

    def __post_init__(self) -> None:
        for name, coef, terms in self._groups():
            if len(coef) != len(terms):
                raise ValueError(f"latency model: {name} needs {len(terms)} coefficients")
        if self.token_budget < 1:
            raise ValueError(f"latency model: token_budget must be >= 1, got {self.token_budget}")
        if self.max_num_seqs < 1:
            raise ValueError(f"latency model: max_num_seqs must be >= 1, got {self.max_num_seqs}")

    def _groups(self) -> tuple[tuple[str, tuple[float, ...], tuple[str, ...]], ...]:
        return (("ttft", self.ttft_coef, TTFT2_TERMS), ("tpot", self.tpot_coef, TPOT_TERMS),
                ("e2e", self.e2e_coef, E2E2_TERMS), ("alone", self.alone_coef, ALONE_TERMS))  # fmt: skip

    def predict_many(self, states: Sequence[BatchState]) -> dict[str, F64]:
        """Arrays ``ttft_s``, ``tpot_s``, ``e2e_s``, ``slowdown`` and ``alone_e2e_s``."""
        x_ttft, x_tpot, x_e2e = design2(states, self.token_budget)
        tpot = x_tpot @ np.asarray(self.tpot_coef)
        seat_s = seat_wait_steps(states, self.max_num_seqs) * tpot
        ttft = x_ttft @ np.asarray(self.ttft_coef) + seat_s
        e2e = np.maximum(x_e2e @ np.asarray(self.e2e_coef) + seat_s, ttft)
        alone = np.maximum(design_alone(states, self.token_budget) @ np.asarray(self.alone_coef),
                           1e-9)  # fmt: skip
        gaps = np.maximum(_columns(states)[:, 4] - 1.0, 0.0)
        slowdown = np.maximum((ttft + gaps * tpot) / alone, 1.0)
        return {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e, "slowdown": slowdown,
                "alone_e2e_s": alone}  # fmt: skip

    def predict_state(self, state: BatchState) -> LatencyPrediction:
        """The prediction for one dispatch decision."""
        out = self.predict_many([state])
        return LatencyPrediction(float(out["ttft_s"][0]), float(out["tpot_s"][0]),
                                 float(out["e2e_s"][0]), float(out["slowdown"][0]))  # fmt: skip

    def as_dict(self) -> dict[str, object]:
        """Coefficients by term name plus what scoring elsewhere needs (for JSON)."""
        data: dict[str, object] = {"version": MODEL_VERSION}
        for name, coef, terms in self._groups():
            data[name] = dict(zip(terms, coef, strict=True))
        data |= {"token_budget": self.token_budget, "length_predictor": self.length_predictor,
                 "gpu": self.gpu, "model": self.model, "max_num_seqs": self.max_num_seqs}  # fmt: skip
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchLatencyModel:
        """Inverse of :meth:`as_dict`; an error names the missing or bad key."""
        coef: dict[str, tuple[float, ...]] = {}
        key = "?"
        try:
            for key, terms in (("ttft", TTFT2_TERMS), ("tpot", TPOT_TERMS),
                               ("e2e", E2E2_TERMS), ("alone", ALONE_TERMS)):  # fmt: skip
                coef[key] = tuple(float(data[key][t]) for t in terms)
            key = "token_budget"
            budget = int(data["token_budget"])
            key = "length_predictor"
            extra = {k: str(data[k]) for k in ("length_predictor", "gpu", "model") if k in data}
            key = "max_num_seqs"
            seats = int(data.get("max_num_seqs", 256))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"latency model: missing or bad key {key!r} ({exc})") from None
        return cls(coef["ttft"], coef["tpot"], coef["e2e"], coef["alone"], budget, **extra,
                   max_num_seqs=seats)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LatencySamples:
    """Training or scoring rows: states at dispatch (estimated outputs) and what followed."""

    states: Sequence[BatchState]
    output_tokens: npt.ArrayLike  # the true lengths: labels only
    ttft_s: npt.ArrayLike
    tpot_s: npt.ArrayLike  # NaN for one-token answers
    e2e_s: npt.ArrayLike
    alone_e2e_s: npt.ArrayLike
    #: Extra (prompt, output) pairs with their E2E alone, e.g. a grid from the cost
    #: model, so the alone fit also sees the tiny and huge requests a trace may hold.
    alone_grid: tuple[Sequence[BatchState], npt.ArrayLike] | None = None


def fit_batch_model(
    samples: LatencySamples,
    token_budget: int,
    length_predictor: str = "history",
    gpu: str = "H100-80GB",
    model: str = "Llama-3.1-8B",
    max_num_seqs: int = 256,
) -> BatchLatencyModel:
    """Fit every target by least mean absolute relative error, non-negative coefficients.

    TTFT, TPOT and E2E are fitted on the states as dispatched (estimated
    outputs); the alone model on the true lengths (its label is the cost of
    the request alone, known exactly in the simulator). TPOT first: the wait
    for a seat (:func:`seat_wait_steps` decode steps of the batch, each the
    fitted TPOT) is a fixed part of TTFT and E2E, fitted around.
    """
    states = list(samples.states)
    if len(states) < len(E2E2_TERMS):
        raise ValueError(f"need at least {len(E2E2_TERMS)} samples, got {len(states)}")
    ttft, tpot, e2e, alone = (np.asarray(v, dtype=np.float64) for v in
                              (samples.ttft_s, samples.tpot_s, samples.e2e_s, samples.alone_e2e_s))  # fmt: skip
    if not len(states) == ttft.size == tpot.size == e2e.size == alone.size:
        raise ValueError("samples: states and every label must have the same length")
    x_ttft, x_tpot, x_e2e = design2(states, token_budget)
    has_tpot = np.isfinite(tpot)
    truth = [replace(s, predicted_output_tokens=max(1, int(o)))
             for s, o in zip(states, np.asarray(samples.output_tokens).tolist(), strict=True)]  # fmt: skip
    alone_weight = np.ones(len(truth))
    if samples.alone_grid is not None and len(samples.alone_grid[0]):
        grid = list(samples.alone_grid[0])
        truth += grid
        alone = np.concatenate([alone, np.asarray(samples.alone_grid[1], dtype=np.float64)])
        # The grid counts as much as all the rows together: it holds the extremes.
        alone_weight = np.concatenate([alone_weight, np.full(len(grid), len(states) / len(grid))])
    tpot_coef = _nnls_relative(x_tpot[has_tpot], tpot[has_tpot])
    seat_s = seat_wait_steps(states, max_num_seqs) * (x_tpot @ np.asarray(tpot_coef))
    return BatchLatencyModel(
        _nnls_around(x_ttft, ttft, seat_s, _regime_weights(states)),
        tpot_coef,
        _nnls_around(x_e2e, e2e, seat_s, np.ones_like(e2e)),
        _nnls_relative(design_alone(truth, token_budget), alone, sample_weight=alone_weight),
        token_budget, length_predictor, gpu, model, max_num_seqs,
    )  # fmt: skip


def _nnls_around(x: F64, y: F64, known: F64, weight: F64) -> tuple[float, ...]:
    """:func:`_nnls_relative` of ``x @ coef + known ~ y``: the part ``known`` is fixed.

    The relative error ``|x c + known - y| / y`` is that of the rest,
    ``|x c - (y - known)| / (y - known)``, scaled by ``(y - known) / y``; a row
    whose known part already exceeds it keeps a small floor.
    """
    y = np.maximum(y, 1e-9)
    rest = np.maximum(y - known, 1e-3 * y)
    return _nnls_relative(x, rest, sample_weight=weight * rest / y)


def _regime_weights(states: Sequence[BatchState]) -> F64:
    """Weights that give the three queue regimes (none waiting, a few, eight or more)
    equal say in the TTFT fit. A swinging load spends most dispatches at an idle or
    light engine; unweighted, the fit hardly sees a queue and underestimates TTFT
    under heavy load (measured: 45.6% -> 38.9% MAE at twice the training load)."""
    waiting = _columns(states)[:, 5]
    weight = np.ones_like(waiting)
    regimes = [waiting == 0, (waiting > 0) & (waiting < 8), waiting >= 8]
    present = sum(1 for mask in regimes if mask.any())
    for mask in regimes:
        if mask.any():
            weight[mask] = waiting.size / (present * mask.sum())
    return weight


#: The targets :func:`score` reports, with the label each is measured against.
TARGETS = ("ttft_s", "tpot_s", "e2e_s", "slowdown")


def score(model: BatchLatencyModel, samples: LatencySamples) -> dict[str, float]:
    """Mean absolute % error of each target (``ttft``, ``tpot``, ``e2e``, ``slowdown``)
    and the median for each (``*_median``), over ``samples``."""
    pred = model.predict_many(list(samples.states))
    e2e = np.asarray(samples.e2e_s, dtype=np.float64)
    truth = {"ttft_s": np.asarray(samples.ttft_s, dtype=np.float64),
             "tpot_s": np.asarray(samples.tpot_s, dtype=np.float64), "e2e_s": e2e,
             "slowdown": e2e / np.asarray(samples.alone_e2e_s, dtype=np.float64)}  # fmt: skip
    out: dict[str, float] = {}
    for target in TARGETS:
        keep = np.isfinite(truth[target])
        ape = np.abs(pred[target][keep] - truth[target][keep]) / truth[target][keep]
        name = target.removesuffix("_s")
        out[f"{name}_mae_pct"] = float(100 * ape.mean()) if ape.size else math.nan
        out[f"{name}_median_ape_pct"] = float(100 * np.median(ape)) if ape.size else math.nan
    return out
