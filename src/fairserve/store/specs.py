"""Reading spec files: one YAML-plus-pydantic loader for every kind of spec.

Workload specs, sweep specs and gateway configs are YAML files validated by a
pydantic model. :func:`load_yaml` reads one and fails with one error type
whose message says what to fix: the file and line of a YAML syntax error, the
key path (``sources.0.arrival.cv``) of each invalid value.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["SpecError", "load_yaml", "validate"]

M = TypeVar("M", bound=BaseModel)
ErrorType = Callable[[str], Exception]


class SpecError(ValueError):
    """A spec file is missing, empty, not YAML, or invalid; the message names the file."""


def load_yaml(
    path: str | Path, model_cls: type[M], what: str = "spec", error: ErrorType = SpecError
) -> M:
    """Read the YAML file ``path`` and validate it as ``model_cls``.

    ``what`` names the kind of file in messages ("sweep spec"); ``error`` is
    the exception type raised for every problem (a caller's own subclass of
    ValueError, so its callers keep catching what they caught).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{_yaml_where(path, exc)}: not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        raise error(f"{path}: the {what} is empty")
    return validate(data, model_cls, str(path), what, error)


def validate(
    data: Any,
    model_cls: type[M],
    origin: str = "<spec>",
    what: str = "spec",
    error: ErrorType = SpecError,
) -> M:
    """Validate a parsed mapping; one line per problem, naming the key path."""
    if not isinstance(data, dict):
        raise error(f"{origin}: a {what} must be a mapping, got {type(data).__name__}")
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        lines = [f"{origin}: {_key_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
        if len(lines) == 1:
            raise error(lines[0]) from None
        raise error(f"invalid {what} ({len(lines)} problems):\n" + "\n".join(lines)) from None


def _key_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<top>"


def _yaml_where(path: Path, exc: yaml.YAMLError) -> str:
    """``file:line:column`` of a YAML error (1-based), or the file alone."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return str(path)
    return f"{path}:{mark.line + 1}:{mark.column + 1}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem and context:
        return f"{problem} ({context})"
    return str(problem or context or exc).strip()
