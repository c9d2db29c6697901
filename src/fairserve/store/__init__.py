"""Persistence outside the pure core: saved models (and, beside them, config files).

``load_model(path)`` opens any saved fairserve model (a learned ranker from
:mod:`.ranker`, or what :mod:`.models` saves); drivers pass it as the ``load``
context of :meth:`fairserve.core.registry.Registry.build`.
"""

from fairserve.store.models import (
    EmbeddingUnavailable,
    ModelNotFound,
    load_embedder,
    load_latency_model,
    load_learned_model,
    save_latency_model,
    save_learned_model,
)
from fairserve.store.ranker import load_model, load_ranker, save_ranker

__all__ = [
    "EmbeddingUnavailable",
    "ModelNotFound",
    "load_embedder",
    "load_latency_model",
    "load_learned_model",
    "load_model",
    "load_ranker",
    "save_latency_model",
    "save_learned_model",
    "save_ranker",
]
