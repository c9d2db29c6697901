"""Persistence outside the pure core: saved models (and, beside them, config files).

``load_model(path)`` opens any saved fairserve model; drivers pass it as the
``load`` context of :meth:`fairserve.core.registry.Registry.build`.
"""

from fairserve.store.models import (
    EmbeddingUnavailable,
    ModelNotFound,
    load_embedder,
    load_latency_model,
    load_learned_model,
    load_model,
    save_latency_model,
    save_learned_model,
)

__all__ = [
    "EmbeddingUnavailable",
    "ModelNotFound",
    "load_embedder",
    "load_latency_model",
    "load_learned_model",
    "load_model",
    "save_latency_model",
    "save_learned_model",
]
