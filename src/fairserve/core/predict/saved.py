"""Saved models as component inputs: an object in memory, or a reference the driver opens.

A component that needs a fitted model (the ``learned`` predictor, the
``slo-aware`` router, ``slo`` admission) takes the model itself or a reference
to a saved one (a path). The core never opens files: it hands a reference to
the ``load`` function the driver passed in the build context
(``fairserve.store.load_model`` in every driver) and checks what came back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Opens a saved model from a reference (a path) and returns the model object.
Loader = Callable[[Any], object]


def resolve_model(value: object, kind: type[T], load: Loader | None, what: str) -> T:
    """``value`` itself when it is a ``kind``, else what ``load(value)`` opens (a ``kind``).

    A reference with no ``load`` to open it, or one that opens to another kind
    of model, is a :class:`ValueError` that says what to pass.
    """
    if isinstance(value, kind):
        return value
    if load is None:
        raise ValueError(
            f"{what}: {value!r} is not a {kind.__name__}; to open a saved model, build the "
            "component with load=fairserve.store.load_model (Registry.build context)"
        )
    model = load(value)
    if not isinstance(model, kind):
        raise ValueError(f"{what}: {value!s} holds a {type(model).__name__}, not a {kind.__name__}")
    return model
