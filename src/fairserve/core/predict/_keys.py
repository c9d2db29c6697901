"""Class keys: which requests share a prior, a calibration ratio or a history."""

from __future__ import annotations

from collections.abc import Callable

from fairserve.core.model import Request

#: Request fields a class key may combine, joined with ``+`` (``"tenant+model"``).
KEY_FIELDS = ("tenant", "model", "slo_class", "priority")

ClassKey = Callable[[Request], str]


def class_key(spec: str) -> ClassKey:
    """A function mapping a request to its class name, from ``spec`` such as ``tenant+model``.

    One field gives the field's value (``"tenant"`` -> ``"alice"``); several
    give the values joined with ``|`` (``"alice|llama"``). A missing value is
    ``"-"``. Raises ``ValueError`` naming the allowed fields.
    """
    fields = tuple(part.strip() for part in spec.split("+"))
    bad = [f for f in fields if f not in KEY_FIELDS]
    if not fields or bad:
        raise ValueError(
            f"class key {spec!r}: unknown field(s) {bad}; allowed: {', '.join(KEY_FIELDS)}"
        )
    if fields == ("tenant",):
        return _tenant
    if len(fields) == 1:
        name = fields[0]
        return lambda req: _text(getattr(req, name))
    return lambda req: "|".join(_text(getattr(req, f)) for f in fields)


def _tenant(req: Request) -> str:
    return req.tenant


def _text(value: object) -> str:
    return "-" if value is None else str(value)
