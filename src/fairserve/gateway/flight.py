"""One admitted request's state, passed along the request path, and how it can end.

A :class:`Flight` is made by :mod:`.admit`, waits for a backend in
:mod:`.dispatch`, is connected upstream by :mod:`.connect`, relayed by
:mod:`.relay` and ended, exactly once, by :mod:`.ledger`.
"""

from __future__ import annotations

import enum
from typing import Any

from fairserve.core.model import Outcome, Request
from fairserve.gateway.asgi import DisconnectWatch
from fairserve.gateway.backends.state import BackendState
from fairserve.gateway.dispatch import Ticket
from fairserve.gateway.protocol import ParsedRequest
from fairserve.gateway.tenants import TenantState
from fairserve.metrics.records import NAN


class End(enum.StrEnum):
    """How an admitted request ended (the ``outcome`` metrics label)."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"  # the client went away, or the gateway shut down
    FAILED = "failed"  # the upstream failed
    EXPIRED = "expired"  # waited past the tenant's max_queue_wait_s

    @property
    def outcome(self) -> Outcome:
        """The core's outcome (for request records)."""
        if self is End.COMPLETED:
            return Outcome.COMPLETED
        if self is End.CANCELLED:
            return Outcome.CANCELLED
        return Outcome.FAILED


class Flight:
    """One admitted request, from admission to its single end.

    ``produced`` counts the output tokens relayed and charged (the engine's
    usage replaces it at the end when there is one: :mod:`.ledger`);
    ``charged_prompt_tokens`` is the prompt charged to the policy with the
    first token (the estimate); times are the gateway's clock.
    """

    __slots__ = (
        "backend", "charged_prompt_tokens", "dispatched_s", "ended", "failed", "first_token_s",
        "instance", "last_token_s", "parsed", "produced", "req", "request_id", "tenant", "ticket",
        "usage", "watch",
    )  # fmt: skip

    def __init__(self, req: Request, tenant: TenantState, parsed: ParsedRequest) -> None:
        self.req = req
        self.tenant = tenant
        self.parsed = parsed
        self.backend: BackendState | None = None  # the backend it is on now
        self.ticket: Ticket | None = None  # its place in the dispatcher, once submitted
        self.watch: DisconnectWatch | None = None
        self.produced = 0
        self.charged_prompt_tokens = 0
        self.usage: dict[str, Any] | None = None
        self.dispatched_s = NAN
        self.first_token_s = NAN
        self.last_token_s = NAN  # when its latest tokens were relayed
        self.ended = False
        self.failed = False  # a streamed answer ended with an error event
        self.instance: int | None = None  # index of the last backend it was sent to
        self.request_id = ""  # x-request-id, sent upstream too

    @property
    def prompt_tokens(self) -> int:
        """The engine's prompt count once it reported one, else the gateway's estimate."""
        return _usage_count(self.usage, "prompt_tokens", self.req.prompt_tokens)

    @property
    def completion_tokens(self) -> int:
        """The engine's completion count once it reported one, else the tokens relayed."""
        return _usage_count(self.usage, "completion_tokens", self.produced)


def _usage_count(usage: dict[str, Any] | None, key: str, default: int) -> int:
    value = usage.get(key) if usage else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return default  # absent or nonsense: the gateway's own count stands
    return value
