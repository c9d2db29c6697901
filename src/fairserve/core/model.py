"""The request, tenant and SLO model shared by the simulator and the gateway.

Everything here is plain data. Time is in seconds (``*_s``), sizes in tokens
(``*_tokens``). Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

DEFAULT_TENANT = "default"
# Why a request with ``fails`` set ended (the engines' failure reason for it).
FAILED_AFTER_PROMPT = "failed after its prompt was served (the workload records a failure)"


class Outcome(enum.Enum):
    """How an admitted request ended. Every request ends exactly once."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SLO:
    """Latency objectives of a class of requests. ``None`` means no objective."""

    name: str = "default"
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def __post_init__(self) -> None:
        for key in ("ttft_s", "tpot_s", "e2e_s"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ValueError(f"SLO {self.name!r}: {key} must be > 0 or unset, got {value!r}")

    def met(self, ttft_s: float, tpot_s: float, e2e_s: float) -> bool:
        """Whether one finished request met every objective of this class."""
        return (
            (self.ttft_s is None or ttft_s <= self.ttft_s)
            and (self.tpot_s is None or tpot_s <= self.tpot_s)
            and (self.e2e_s is None or e2e_s <= self.e2e_s)
        )


@dataclass(frozen=True, slots=True)
class Tenant:
    """One party sharing the fleet: its weight, priority class and objectives.

    ``priority``: lower is more urgent (0 is the most urgent class), as in vLLM.
    """

    name: str
    weight: float = 1.0
    priority: int = 0
    slo: SLO = field(default_factory=SLO)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("tenant name must not be empty")
        if not self.weight > 0:
            raise ValueError(f"tenant {self.name!r}: weight must be > 0, got {self.weight!r}")


@dataclass(slots=True, eq=False)
class Request:
    """One LLM request as the scheduler sees it.

    ``output_tokens`` is the true output length: the simulator generates exactly
    that many tokens; a live driver does not know it (it sets it to
    ``max_tokens``). ``predicted_output_tokens`` is what a predictor said.
    ``prefix_hashes`` identify consecutive ``prefix_block_tokens``-token blocks of
    the prompt, each hash naming the whole prefix up to and including its block,
    so equal hashes mean a shareable KV prefix. ``priority``: lower is more
    urgent. ``max_tokens``, ``model`` and ``text`` (the prompt, when known) are
    features for predictors. ``fails``: the request fails once its prompt is
    processed (a failure a trace recorded, such as BurstGPT's zero-token
    responses, or one a failure model drew): it queues, prefills and holds its
    KV blocks like any request, then ends as failed with no output, so it costs
    what it cost (``output_tokens`` is then ignored and may be 0).

    Construction does not validate: requests are built by the million from
    columns the trace readers have already checked as a whole (a per-object
    check cost 1 s per 10 M requests). ``problem()`` names what is wrong with
    a request built by hand, and every engine ends such a request as failed
    with that reason instead of running it.
    """

    id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    tenant: str = DEFAULT_TENANT
    predicted_output_tokens: int | None = None
    slo_class: str | None = None
    priority: int = 0
    prefix_hashes: tuple[int, ...] | None = None
    prefix_block_tokens: int = 16
    conversation_id: str | None = None
    turn: int = 0
    max_tokens: int | None = None
    model: str | None = None
    text: str | None = None
    fails: bool = False

    def problem(self) -> str | None:
        """Why this request cannot be served as built, or None when it is well formed."""
        if self.prompt_tokens < 1:
            return f"request {self.id}: prompt_tokens must be >= 1, got {self.prompt_tokens}"
        if self.output_tokens < 1 and not self.fails:
            return f"request {self.id}: output_tokens must be >= 1, got {self.output_tokens}"
        if not self.arrival_s >= 0:
            return f"request {self.id}: arrival_s must be >= 0, got {self.arrival_s}"
        return None

    @property
    def total_tokens(self) -> int:
        """Prompt plus output tokens: the KV footprint when the request finishes."""
        return self.prompt_tokens + self.output_tokens
