"""Failed requests: how often a trace's requests fail, whether that rises with load, and a
model that draws failures for other workloads.

BurstGPT logs failed requests as rows with 0 response tokens (about 1.8% of
them). A simulation keeps them (``Request.fails``: served up to their prompt,
then ended as failed, so they cost what they cost). Whether failures rise
with load is a property of the trace: :func:`fit_failures` regresses the
failure share of each ``window_s`` window on that window's arrival rate
(binomial logistic regression, ``P(fail) = 1 / (1 + exp(-(intercept +
slope_per_rps * rate)))``), with a quasi-binomial standard error (windows vary
more than a binomial would: bursts, incidents) and a two-sided p-value for the
slope. :class:`FailureModel` applies such a fit, or a constant share, to any
workload: each request fails with the probability its local arrival rate
(arrivals within ``window_s`` centred on it, over the part of that window
inside the trace) gives, drawn from a seeded generator.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from fairserve.workload.base import Workload

F64 = npt.NDArray[np.float64]
# The slope is "rising with load" only when it is this unlikely under no slope.
RISING_P_VALUE = 0.01
MIN_WINDOWS = 4


@dataclass(frozen=True, slots=True)
class FailureModel:
    """Failure probability as a logistic function of the local arrival rate (req/s)."""

    intercept: float
    slope_per_rps: float = 0.0
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.intercept) or not math.isfinite(self.slope_per_rps):
            raise ValueError("intercept and slope_per_rps must be finite numbers")
        if not self.window_s > 0:
            raise ValueError(f"window_s must be > 0, got {self.window_s!r}")

    @classmethod
    def at_share(
        cls, share: float, mean_rate_per_s: float, slope_per_rps: float = 0.0,
        window_s: float = 60.0,
    ) -> FailureModel:  # fmt: skip
        """The model whose failure probability is ``share`` at ``mean_rate_per_s``."""
        if not 0.0 <= share < 1.0:
            raise ValueError(f"share must be in [0, 1), got {share!r}")
        logit = -math.inf if share == 0.0 else math.log(share / (1.0 - share))
        if logit == -math.inf:
            return cls(-50.0, 0.0, window_s)  # never fails (exp(-50) ~ 2e-22)
        return cls(logit - slope_per_rps * mean_rate_per_s, slope_per_rps, window_s)

    def probabilities(self, arrival_s: F64) -> F64:
        """Each arrival's failure probability, from its local arrival rate."""
        rate = local_rate_per_s(arrival_s, self.window_s)
        return np.asarray(special.expit(self.intercept + self.slope_per_rps * rate))

    def apply(self, wl: Workload, seed: int) -> Workload:
        """``wl`` with failures drawn on top of any it records (seeded)."""
        if len(wl) == 0:
            return wl
        draw = np.random.default_rng(seed).random(len(wl)) < self.probabilities(wl.arrival_s)
        failed = draw if wl.failed is None else (wl.failed | draw)
        return replace(wl, failed=np.asarray(failed, dtype=np.bool_))


def local_rate_per_s(arrival_s: F64, window_s: float) -> F64:
    """Arrivals per second within ``window_s`` centred on each arrival (sorted times).

    The count is divided by the part of the window inside the trace's span, so
    requests near the start or end are not read as quiet.
    """
    t = np.asarray(arrival_s, dtype=np.float64)
    if t.size == 0:
        return t
    half = window_s / 2.0
    lo, hi = np.searchsorted(t, t - half, "left"), np.searchsorted(t, t + half, "right")
    span = np.minimum(t + half, t[-1]) - np.maximum(t - half, t[0])
    width = np.maximum(span, min(window_s, max(t[-1] - t[0], 1e-9)) / 2.0)
    return np.asarray((hi - lo) / width, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class FailureFit:
    """What :func:`fit_failures` found (``rises_with_load``: a positive slope, p < 0.01)."""

    share: float
    windows: int
    window_s: float
    intercept: float
    slope_per_rps: float
    slope_std_err: float
    p_value: float
    rises_with_load: bool
    share_quiet: float  # failure share in the quietest quarter of windows
    share_busy: float  # ... and in the busiest quarter

    def model(self) -> FailureModel:
        """The failure model of this fit."""
        return FailureModel(self.intercept, self.slope_per_rps, self.window_s)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (JSON)."""
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _window_counts(
    arrival_s: F64, failed: npt.NDArray[np.bool_], window_s: float
) -> tuple[F64, F64]:
    """(arrivals, failures) of each full ``window_s`` window from the first arrival."""
    t = arrival_s - arrival_s[0]
    full = int(t[-1] // window_s)  # the last, partial window is left out
    idx = (t // window_s).astype(np.int64)
    keep = idx < full
    n = np.bincount(idx[keep], minlength=full).astype(np.float64)
    weights = failed[keep].astype(np.float64)
    f = np.bincount(idx[keep], weights=weights, minlength=full).astype(np.float64)
    return n, f


def _logistic(x: F64, n: F64, f: F64, rounds: int = 50) -> tuple[F64, F64]:
    """Binomial logistic regression of ``f`` failures in ``n`` trials on ``x``:
    (coefficients, their covariance), by iteratively reweighted least squares."""
    design = np.column_stack([np.ones_like(x), x])
    share = (f.sum() + 0.5) / (n.sum() + 1.0)
    beta = np.array([math.log(share / (1.0 - share)), 0.0])
    cov = np.zeros((2, 2))
    for _ in range(rounds):
        p = special.expit(design @ beta)
        w = np.maximum(n * p * (1.0 - p), 1e-12)
        info = design.T @ (design * w[:, None])
        cov = np.linalg.pinv(info)
        step = cov @ (design.T @ (f - n * p))
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta, cov


def fit_failures(wl: Workload, window_s: float = 60.0) -> FailureFit | None:
    """The failure share and its dependence on load; None without a ``failed`` column or
    with fewer than four full windows."""
    if wl.failed is None or len(wl) == 0:
        return None
    n, f = _window_counts(wl.arrival_s, wl.failed, window_s)
    seen = n > 0
    n, f = n[seen], f[seen]
    if n.size < MIN_WINDOWS:
        return None
    rate = n / window_s
    beta, cov = _logistic(rate, n, f)
    p = special.expit(beta[0] + beta[1] * rate)
    pearson = float(np.sum((f - n * p) ** 2 / np.maximum(n * p * (1.0 - p), 1e-12)))
    dispersion = max(1.0, pearson / max(1, n.size - 2))
    se = math.sqrt(max(float(cov[1, 1]), 0.0) * dispersion)
    p_value = float(2.0 * stats.norm.sf(abs(beta[1]) / se)) if se > 0 else 1.0
    order = np.argsort(rate, kind="stable")
    quarter = max(1, n.size // 4)
    quiet, busy = order[:quarter], order[-quarter:]
    return FailureFit(
        share=float(wl.failed.mean()),
        windows=int(n.size),
        window_s=window_s,
        intercept=float(beta[0]),
        slope_per_rps=float(beta[1]),
        slope_std_err=se,
        p_value=p_value,
        rises_with_load=bool(beta[1] > 0 and p_value < RISING_P_VALUE),
        share_quiet=float(f[quiet].sum() / n[quiet].sum()),
        share_busy=float(f[busy].sum() / n[busy].sum()),
    )
