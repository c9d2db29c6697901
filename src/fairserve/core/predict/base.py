"""The Predictor protocol: output-length estimates with online feedback.

Drivers call ``predict`` when a request arrives (the simulator's cluster and
the gateway store ``round(estimate.mean_tokens)`` in
``Request.predicted_output_tokens`` before the policy sees the request) and
``observe`` once it ends, with the tokens it really produced, so predictors
can calibrate online. Predictors are pure: no clock, no I/O in ``predict`` or
``observe`` (a learned predictor loads its model when it is built).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fairserve.core.model import Request
from fairserve.core.registry import Registry


@dataclass(frozen=True, slots=True)
class Estimate:
    """A predicted output length: the mean and, where the predictor has one, a high quantile."""

    mean_tokens: float
    quantile_tokens: float | None = None

    def __post_init__(self) -> None:
        if not self.mean_tokens >= 0:
            raise ValueError(f"mean_tokens must be >= 0, got {self.mean_tokens!r}")


@runtime_checkable
class Predictor(Protocol):
    """Predicts output lengths and learns from observed ones."""

    def predict(self, req: Request) -> Estimate:
        """The estimate for ``req`` (its true ``output_tokens`` must not be read, except by oracles)."""

    def observe(self, req: Request, actual_output_tokens: int) -> None:
        """Feedback: ``req`` produced ``actual_output_tokens``."""


@runtime_checkable
class SharedLearning(Protocol):
    """A predictor whose online learning is one ``(class, value)`` update per ended request.

    ``observe(req, n)`` is ``learn(*feedback(req, n))``: the update names no
    request, so gateway replicas can apply each other's (docs/gateway.md,
    "Several replicas") and every replica learns from the whole fleet's traffic.
    """

    def feedback(self, req: Request, actual_output_tokens: int) -> tuple[str, float] | None:
        """The update ``req`` ending with ``actual_output_tokens`` makes (None: nothing to learn)."""

    def learn(self, cls: str, value: float) -> None:
        """Apply one update (this replica's, or another's)."""


PREDICTORS: Registry[Predictor] = Registry("predictor")
