"""Per-tenant history: an EMA of recent outputs and quantiles over a bounded window.

The simplest predictor that learns: a class's next output is about the size of
its recent ones. The mean is an exponential moving average (fast to react);
the quantile (p90 by default) comes from the last ``window`` outputs kept in a
ring buffer, so memory per class is bounded and old regimes age out.
"""

from __future__ import annotations

import math

import numpy as np

from fairserve.core.model import Request
from fairserve.core.predict._keys import class_key
from fairserve.core.predict.base import PREDICTORS, Estimate


class _Ring:
    """The last ``size`` values, an EMA of all of them, and a cached quantile."""

    __slots__ = ("_q", "count", "ema", "pos", "values")

    def __init__(self, size: int) -> None:
        self.values = np.zeros(size, dtype=np.float64)
        self.count = 0  # values ever pushed
        self.pos = 0
        self.ema = math.nan
        self._q: float | None = None  # cached quantile of the window; None when stale

    def push(self, value: float, alpha: float) -> None:
        self.values[self.pos] = value
        self.pos = (self.pos + 1) % self.values.size
        self.count += 1
        # The first value starts the EMA (no pull toward an arbitrary start).
        self.ema = value if self.count == 1 else self.ema + alpha * (value - self.ema)
        self._q = None

    def window(self) -> np.ndarray:
        return self.values[: min(self.count, self.values.size)]

    def quantile(self, q: float) -> float:
        if self._q is None:
            self._q = float(np.quantile(self.window(), q))
        return self._q


class HistoryPredictor:
    """EMA mean and window quantile of each class's recent output lengths.

    Parameters:
      * ``key``: the class (``tenant`` by default; see :func:`class_key`).
      * ``alpha``: EMA weight of the newest output, in (0, 1].
      * ``window``: how many recent outputs per class the quantile sees.
      * ``quantile``: which quantile is reported as ``quantile_tokens`` (0.9).
      * ``default_tokens``: the estimate before anything was observed.
      * ``min_samples``: a class with fewer observations borrows the
        all-classes history (if that has enough), then ``default_tokens``.
    """

    def __init__(
        self,
        key: str = "tenant",
        alpha: float = 0.1,
        window: int = 256,
        quantile: float = 0.9,
        default_tokens: float = 256.0,
        min_samples: int = 1,
    ) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"history: alpha must be in (0, 1], got {alpha!r}")
        if window < 1:
            raise ValueError(f"history: window must be >= 1, got {window!r}")
        if not 0 <= quantile <= 1:
            raise ValueError(f"history: quantile must be in [0, 1], got {quantile!r}")
        if not default_tokens > 0:
            raise ValueError(f"history: default_tokens must be > 0, got {default_tokens!r}")
        if min_samples < 1:
            raise ValueError(f"history: min_samples must be >= 1, got {min_samples!r}")
        self.key = class_key(key)
        self.alpha = float(alpha)
        self.window = window
        self.quantile = float(quantile)
        self.default_tokens = float(default_tokens)
        self.min_samples = min_samples
        self.classes: dict[str, _Ring] = {}
        self.overall = _Ring(window)

    def predict(self, req: Request) -> Estimate:
        """The class's EMA and window quantile (or the fallbacks when it is new)."""
        ring = self.classes.get(self.key(req))
        if ring is None or ring.count < self.min_samples:
            ring = self.overall
        if ring.count < self.min_samples:
            return Estimate(self.default_tokens)
        return Estimate(ring.ema, ring.quantile(self.quantile))

    def observe(self, req: Request, actual_output_tokens: int) -> None:
        """Push the observed length into the class's window and EMA (and the overall ones)."""
        self.learn(*self.feedback(req, actual_output_tokens))

    def feedback(self, req: Request, actual_output_tokens: int) -> tuple[str, float]:
        """The request's class and its output length."""
        return self.key(req), float(actual_output_tokens)

    def learn(self, cls: str, value: float) -> None:
        """Push one output length of class ``cls`` (and into the all-classes history)."""
        ring = self.classes.get(cls)
        if ring is None:
            ring = self.classes[cls] = _Ring(self.window)
        ring.push(value, self.alpha)
        self.overall.push(value, self.alpha)


PREDICTORS.register("history")(HistoryPredictor)
