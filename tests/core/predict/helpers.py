"""Small request factories for predictor tests."""

from __future__ import annotations

import itertools

from fairserve.core.model import Request

_ids = itertools.count(1_000_000)


def req(
    tenant: str = "t",
    output_tokens: int = 100,
    prompt_tokens: int = 50,
    *,
    id: int | None = None,
    max_tokens: int | None = None,
    model: str | None = None,
    turn: int = 0,
    text: str | None = None,
) -> Request:
    """A request with only what predictors look at."""
    return Request(
        next(_ids) if id is None else id,
        0.0,
        prompt_tokens,
        output_tokens,
        tenant=tenant,
        max_tokens=max_tokens,
        model=model,
        turn=turn,
        text=text,
    )
