"""DriftSched-style class priors refined online by an EMA of actual/estimate.

DriftSched (2026) gives each request class a token-budget prior and corrects
it online: after each request ends, the class's calibration ratio moves toward
``actual / prior`` by an exponential moving average. When a class's lengths
drift (a tenant's prompts change, a model is swapped), the ratio follows and
the estimate ``prior * ratio`` tracks the new lengths within ``~1/alpha``
requests. ``calibrate=False`` is the uncalibrated baseline: the prior alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from fairserve.core.model import Request
from fairserve.core.predict._keys import class_key
from fairserve.core.predict.base import PREDICTORS, Estimate


class DriftSchedPredictor:
    """Per-class prior x online calibration ratio.

    Parameters:
      * ``priors_tokens``: the prior estimate of each class (keys as produced by
        ``key``); classes not listed get ``default_tokens``.
      * ``key``: the class of a request: ``tenant`` (default) or fields joined by
        ``+`` among tenant, model, slo_class, priority (``tenant+model``).
      * ``alpha``: EMA weight of the newest observation, in (0, 1].
      * ``calibrate``: False turns ``observe`` into a no-op (the baseline).
      * ``cap_to_max_tokens``: an estimate never exceeds the request's
        ``max_tokens`` when it has one (the output cannot be longer).
      * ``max_ratio``: one observation's ratio is clipped to
        ``[1/max_ratio, max_ratio]`` so a single outlier cannot swing the class.
    """

    def __init__(
        self,
        priors_tokens: Mapping[str, float] | None = None,
        default_tokens: float = 256.0,
        key: str = "tenant",
        alpha: float = 0.1,
        calibrate: bool = True,
        cap_to_max_tokens: bool = True,
        max_ratio: float = 50.0,
    ) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"driftsched: alpha must be in (0, 1], got {alpha!r}")
        if not default_tokens > 0:
            raise ValueError(f"driftsched: default_tokens must be > 0, got {default_tokens!r}")
        if not max_ratio >= 1:
            raise ValueError(f"driftsched: max_ratio must be >= 1, got {max_ratio!r}")
        if priors_tokens is not None and not isinstance(priors_tokens, Mapping):
            raise ValueError(
                "driftsched: priors_tokens must map classes to tokens, such as "
                f"{{chat: 200, code: 500}}; got {priors_tokens!r}"
            )
        priors = dict(priors_tokens or {})
        for name, value in priors.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(
                    f"driftsched: priors_tokens: the prior of class {name!r} must be a number "
                    f"of tokens > 0, got {value!r}"
                )
        self.priors_tokens = priors
        self.default_tokens = float(default_tokens)
        self.key = class_key(key)
        self.alpha = float(alpha)
        self.calibrate = calibrate
        self.cap_to_max_tokens = cap_to_max_tokens
        self.max_ratio = float(max_ratio)
        self.ratios: dict[str, float] = {}  # class -> EMA of actual/prior; absent means 1

    def prior_tokens(self, req: Request) -> float:
        """The uncalibrated estimate of ``req``: its class prior, capped by ``max_tokens``."""
        prior = self.priors_tokens.get(self.key(req), self.default_tokens)
        if self.cap_to_max_tokens and req.max_tokens is not None:
            prior = min(prior, float(req.max_tokens))
        return max(prior, 1.0)

    def predict(self, req: Request) -> Estimate:
        """Prior x the class's calibration ratio (1 until the class is observed)."""
        mean = self.prior_tokens(req) * self.ratios.get(self.key(req), 1.0)
        if self.cap_to_max_tokens and req.max_tokens is not None:
            mean = min(mean, float(req.max_tokens))
        return Estimate(mean)

    def observe(self, req: Request, actual_output_tokens: int) -> None:
        """Move the class ratio toward ``actual / prior``: ``r <- (1-alpha) r + alpha x``."""
        update = self.feedback(req, actual_output_tokens)
        if update is not None:
            self.learn(*update)

    def feedback(self, req: Request, actual_output_tokens: int) -> tuple[str, float] | None:
        """The class and its clipped ``actual / prior`` (None when not calibrating)."""
        if not self.calibrate:
            return None
        x = actual_output_tokens / self.prior_tokens(req)
        return self.key(req), min(max(x, 1.0 / self.max_ratio), self.max_ratio)

    def learn(self, cls: str, value: float) -> None:
        """One EMA step of the class ratio toward ``value``."""
        r = self.ratios.get(cls, 1.0)
        self.ratios[cls] = r + self.alpha * (value - r)


PREDICTORS.register("driftsched")(DriftSchedPredictor)
