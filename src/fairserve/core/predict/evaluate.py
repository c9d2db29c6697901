"""Online evaluation of output-length predictors, and a workload whose lengths drift.

:func:`replay` runs a predictor over a request stream the way a driver does:
predict at arrival, observe when the request ends (``feedback_lag`` requests
later, since outputs are known only at completion), and returns the
predictions made. :func:`drift_requests` builds the standard drift test: some
tenants' output lengths jump at the halfway point.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fairserve.core.model import Request
from fairserve.core.predict.base import Predictor


def replay(
    predictor: Predictor, requests: Iterable[Request], feedback_lag: int = 0
) -> npt.NDArray[np.float64]:
    """Predict each request in order and feed back its true length ``feedback_lag`` requests later.

    Returns the mean estimates, in request order.
    """
    if feedback_lag < 0:
        raise ValueError(f"feedback_lag must be >= 0, got {feedback_lag}")
    out: list[float] = []
    waiting: deque[Request] = deque()
    for req in requests:
        out.append(predictor.predict(req).mean_tokens)
        waiting.append(req)
        while len(waiting) > feedback_lag:
            done = waiting.popleft()
            predictor.observe(done, done.output_tokens)
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class DriftSpec:
    """A length shift: ``drifting`` tenants go from ``before_mean_tokens`` to ``after_mean_tokens``.

    Lengths are lognormal with log-space ``sigma``; the shift happens after the
    first ``switch_fraction`` of the requests. Other tenants keep
    ``before_mean_tokens``. ``rate_per_s`` sets the (Poisson) arrival times.
    """

    n_requests: int = 4000
    tenants: tuple[str, ...] = ("a", "b", "c", "d")
    drifting: tuple[str, ...] = ("a", "b")
    before_mean_tokens: float = 200.0
    after_mean_tokens: float = 600.0
    sigma: float = 0.3
    switch_fraction: float = 0.5
    rate_per_s: float = 10.0
    prompt_mean_tokens: float = 400.0
    max_tokens: int = 4096

    def __post_init__(self) -> None:
        if self.n_requests < 2:
            raise ValueError(f"n_requests must be >= 2, got {self.n_requests}")
        if not set(self.drifting) <= set(self.tenants):
            raise ValueError(f"drifting tenants {self.drifting} must be among {self.tenants}")
        if not 0 < self.switch_fraction < 1:
            raise ValueError(f"switch_fraction must be in (0, 1), got {self.switch_fraction}")


def drift_requests(spec: DriftSpec, seed: int = 0) -> list[Request]:
    """The requests of ``spec``, seeded; ids 0..n-1 in arrival order."""
    rng = np.random.default_rng(seed)
    n = spec.n_requests
    arrivals = np.cumsum(rng.exponential(1.0 / spec.rate_per_s, size=n))
    tenant_idx = rng.integers(0, len(spec.tenants), size=n)
    switch = int(n * spec.switch_fraction)
    drifting = np.isin(np.asarray(spec.tenants)[tenant_idx], spec.drifting)
    mean = np.full(n, spec.before_mean_tokens)
    mean[switch:][drifting[switch:]] = spec.after_mean_tokens
    mu = np.log(mean) - spec.sigma**2 / 2
    output = np.clip(np.rint(rng.lognormal(mu, spec.sigma)), 1, spec.max_tokens).astype(int)
    p_mu = math.log(spec.prompt_mean_tokens) - spec.sigma**2 / 2
    prompt = np.clip(np.rint(rng.lognormal(p_mu, spec.sigma, size=n)), 1, None).astype(int)
    return [
        Request(
            i,
            float(arrivals[i]),
            int(prompt[i]),
            int(output[i]),
            tenant=spec.tenants[tenant_idx[i]],
            max_tokens=spec.max_tokens,
        )
        for i in range(n)
    ]


@dataclass(frozen=True, slots=True)
class DriftResult:
    """MAE of the uncalibrated and calibrated predictor on a drift workload."""

    mae_uncalibrated_tokens: float
    mae_calibrated_tokens: float
    mae_uncalibrated_after_tokens: float
    mae_calibrated_after_tokens: float

    @property
    def cut(self) -> float:
        """Relative MAE reduction from calibration over the whole run (0.3 = 30%)."""
        return 1.0 - self.mae_calibrated_tokens / self.mae_uncalibrated_tokens


def drift_experiment(
    calibrated: Predictor,
    uncalibrated: Predictor,
    requests: Sequence[Request],
    switch_index: int,
    feedback_lag: int = 0,
) -> DriftResult:
    """Replay both predictors over ``requests`` and compare their MAE (overall and after the switch)."""
    true = np.asarray([r.output_tokens for r in requests], dtype=np.float64)
    cal = replay(calibrated, requests, feedback_lag)
    unc = replay(uncalibrated, requests, feedback_lag)
    after = slice(switch_index, None)
    return DriftResult(
        mae_uncalibrated_tokens=float(np.mean(np.abs(unc - true))),
        mae_calibrated_tokens=float(np.mean(np.abs(cal - true))),
        mae_uncalibrated_after_tokens=float(np.mean(np.abs(unc[after] - true[after]))),
        mae_calibrated_after_tokens=float(np.mean(np.abs(cal[after] - true[after]))),
    )
