"""A learned output-length predictor: gradient boosting on request features.

Features: tenant and model (categorical), prompt tokens, ``max_tokens``, the
conversation turn, and, when the model was trained with text, the 384-d
all-MiniLM-L6-v2 embedding of the prompt text (:mod:`.embed`). The regressor
is scikit-learn's histogram gradient boosting (fast, handles categories and
missing values natively); an optional second model gives a high quantile.

Online, ``observe`` keeps a per-class EMA of the log residual
``log(actual / model estimate)`` and multiplies later estimates by
``exp(residual)``: the model's systematic error on a class (a tenant whose
lengths drifted since training) is corrected without retraining.

Training (:func:`train`) works on in-memory requests; saving and loading a
model folder (``model.pkl`` and ``meta.json``) is :mod:`fairserve.store.models`'s
job. Needs the ``learned`` extra (scikit-learn; tokenizers and the embedding
package for text).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from fairserve.core.model import Request
from fairserve.core.predict._keys import class_key
from fairserve.core.predict.base import PREDICTORS, Estimate
from fairserve.core.predict.metrics import accuracy
from fairserve.core.predict.saved import Loader, resolve_model

Target = Literal["log", "raw"]
F64 = npt.NDArray[np.float64]

#: Columns before the embedding: tenant, model (category codes), then numbers.
BASE_FEATURES = ("tenant", "model", "prompt_tokens", "max_tokens", "turn")
_N_CATEGORICAL = 2
#: Model estimates kept for requests predicted and not yet observed (a bound
#: for requests that never end); the oldest are dropped first.
_MAX_PENDING = 100_000
#: Category code of a tenant or model not seen in training (a missing value).
_UNKNOWN = math.nan


def need_sklearn() -> Any:
    """scikit-learn's booster class, or an ImportError that says what to install."""
    try:
        from sklearn.ensemble import HistGradientBoostingRegressor
    except ImportError as exc:
        raise ImportError(
            "the learned predictor needs scikit-learn: pip install 'fairserve[learned]'"
        ) from exc
    return HistGradientBoostingRegressor


class TextEmbedder(Protocol):
    """What the feature builder needs of an embedder (see :class:`.embed.Embedder`)."""

    def embed(self, texts: list[str], batch_size: int = 32) -> npt.NDArray[np.float32]:
        """Unit-length embeddings, one row per text."""
        ...


@dataclass
class LearnedModel:
    """A trained model and what it needs to turn requests into features.

    ``embedder`` turns prompt texts into features for a ``text`` model; it is
    not saved with the model (:func:`train` sets it; the store attaches one
    when it opens a saved text model).
    """

    regressor: Any
    quantile_regressor: Any | None
    target: Target
    text: bool
    tenants: tuple[str, ...]
    models: tuple[str, ...]
    quantile: float | None
    #: Feature columns the regressors see (columns empty in training are left out).
    columns: tuple[int, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    embedder: TextEmbedder | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        # The embedder's weights come from their own package; a pickle keeps only
        # the fitted model. Unpickling leaves the class default (None) in place.
        state = dict(self.__dict__)
        state.pop("embedder", None)
        return state

    def features(self, reqs: Sequence[Request], embedder: TextEmbedder | None = None) -> F64:
        """The feature matrix of ``reqs`` (embeddings need ``embedder`` when ``text``)."""
        x = build_features(reqs, self.tenants, self.models, embedder if self.text else None)
        return x[:, list(self.columns)] if self.columns else x

    def predict_tokens(self, x: F64) -> tuple[F64, F64 | None]:
        """Mean (and quantile, if trained) output tokens for feature rows ``x``."""
        raw = np.asarray(self.regressor.predict(x), dtype=np.float64)
        mean = np.expm1(raw) if self.target == "log" else raw
        quant = None
        if self.quantile_regressor is not None:
            quant = np.maximum(
                np.asarray(self.quantile_regressor.predict(x), dtype=np.float64), 1.0
            )
        return np.maximum(mean, 1.0), quant


def build_features(
    reqs: Sequence[Request],
    tenants: Sequence[str],
    models: Sequence[str],
    embedder: TextEmbedder | None,
) -> F64:
    """Rows ``[tenant code, model code, prompt, max_tokens, turn, (embedding)]``.

    Unknown tenants/models and absent ``max_tokens`` are NaN (the booster treats
    them as missing); so is the embedding of a request without text.
    """
    t_code = {name: float(i) for i, name in enumerate(tenants)}
    m_code = {name: float(i) for i, name in enumerate(models)}
    n = len(reqs)
    width = len(BASE_FEATURES) + (384 if embedder is not None else 0)
    x = np.full((n, width), np.nan, dtype=np.float64)
    for i, req in enumerate(reqs):
        x[i, 0] = t_code.get(req.tenant, _UNKNOWN)
        x[i, 1] = m_code.get(req.model, _UNKNOWN) if req.model is not None else _UNKNOWN
        x[i, 2] = req.prompt_tokens
        if req.max_tokens is not None:
            x[i, 3] = req.max_tokens
        x[i, 4] = req.turn
    if embedder is not None:
        rows = [i for i, req in enumerate(reqs) if req.text]
        if rows:
            vectors = embedder.embed([reqs[i].text or "" for i in rows])
            x[np.asarray(rows), len(BASE_FEATURES) :] = vectors
    return x


def train(
    reqs: Sequence[Request],
    *,
    embedder: TextEmbedder | None = None,
    target: Target = "log",
    quantile: float | None = 0.9,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 200,
    learning_rate: float = 0.1,
) -> LearnedModel:
    """Fit the booster on a random ``1 - test_fraction`` of ``reqs``; score the rest.

    Text embeddings are used when ``embedder`` is given. ``metrics`` of the
    result holds MAE, RMSE and Kendall tau on the held-out requests, for the
    model and for the per-tenant-mean baseline (the mean output of each tenant
    in the training part), plus the sizes of both parts.
    """
    if target not in ("log", "raw"):
        raise ValueError(f"target must be 'log' or 'raw', got {target!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if len(reqs) < 10:
        raise ValueError(f"need at least 10 requests to train, got {len(reqs)}")
    regressor_cls = need_sklearn()
    tenants = tuple(sorted({r.tenant for r in reqs}))
    models = tuple(sorted({r.model for r in reqs if r.model is not None}))
    x_all = build_features(reqs, tenants, models, embedder)
    # A column with no value at all (no request has max_tokens, say) carries no
    # information, and the booster's binning rejects it.
    columns = tuple(int(c) for c in np.flatnonzero(~np.all(np.isnan(x_all), axis=0)))
    x = x_all[:, list(columns)]
    y = np.asarray([r.output_tokens for r in reqs], dtype=np.float64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(reqs))
    n_test = max(1, round(len(reqs) * test_fraction))
    test, fit = perm[:n_test], perm[n_test:]
    categorical = [c < _N_CATEGORICAL for c in columns]
    common = dict(max_iter=max_iter, learning_rate=learning_rate, random_state=seed,
                  categorical_features=categorical, early_stopping=False)  # fmt: skip
    regressor = regressor_cls(loss="squared_error", **common)
    regressor.fit(x[fit], np.log1p(y[fit]) if target == "log" else y[fit])
    quantile_regressor = None
    if quantile is not None:
        quantile_regressor = regressor_cls(loss="quantile", quantile=quantile, **common)
        quantile_regressor.fit(x[fit], y[fit])
    model = LearnedModel(regressor, quantile_regressor, target, embedder is not None, tenants,
                         models, quantile, columns, embedder=embedder)  # fmt: skip
    pred, _ = model.predict_tokens(x[test])
    baseline = _tenant_mean_baseline(x_all[fit, 0], y[fit], x_all[test, 0])
    model.metrics = {
        "train_rows": int(fit.size),
        "test_rows": int(test.size),
        "target": target,
        "text": embedder is not None,
        "learned": accuracy(pred, y[test]).as_dict(),
        "tenant_mean_baseline": accuracy(baseline, y[test]).as_dict(),
    }
    return model


def _tenant_mean_baseline(fit_codes: F64, fit_y: F64, test_codes: F64) -> F64:
    overall = float(fit_y.mean())
    means = {code: float(fit_y[fit_codes == code].mean()) for code in np.unique(fit_codes)}
    return np.asarray([means.get(code, overall) for code in test_codes], dtype=np.float64)


class LearnedPredictor:
    """The trained booster behind the Predictor protocol, with online calibration.

    Build it with ``PREDICTORS.build("learned:path=MODEL_DIR", load=fairserve.store.load_model)``
    (or pass a :class:`LearnedModel` as ``model``). Parameters:
      * ``alpha``: EMA weight of the newest log residual (0 turns calibration off).
      * ``key``: the class whose residual is tracked (``tenant`` by default).
      * ``max_log_residual``: one observation's log residual is clipped to +-this.
      * ``cap_to_max_tokens``: estimates never exceed the request's ``max_tokens``.
    ``path`` (or ``model`` given as a path) names a saved model folder, opened
    with the ``load`` function of the build context; a text model uses the
    embedder the loaded model carries unless ``embedder`` is given. ``predict``
    and ``observe`` do no I/O.
    """

    def __init__(
        self,
        path: object | None = None,
        model: LearnedModel | object | None = None,
        alpha: float = 0.05,
        key: str = "tenant",
        max_log_residual: float = 3.0,
        cap_to_max_tokens: bool = True,
        embedder: TextEmbedder | None = None,
        load: Loader | None = None,
    ) -> None:
        if (path is None) == (model is None):
            raise ValueError("learned: pass exactly one of path= (a model folder) or model=")
        if not 0 <= alpha <= 1:
            raise ValueError(f"learned: alpha must be in [0, 1], got {alpha!r}")
        self.model = resolve_model(model if model is not None else path, LearnedModel, load,
                                   "learned")  # fmt: skip
        embedder = embedder if embedder is not None else self.model.embedder
        if self.model.text and embedder is None:
            raise ValueError(
                "learned: this model reads prompt texts and needs an embedder; open it with "
                "fairserve.store.load_model (which attaches one) or pass embedder="
            )
        self.embedder = embedder
        self.alpha = float(alpha)
        self.key = class_key(key)
        self.max_log_residual = float(max_log_residual)
        self.cap_to_max_tokens = cap_to_max_tokens
        self.residuals: dict[str, float] = {}  # class -> EMA of log(actual / model)
        # request id -> the model's (mean, quantile), from predict or warm, until observed
        self._pending: dict[int, tuple[float, float | None]] = {}

    def warm(self, reqs: Sequence[Request]) -> None:
        """Compute the model's estimates of ``reqs`` in one batch (much faster than one by one).

        A driver that knows requests ahead (the simulator) may call this; later
        ``predict`` calls for these requests then only apply the calibration.
        """
        if not reqs:
            return
        mean, quant = self.model.predict_tokens(self.model.features(reqs, self.embedder))
        for i, req in enumerate(reqs):
            self._remember(req.id, (float(mean[i]), None if quant is None else float(quant[i])))

    def _remember(self, req_id: int, value: tuple[float, float | None]) -> None:
        pending = self._pending
        pending[req_id] = value
        if len(pending) > _MAX_PENDING:
            del pending[next(iter(pending))]

    def _model_estimate(self, req: Request) -> tuple[float, float | None]:
        cached = self._pending.get(req.id)
        if cached is not None:
            return cached
        mean, quant = self.model.predict_tokens(self.model.features([req], self.embedder))
        value = (float(mean[0]), None if quant is None else float(quant[0]))
        self._remember(req.id, value)
        return value

    def predict(self, req: Request) -> Estimate:
        """The model's estimate times ``exp`` of the class's residual EMA."""
        mean, quant = self._model_estimate(req)
        factor = math.exp(self.residuals.get(self.key(req), 0.0))
        mean *= factor
        if quant is not None:
            quant = max(quant * factor, mean)
        if self.cap_to_max_tokens and req.max_tokens is not None:
            mean = min(mean, float(req.max_tokens))
            quant = None if quant is None else min(quant, float(req.max_tokens))
        return Estimate(mean, quant)

    def observe(self, req: Request, actual_output_tokens: int) -> None:
        """Move the class residual toward ``log(actual / model estimate)``."""
        update = self.feedback(req, actual_output_tokens)
        if update is not None:
            self.learn(*update)

    def feedback(self, req: Request, actual_output_tokens: int) -> tuple[str, float] | None:
        """The class and its clipped log residual (None with calibration off)."""
        if self.alpha == 0:
            self._pending.pop(req.id, None)
            return None
        model_mean, _ = self._model_estimate(req)
        self._pending.pop(req.id, None)
        res = math.log(max(actual_output_tokens, 1) / model_mean)
        return self.key(req), min(max(res, -self.max_log_residual), self.max_log_residual)

    def learn(self, cls: str, value: float) -> None:
        """One EMA step of the class residual toward ``value``."""
        r = self.residuals.get(cls, 0.0)
        self.residuals[cls] = r + self.alpha * (value - r)


PREDICTORS.register("learned")(LearnedPredictor)
