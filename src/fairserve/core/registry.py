"""One registry per kind of component, keyed by the name config and CLI use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> factory map; names not registered may be dotted paths ``pkg.mod:Class``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register a factory under ``name``."""

        def wrap(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return wrap

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def create(self, name: str, **params: object) -> T:
        """Build the component ``name`` (or a dotted path) with keyword parameters."""
        factory = self._factories.get(name)
        if factory is None:
            factory = self._import(name)
        return factory(**params)

    def _import(self, name: str) -> Callable[..., T]:
        module, sep, attr = name.partition(":")
        if not sep:
            module, _, attr = name.rpartition(".")
        if not module:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        try:
            factory: Callable[..., T] = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(
                f"unknown {self.kind} {name!r} ({exc}); known: {', '.join(self.names())}"
            ) from exc
        return factory
