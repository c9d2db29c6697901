"""Accuracy of output-length predictions: MAE, RMSE, Kendall tau.

Shared by the predictor tests, the ``predictor train`` report, the drift
benchmark and the comparison tables, so every figure means the same thing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats


def _pair(
    predicted: npt.ArrayLike, actual: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    pred = np.asarray(predicted, dtype=np.float64).ravel()
    true = np.asarray(actual, dtype=np.float64).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"predicted has {pred.size} values, actual has {true.size}")
    return pred, true


def mae_tokens(predicted: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Mean absolute error in tokens (NaN for no values)."""
    pred, true = _pair(predicted, actual)
    return float(np.mean(np.abs(pred - true))) if pred.size else math.nan


def rmse_tokens(predicted: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Root mean squared error in tokens (NaN for no values)."""
    pred, true = _pair(predicted, actual)
    return float(np.sqrt(np.mean((pred - true) ** 2))) if pred.size else math.nan


def kendall_tau(predicted: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Kendall's tau-b rank correlation: how well predictions order requests.

    1 is the true order (what SJF needs), 0 no better than chance. NaN when
    either side is constant or there are fewer than two values.
    """
    pred, true = _pair(predicted, actual)
    if pred.size < 2 or np.all(pred == pred[0]) or np.all(true == true[0]):
        return math.nan
    return float(stats.kendalltau(pred, true).statistic)


@dataclass(frozen=True, slots=True)
class Accuracy:
    """The three accuracy figures of one set of predictions."""

    n: int
    mae_tokens: float
    rmse_tokens: float
    kendall_tau: float

    def as_dict(self) -> dict[str, float | int | None]:
        """Plain dict for JSON output (NaN, e.g. tau of a constant predictor, becomes None)."""
        return {
            k: None if isinstance(v, float) and math.isnan(v) else v
            for k, v in asdict(self).items()
        }


def accuracy(predicted: npt.ArrayLike, actual: npt.ArrayLike) -> Accuracy:
    """MAE, RMSE and Kendall tau of ``predicted`` against ``actual`` lengths."""
    pred, true = _pair(predicted, actual)
    return Accuracy(
        pred.size, mae_tokens(pred, true), rmse_tokens(pred, true), kendall_tau(pred, true)
    )
