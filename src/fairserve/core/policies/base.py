"""The Policy protocol: queue order, charging and preemption choice in one object."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from fairserve.core.model import Request
from fairserve.core.registry import Registry


@runtime_checkable
class Policy(Protocol):
    """Decides who goes next and who is preempted. ``now`` is always passed in."""

    def push(self, req: Request, now: float) -> None:
        """Add a waiting request."""

    def pop(self, now: float) -> Request | None:
        """Remove and return the next request to serve, or None when empty."""

    def peek(self, now: float) -> Request | None:
        """The request ``pop`` would return, without removing it."""

    def remove(self, req: Request) -> bool:
        """Remove a waiting request (cancelled); False if it was not queued."""

    def __len__(self) -> int:
        """Number of waiting requests."""

    def on_served(self, req: Request, prefill_tokens: int, decode_tokens: int, now: float) -> None:
        """Charge hook: ``req`` was served these tokens."""

    def on_finish(self, req: Request, now: float) -> None:
        """``req`` ended (completed, cancelled or failed)."""

    def pick_victim(self, running: Sequence[Request], now: float) -> Request:
        """Which running request to preempt when KV memory runs out."""


POLICIES: Registry[Policy] = Registry("policy")
