"""A learned ranking policy: the queue ordered by a score fitted in the simulator.

The score of a waiting request is linear in features known when it arrives:

    score = w_pred * log1p(predicted output tokens)
          + w_prompt * log1p(prompt tokens)
          + w_arrival * arrival_s
          + offset[tenant]

and the lowest score is served first. The waiting-time term is what makes a
long request climb the queue; it is linear on purpose: after waiting ``t``
seconds a request's effective score is ``score - w_arrival * t``, and since
every queued request ages at the same rate, the order is the order of the
static key above (``- w_arrival * now`` is common to all). So one heap serves
it (push/pop O(log n)) and the order at any ``now`` is the order at push, in
the simulator and the gateway alike. A nonlinear score in waiting time would
need a rescan of the queue at every pop (O(n)) and gives a policy whose order
changes between two decisions; the linear one was kept because the training
search (``fairserve.experiments.rank_train``) finds its best aging weight on
this scale, and nothing measured called for more.

In log space, the size terms rank by ``pred^w_pred * prompt^w_prompt``: the
ratio of the two weights says how much prompt length counts against output
length, which ``sjf``'s ``prompt_weight`` fixes by hand. ``fairserve policy
train`` learns them (pairwise imitation of a clairvoyant order, then a search
on simulated E2E); :class:`RankModel` is the plain data it produces, saved as
JSON by :mod:`fairserve.store.ranker`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fairserve.core.model import Request, Tenant
from fairserve.core.policies.base import POLICIES
from fairserve.core.policies.ordered import KeyedPolicy

#: Opens a saved model from a reference (a path); the driver's ``load`` context.
Loader = Callable[[Any], object]

#: The features a score may weigh, in the order :meth:`RankModel.features` returns them.
FEATURES = ("log_predicted_output", "log_prompt", "arrival_s")
_MODEL_KEYS = ("weights", "tenant_offsets", "default_output_tokens", "metrics")


def _finite(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"key {key!r} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RankModel:
    """The learned score: a weight per feature and an offset per tenant.

    ``weights`` maps names of :data:`FEATURES` to weights (a feature left out
    weighs 0); ``tenant_offsets`` adds a constant per tenant (a tenant not
    listed adds 0); ``default_output_tokens`` stands in for the prediction of
    a request no predictor estimated. ``metrics`` is what training measured
    (kept with the model, not used to rank).
    """

    weights: Mapping[str, float]
    tenant_offsets: Mapping[str, float] = field(default_factory=dict)
    default_output_tokens: int = 256
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping):
            raise ValueError(f"key 'weights' must be a mapping, got {self.weights!r}")
        unknown = [k for k in self.weights if k not in FEATURES]
        if unknown:
            raise ValueError(
                f"key 'weights': unknown feature {unknown[0]!r}; allowed: {', '.join(FEATURES)}"
            )
        weights = {k: _finite(f"weights.{k}", v) for k, v in self.weights.items()}
        if not isinstance(self.tenant_offsets, Mapping):
            raise ValueError(f"key 'tenant_offsets' must be a mapping, got {self.tenant_offsets!r}")
        offsets = {
            str(k): _finite(f"tenant_offsets.{k}", v) for k, v in self.tenant_offsets.items()
        }
        tokens = self.default_output_tokens
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise ValueError(f"key 'default_output_tokens' must be an integer >= 1, got {tokens!r}")
        object.__setattr__(self, "weights", MappingProxyType(weights))
        object.__setattr__(self, "tenant_offsets", MappingProxyType(offsets))
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    def vector(self) -> tuple[float, ...]:
        """The weights in :data:`FEATURES` order (0 for a feature not weighed)."""
        return tuple(self.weights.get(name, 0.0) for name in FEATURES)

    def features(self, req: Request) -> tuple[float, float, float]:
        """``req``'s features in :data:`FEATURES` order (all known at arrival)."""
        predicted = req.predicted_output_tokens
        if predicted is None:
            predicted = self.default_output_tokens
        return (math.log1p(max(predicted, 0)), math.log1p(req.prompt_tokens), req.arrival_s)

    def score(self, req: Request) -> float:
        """The static key of ``req``: smaller is served sooner."""
        w_pred, w_prompt, w_arrival = self.vector()
        f_pred, f_prompt, f_arrival = self.features(req)
        offset = self.tenant_offsets.get(req.tenant, 0.0)
        return w_pred * f_pred + w_prompt * f_prompt + w_arrival * f_arrival + offset

    def to_dict(self) -> dict[str, Any]:
        """Plain types (the JSON the store writes)."""
        return {
            "weights": dict(self.weights),
            "tenant_offsets": dict(self.tenant_offsets),
            "default_output_tokens": self.default_output_tokens,
            "metrics": dict(self.metrics),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RankModel:
        """The model :meth:`to_dict` wrote; ValueError naming the bad or missing key."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a learned ranker is a JSON object, got {type(data).__name__}")
        if "weights" not in data:
            raise ValueError("missing key 'weights' (feature -> weight)")
        extra = sorted(set(data) - {*_MODEL_KEYS, "kind", "version"})
        if extra:
            raise ValueError(f"unknown key {extra[0]!r}; allowed: {', '.join(_MODEL_KEYS)}")
        return cls(
            weights=data["weights"],
            tenant_offsets=data.get("tenant_offsets") or {},
            default_output_tokens=data.get("default_output_tokens", 256),
            metrics=data.get("metrics") or {},
        )


#: The ranker before training: shortest predicted output first.
PRIOR = RankModel({"log_predicted_output": 1.0})


@POLICIES.register("learned-rank")
class LearnedRankPolicy(KeyedPolicy):
    """Orders the queue by a learned score (see the module docstring).

    Parameters: ``path`` (a ranker JSON file from ``fairserve policy train``,
    opened with the driver's ``load``) or ``model`` (a :class:`RankModel`);
    with neither, the untrained :data:`PRIOR` (SJF on predicted output, no
    aging: where training starts). The score reads
    ``predicted_output_tokens``: run it with the predictor it was trained
    with (its ``metrics["predictor"]``).

    Preempted requests go back to the front (as in every policy here); the
    victim is the most recently admitted running request, as in ``sjf``: it
    has the least computed work to lose. Push/pop O(log n).

    When to use: you have a trace like your traffic and want the weights of
    prompt length, predicted output and waiting time fitted to it rather than
    set by hand (``sjf``'s ``prompt_weight``, ``aging_tokens_per_s``).
    """

    def __init__(
        self,
        tenants: Mapping[str, Tenant] | None = None,
        *,
        path: object | None = None,
        model: RankModel | object | None = None,
        load: Loader | None = None,
    ) -> None:
        super().__init__(tenants)
        if path is not None and model is not None:
            raise ValueError("pass one of path= (a ranker file) or model=, not both")
        source = model if model is not None else path
        self.model = PRIOR if source is None else _resolve(source, load)

    def key(self, req: Request) -> float:
        """The learned score: fixed at push, so the heap order never goes stale."""
        return self.model.score(req)

    def pick_victim(self, running: Sequence[Request], now: float) -> Request:
        """The most recently admitted running request (the least work lost)."""
        if not running:
            raise ValueError("pick_victim needs at least one running request")
        return running[-1]


def _resolve(value: object, load: Loader | None) -> RankModel:
    """``value`` if it is a model, else what the driver's ``load`` opens from it.

    (``core.predict.saved.resolve_model`` does the same, but importing it pulls
    numpy into every import of the policies.)
    """
    if isinstance(value, RankModel):
        return value
    if load is None:
        raise ValueError(
            f"{value!r} is not a RankModel; to open a ranker file, build the policy with "
            "load=fairserve.store.load_model (Registry.build context)"
        )
    model = load(value)
    if not isinstance(model, RankModel):
        raise ValueError(f"{value!s} holds a {type(model).__name__}, not a learned ranker")
    return model
