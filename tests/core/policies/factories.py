"""Small builders for policy tests."""

from __future__ import annotations

from collections.abc import Sequence

from fairserve.core.model import Request
from fairserve.core.policies import Policy


def req(
    rid: int,
    arrival_s: float = 0.0,
    prompt: int = 10,
    output: int = 10,
    tenant: str = "default",
    predicted: int | None = None,
    priority: int = 0,
) -> Request:
    """One request; ``predicted`` is its predicted output length."""
    return Request(
        rid,
        arrival_s,
        prompt,
        output,
        tenant=tenant,
        predicted_output_tokens=predicted,
        priority=priority,
    )


def push_all(policy: Policy, reqs: Sequence[Request]) -> None:
    """Push every request at its arrival time."""
    for r in reqs:
        policy.push(r, r.arrival_s)


def drain(policy: Policy, now: float = 0.0) -> list[int]:
    """Pop everything; the ids in service order (checking peek agrees with pop)."""
    order = []
    while len(policy):
        head = policy.peek(now)
        popped = policy.pop(now)
        assert popped is head
        assert popped is not None
        order.append(popped.id)
    assert policy.pop(now) is None and policy.peek(now) is None
    return order
