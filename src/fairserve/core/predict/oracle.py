"""Oracles: predictors that read the true output length (simulation only).

They bound what a real predictor can achieve: ``oracle`` is exact, and
``noisy-oracle`` multiplies the truth by lognormal noise of a chosen sigma, so
a sweep over sigma shows how much a policy depends on prediction quality.
These are the only predictors allowed to read ``Request.output_tokens``.
"""

from __future__ import annotations

import math

from fairserve.core.model import Request
from fairserve.core.predict.base import PREDICTORS, Estimate

_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of an integer."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
    return x ^ (x >> 31)


def standard_normal(seed: int, key: int) -> float:
    """A standard normal draw that depends only on ``(seed, key)`` (Box-Muller)."""
    h1 = _mix64((seed * 0x9E3779B97F4A7C15 + key) & _MASK64)
    h2 = _mix64(h1 ^ 0xD1B54A32D192ED03)
    u1 = ((h1 >> 11) + 0.5) / (1 << 53)  # in (0, 1): log(u1) is finite
    u2 = (h2 >> 11) / (1 << 53)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


class NoisyOraclePredictor:
    """The true length times ``exp(sigma * z)``, ``z`` standard normal.

    The noise is median-unbiased (its log has mean 0 and standard deviation
    ``sigma``), and ``z`` is a hash of ``(seed, request id)``: the same request
    always gets the same prediction, whatever the order of calls, so runs are
    reproducible and repeated ``predict`` calls agree. ``sigma=0`` is exact.
    ``observe`` does nothing: an oracle has nothing to learn.
    """

    def __init__(self, sigma: float = 0.5, seed: int = 0) -> None:
        if not (sigma >= 0 and math.isfinite(sigma)):
            raise ValueError(f"noisy-oracle: sigma must be a finite number >= 0, got {sigma!r}")
        self.sigma = float(sigma)
        self.seed = int(seed)

    def predict(self, req: Request) -> Estimate:
        """The noisy true length (at least 1 token)."""
        if self.sigma == 0:
            return Estimate(float(req.output_tokens))
        z = standard_normal(self.seed, req.id)
        return Estimate(max(1.0, req.output_tokens * math.exp(self.sigma * z)))

    def observe(self, req: Request, actual_output_tokens: int) -> None:
        """Nothing to learn."""


def _oracle() -> NoisyOraclePredictor:
    return NoisyOraclePredictor(sigma=0.0)


PREDICTORS.register("noisy-oracle")(NoisyOraclePredictor)
PREDICTORS.register("oracle")(_oracle)
