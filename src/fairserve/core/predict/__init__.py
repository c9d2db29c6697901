"""Output-length and latency predictors behind one protocol, one registry.

Registered output-length predictors: ``driftsched``, ``history``, ``learned``,
``noisy-oracle`` and ``oracle``. The latency predictor lives in
:mod:`fairserve.core.predict.latency`; accuracy metrics in
:mod:`fairserve.core.predict.metrics`.
"""

from fairserve.core.predict import driftsched, history, learned, oracle
from fairserve.core.predict.base import PREDICTORS, Estimate, Predictor, SharedLearning
from fairserve.core.predict.driftsched import DriftSchedPredictor
from fairserve.core.predict.history import HistoryPredictor
from fairserve.core.predict.learned import LearnedPredictor
from fairserve.core.predict.oracle import NoisyOraclePredictor

__all__ = [
    "PREDICTORS",
    "DriftSchedPredictor",
    "Estimate",
    "HistoryPredictor",
    "LearnedPredictor",
    "NoisyOraclePredictor",
    "Predictor",
    "SharedLearning",
    "driftsched",
    "history",
    "learned",
    "oracle",
]
