"""One upstream's live state as the gateway sees it: capacity, health and a batch estimate.

:class:`BackendState` is what the routers read (the core's ``InstanceView``
and ``BatchView``). The gateway sees an engine only through the streams it
relays and, where the engine exposes them, its /metrics, so two figures are
estimates:

- the engine's own queue of our requests (``num_waiting``) is
  ``in_flight - running_cap``, where ``running_cap`` is the largest batch the
  engine reported while it also reported waiting requests (its real batch
  limit), or ``min(waiting, in_flight)`` before the engine was ever seen full;
- the batch composition (``BatchView``, read by the ``slo-aware`` router and
  ``slo`` admission): a request in flight counts as decoding from its first
  streamed token, with a KV context of its prompt plus the tokens streamed so
  far; before its first token its whole prompt counts as prefill still to
  compute (it may be waiting in the engine's queue or half prefilled; prefix
  cache hits are not seen).
"""

from __future__ import annotations

from fairserve.core.model import Request
from fairserve.gateway.config import BackendConfig


class Load:
    """What one request in flight puts on its backend."""

    __slots__ = ("output_tokens", "predicted_tokens", "prompt_tokens", "tokens")

    def __init__(self, req: Request) -> None:
        self.prompt_tokens = req.prompt_tokens
        self.tokens = req.prompt_tokens + req.output_tokens  # prompt + max_tokens
        predicted = req.predicted_output_tokens
        self.predicted_tokens = req.prompt_tokens + (
            predicted if predicted is not None else req.output_tokens
        )
        self.output_tokens = 0  # streamed so far

    @property
    def decoding(self) -> bool:
        """Past its prefill (a first token was streamed)."""
        return self.output_tokens > 0


class BackendState:
    """One upstream's live state; also the router's ``InstanceView`` and ``BatchView``."""

    def __init__(self, index: int, config: BackendConfig) -> None:
        self.index = index
        self.config = config
        self.url = config.url.rstrip("/")
        self.name = config.name or self.url
        self.healthy = True
        self.inflight = 0
        self.inflight_tokens = 0
        self.inflight_predicted_tokens = 0
        self.loads: set[Load] = set()  # the requests in flight here
        self.engine_running: int | None = None
        self.engine_waiting: int | None = None
        self.running_cap: int | None = None
        self.failures = 0

    # ----------------------------------------------------------- capacity
    def take(self, load: Load) -> None:
        """A request was sent here."""
        self.inflight += 1
        self.inflight_tokens += load.tokens
        self.inflight_predicted_tokens += load.predicted_tokens
        self.loads.add(load)

    def give_back(self, load: Load) -> None:
        """A request sent here ended (or is retried elsewhere)."""
        self.inflight -= 1
        self.inflight_tokens -= load.tokens
        self.inflight_predicted_tokens -= load.predicted_tokens
        self.loads.remove(load)
        assert self.inflight >= 0 and self.inflight_tokens >= 0, "capacity released twice"

    def has_room(self, tokens: int) -> bool:
        """Whether a request of ``tokens`` (prompt + max_tokens) may be sent now."""
        cfg = self.config
        if not self.healthy or self.inflight >= cfg.max_concurrency:
            return False
        window = cfg.max_tokens_in_flight
        if window is not None and self.inflight and self.inflight_tokens + tokens > window:
            return False
        return self.num_waiting < cfg.max_engine_waiting

    def observe_engine(self, running: int, waiting: int) -> None:
        """Fresh figures from the engine's /metrics."""
        self.engine_running = running
        self.engine_waiting = waiting
        if waiting > 0 and running > 0:
            self.running_cap = max(self.running_cap or 0, running)

    # ----------------------------------------------------------- InstanceView
    @property
    def num_waiting(self) -> int:
        """Our requests estimated to wait in the engine's own queue."""
        if self.running_cap is not None:
            return max(0, self.inflight - self.running_cap)
        if self.engine_waiting is not None:
            return min(self.engine_waiting, self.inflight)
        return 0

    @property
    def num_running(self) -> int:
        """Requests in the engine's batch (in flight when the engine does not say)."""
        return self.inflight - self.num_waiting

    @property
    def outstanding_tokens(self) -> int:
        """Prompt + max_tokens of the requests in flight."""
        return self.inflight_tokens

    @property
    def predicted_tokens(self) -> int:
        """Prompt + predicted output tokens of the requests in flight."""
        return self.inflight_predicted_tokens

    # ----------------------------------------------------------- BatchView (estimated)
    @property
    def num_decodes(self) -> int:
        """Requests in flight that have streamed a first token."""
        return sum(1 for load in self.loads if load.decoding)

    @property
    def decode_context_tokens(self) -> int:
        """Prompt plus streamed tokens of the decoding requests."""
        return sum(load.prompt_tokens + load.output_tokens for load in self.loads if load.decoding)

    @property
    def queued_prefill_tokens(self) -> int:
        """Prompts of the requests in flight without a first token yet."""
        return sum(load.prompt_tokens for load in self.loads if not load.decoding)
