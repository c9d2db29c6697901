"""Output-length and latency predictors behind one protocol, one registry."""

from fairserve.core.predict.base import PREDICTORS, Estimate, Predictor

__all__ = ["PREDICTORS", "Estimate", "Predictor"]
