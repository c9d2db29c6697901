"""One registry per kind of component, and one way to name and configure a component.

A component is named by a :class:`ComponentSpec`: a registered name (or a
dotted path ``pkg.mod:Class`` for a third-party class) and its parameters.
The same spec is written

- on the command line as ``name`` or ``name:key=value,key=value`` (values are
  YAML scalars or flow collections: ``1``, ``0.5``, ``true``, ``[1, 2]``,
  ``{chat: 200}``); in a list of components, an item ``key=value`` after a
  comma continues the component before it:
  ``fifo,sjf:prompt_weight=1,aging_s=30,vtc`` is three policies;
- in YAML as the same string or as ``{name: ..., params: {...}}``.

:meth:`Registry.build` turns a spec into the component for every driver (the
simulator, sweeps, the demo, the gateway). It hands the factory the shared
*context* the driver has (``seed``, ``tenants``, a ``predictor``, a ``load``
function that opens saved models) where the factory's signature asks for it,
and fails with :class:`ComponentError` — one line naming the component, the
bad name or parameter, and the allowed values — never with a traceback.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import yaml

T = TypeVar("T")

#: Keyword arguments a driver may hand a factory. ``seed`` is a plain value a user
#: may also set (``noisy-oracle:seed=3``); the others are objects only a driver has.
CONTEXT_KEYS = frozenset({"seed", "tenants", "predictor", "load"})
DRIVER_ONLY_KEYS = CONTEXT_KEYS - {"seed"}


class ComponentError(ValueError):
    """A component spec names an unknown component or parameter, or a bad value."""


def _freeze(params: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(params))


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """A component's name and parameters (immutable)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ComponentError(f"a component needs a name, got {self.name!r}")
        if not isinstance(self.params, Mapping):
            raise ComponentError(
                f"{self.name}: params must be a mapping of key: value, got {self.params!r}"
            )
        object.__setattr__(self, "name", self.name.strip())
        object.__setattr__(self, "params", _freeze(self.params))

    @classmethod
    def parse(cls, text: str) -> ComponentSpec:
        """``name`` or ``name:key=value,key=value`` (``;`` also separates parameters)."""
        specs = parse_list(text)
        if len(specs) != 1:
            raise ComponentError(f"{text!r}: expected one component, got {len(specs)}")
        return specs[0]

    @classmethod
    def of(cls, value: Any) -> ComponentSpec:
        """A spec from a string, a ``{name, params}`` mapping or a spec (YAML, JSON, code)."""
        if isinstance(value, ComponentSpec):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, Mapping):
            extra = set(value) - {"name", "params"}
            if extra or "name" not in value:
                raise ComponentError(
                    f"a component is a string or {{name: ..., params: {{...}}}}, got {dict(value)!r}"
                )
            return cls(str(value["name"]), value.get("params") or {})
        raise ComponentError(f"a component is a string or {{name, params}}, got {value!r}")

    def __str__(self) -> str:
        if not self.params:
            return self.name
        items = ",".join(f"{k}={_scalar(v)}" for k, v in self.params.items())
        return f"{self.name}:{items}"

    def to_dict(self) -> dict[str, Any]:
        """``{name, params}`` (plain types, for JSON and YAML)."""
        return {"name": self.name, "params": dict(self.params)}

    def with_params(self, **params: Any) -> ComponentSpec:
        """A copy with ``params`` added (they win over the spec's own)."""
        return ComponentSpec(self.name, {**self.params, **params})


def _scalar(value: Any) -> str:
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    except yaml.representer.RepresenterError:
        return repr(value)  # an in-memory object (a fitted model) has no YAML form
    return text.removesuffix("\n...").removesuffix("...").strip()


def _split_top(text: str, seps: str) -> Iterator[str]:
    """Split on any of ``seps`` outside brackets and quotes."""
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch in seps and depth == 0:
            yield text[start:i]
            start = i + 1
    yield text[start:]


def _is_param(item: str) -> bool:
    """``key=value`` with no ``:`` before the ``=`` (so not ``name:key=value``)."""
    key, sep, _ = item.partition("=")
    # ``input-weight=1`` is a parameter too: _param turns dashes into underscores.
    return bool(sep) and ":" not in key and key.strip().replace("-", "_").isidentifier()


def _param(text: str, item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key.isidentifier():
        raise ComponentError(f"{text!r}: expected key=value, got {item.strip()!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
        if _colon_without_space(parsed):
            # ``{chat:200,code:500}`` is YAML for two keys "chat:200", "code:500"
            # with no values; on a command line it means ``{chat: 200, code: 500}``.
            parsed = yaml.safe_load(re.sub(r":(?=\S)", ": ", value))
        return key, parsed
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not a YAML value"
        raise ComponentError(f"{text!r}: {key}: {problem}") from None


def _colon_without_space(value: Any) -> bool:
    """A flow mapping whose keys all read ``name:value`` and have no value."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and ":" in k and v is None for k, v in value.items())
    )


def _name_and_first(item: str) -> tuple[str, str]:
    """The name and the first ``key=value`` of ``name[:key=value]``.

    A dotted path keeps its own colon: ``pkg.mod:Class[:key=value]``.
    """
    head, _, rest = item.partition(":")
    if "." in head:
        cls, _, first = rest.partition(":")
        if cls.isidentifier():
            return f"{head.strip()}:{cls}", first
    return head.strip(), rest


def parse_list(text: str) -> list[ComponentSpec]:
    """Components separated by commas: ``fifo,sjf:prompt_weight=1,aging_s=30,vtc``."""
    specs: list[tuple[str, dict[str, Any]]] = []
    for raw in _split_top(text, ",;"):
        item = raw.strip()
        if not item:
            continue
        if _is_param(item):
            if not specs:
                raise ComponentError(f"{text!r}: parameter {item!r} before any component name")
            key, value = _param(text, item)
            specs[-1][1][key] = value
            continue
        name, first = _name_and_first(item)
        if not name or (first and not _is_param(first)):
            raise ComponentError(f"{text!r}: expected name or name:key=value, got {item!r}")
        params: dict[str, Any] = {}
        if first:
            key, value = _param(text, first)
            params[key] = value
        specs.append((name, params))
    if not specs:
        raise ComponentError(f"{text!r}: no component named")
    return [ComponentSpec(name, params) for name, params in specs]


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

    def factory(self, name: str) -> Callable[..., T]:
        """The factory of ``name`` (a registered name or a dotted path)."""
        factory = self._factories.get(name)
        if factory is None:
            factory = self._import(name)
        return factory

    def parameters(self, name: str) -> list[str] | None:
        """The parameters a user may set on ``name`` (None: any, the factory takes ``**kwargs``)."""
        params = _signature(self.factory(name))
        if params is None:
            return None
        return [p for p in params if p not in DRIVER_ONLY_KEYS]

    def check(self, spec: ComponentSpec | str | Mapping[str, Any]) -> ComponentSpec:
        """Validate the name and parameter names of ``spec`` without building it."""
        spec = ComponentSpec.of(spec)
        allowed = self.parameters(spec.name)
        if allowed is not None:
            for key in spec.params:
                if key not in allowed:
                    raise ComponentError(
                        f"{self.kind} {spec.name!r}: unknown parameter {key!r}; "
                        f"allowed: {', '.join(allowed) or '(none)'}"
                    )
        return spec

    def build(self, spec: ComponentSpec | str | Mapping[str, Any], **context: Any) -> T:
        """Build ``spec``, handing it the ``context`` entries its factory accepts.

        Bad names, parameters and values raise :class:`ComponentError` naming the
        component; a user parameter wins over a context entry of the same name.
        """
        spec = self.check(spec)
        factory = self.factory(spec.name)
        accepted = _signature(factory)
        given = {
            k: v
            for k, v in context.items()
            if k not in spec.params and (accepted is None or k in accepted)
        }
        missing = [k for k in _required(factory) if k not in spec.params and k not in given]
        if missing:
            raise ComponentError(
                f"{self.kind} {spec.name!r}: missing parameter {missing[0]!r} "
                f"(write {spec.name}:{missing[0]}=...)"
            )
        try:
            return factory(**given, **spec.params)
        except (TypeError, ValueError) as exc:
            raise ComponentError(f"{self.kind} {spec}: {exc}") from None

    def create(self, name: str, **params: Any) -> T:
        """Build ``name`` with keyword parameters (code that knows the factory's arguments)."""
        return self.factory(name)(**params)

    def _import(self, name: str) -> Callable[..., T]:
        known = ", ".join(self.names())
        module, sep, attr = name.partition(":")
        if not sep:
            module, _, attr = name.rpartition(".")
        if not module:
            raise ComponentError(f"unknown {self.kind} {name!r}; known: {known}")
        try:
            factory: Callable[..., T] = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ComponentError(f"unknown {self.kind} {name!r} ({exc}); known: {known}") from None
        return factory


def _required(factory: Callable[..., Any]) -> list[str]:
    """Keyword-passable parameters of ``factory`` without a default."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [
        p.name
        for p in sig.parameters.values()
        if p.kind in kinds and p.default is inspect.Parameter.empty
    ]


def _signature(factory: Callable[..., Any]) -> list[str] | None:
    """Keyword parameter names of ``factory``; None when it takes ``**kwargs``."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    names = []
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.append(p.name)
    return names
