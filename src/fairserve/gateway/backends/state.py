"""One upstream's live state as the gateway sees it: capacity, health and a batch estimate.

:class:`BackendState` is what the routers read (the core's ``InstanceView``
and ``BatchView``). The gateway sees an engine only through the streams it
relays and, where the engine exposes them, its /metrics, so two figures are
estimates:

- the engine's queue (``num_waiting``) and batch (``num_running``). When the
  engine exposes its counts they are the truth: the figures of the last poll,
  moved on by the requests sent and ended since (``total = running + waiting
  + sent - ended``), and never fewer than the gateway's own requests in
  flight there. The batch it can hold (``running_cap``) is its running
  count the last time it also had requests waiting — so it shrinks when the
  KV cache fills and requests are preempted, and grows when the engine runs
  more than before; ``waiting = total - running_cap``. Before the engine was
  ever seen with a queue, requests sent since the poll count as running.
  An engine's gauges can lag (vLLM's CPU build was seen reporting an empty
  engine while four of the gateway's streams ran): figures that account for
  fewer requests than the gateway has in flight there are stale, so they
  teach nothing about the batch limit and cannot pull the estimate below
  what the gateway itself sent. Without engine metrics, every request in
  flight counts as running;
- the time per output token of its streams (``itl_s``, smoothed), from
  which SLO-driven concurrency sets ``tpot_limit``, the batch that meets the
  tightest TPOT objective in force (docs/gateway.md); with a latency model
  configured, also the TPOT it predicts for the batch with one more request
  (``predicted_tpot_s``);
- the batch composition (``BatchView``, read by the ``slo-aware`` router and
  ``slo`` admission): a request in flight counts as decoding from its first
  streamed token, with a KV context of its prompt plus the tokens streamed so
  far; before its first token its whole prompt counts as prefill still to
  compute (it may be waiting in the engine's queue or half prefilled; prefix
  cache hits are not seen).
"""

from __future__ import annotations

import math

from fairserve.core.model import Request
from fairserve.core.predict.latency import BatchLatencyModel, BatchState
from fairserve.gateway.backends.engine_metrics import EngineFigures
from fairserve.gateway.config import BackendConfig

#: Weight of the newest inter-token figure in a backend's smoothed one.
ITL_SMOOTHING = 0.2
#: Seconds between two changes of a backend's TPOT batch limit.
TPOT_ADJUST_S = 0.5


class Load:
    """What one request in flight puts on its backend."""

    __slots__ = ("objective", "output_tokens", "predicted_tokens", "prompt_tokens", "tokens")

    def __init__(self, req: Request, objective: bool = False) -> None:
        self.objective = objective  # its tenant has a TPOT objective
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
        self.inflight_objective = 0  # of which from tenants with a TPOT objective
        self.loads: set[Load] = set()  # the requests in flight here
        self.engine: EngineFigures | None = None  # the last figures the engine reported
        self.running_cap: int | None = None
        self.engine_stale = False  # the last figures counted fewer than the gateway's own
        # SLO-driven concurrency: the batch that meets the TPOT objective in force
        self.itl_s: float | None = None  # time per output token of its streams, smoothed
        self.tpot_limit: float | None = None  # None: not limited by an objective
        self.tpot_held = False  # the limit held a request back since its last change
        self._adjust_at_s = -math.inf
        self.sent_since_poll = 0
        self.ended_since_poll = 0
        self.failures = 0
        self.scheduling_policy: str | None = None  # as the engine reported it (priority: true)

    # ----------------------------------------------------------- capacity
    def take(self, load: Load) -> None:
        """A request was sent here."""
        self.inflight += 1
        self.inflight_tokens += load.tokens
        self.inflight_predicted_tokens += load.predicted_tokens
        self.inflight_objective += load.objective
        self.loads.add(load)
        self.sent_since_poll += 1

    def give_back(self, load: Load) -> None:
        """A request sent here ended (or is retried elsewhere)."""
        self.inflight -= 1
        self.inflight_tokens -= load.tokens
        self.inflight_predicted_tokens -= load.predicted_tokens
        self.inflight_objective -= load.objective
        self.loads.remove(load)
        self.ended_since_poll += 1
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

    # ----------------------------------------------------------- SLO-driven concurrency
    def observe_itl(self, per_token_s: float, now_s: float, objective_s: float | None) -> None:
        """A stream here produced tokens ``per_token_s`` apart; adjust the batch limit.

        Additive increase, multiplicative decrease, at most once per
        ``TPOT_ADJUST_S``: above the objective the limit drops to 0.8 times
        the batch the engine holds now (at least one request); comfortably
        below it (under 0.8 times), and while it held a request back, it
        grows by one.
        """
        a = ITL_SMOOTHING
        self.itl_s = (
            per_token_s if self.itl_s is None else self.itl_s + a * (per_token_s - self.itl_s)
        )
        if objective_s is None:
            self.tpot_limit = None
            return
        if now_s < self._adjust_at_s:
            return
        self._adjust_at_s = now_s + TPOT_ADJUST_S
        limit = self.tpot_limit if self.tpot_limit is not None else float(max(1, self.inflight))
        if self.itl_s > objective_s:
            limit = max(1.0, min(limit, self.inflight) * 0.8)
        elif self.itl_s < 0.8 * objective_s and self.tpot_held:
            limit = limit + 1.0
        self.tpot_held = False
        self.tpot_limit = min(limit, float(self.config.max_concurrency))

    def tpot_allows(
        self,
        reserve_seqs: int,
        objective: bool,
        objective_s: float | None = None,
        model: BatchLatencyModel | None = None,
    ) -> bool:
        """Whether one more request fits the TPOT batch limit.

        A request without an objective leaves ``reserve_seqs`` of the limit
        free; one with an objective may use them, and always has that many
        seats of its own: when the limit has just come down below the batch
        the others hold (running requests are not taken back), its requests
        do not wait for that batch to drain. With a latency ``model`` and the
        objective in force (``objective_s``), the batch must also be predicted
        to meet it with the request (and the free seats) added: the limit then
        holds before the measured time per token overshoots, not after.
        """
        if self.inflight == 0:
            return True
        if objective and self.inflight_objective < reserve_seqs:
            return True
        extra = 1 if objective else 1 + reserve_seqs
        limit = self.tpot_limit
        fits = limit is None or self.inflight + extra <= limit
        if fits and model is not None and objective_s is not None:
            fits = self.predicted_tpot_s(model, extra) <= objective_s
        if not fits:
            self.tpot_held = True  # the limit binds: it may grow while the objective is met
        return fits

    def predicted_tpot_s(self, model: BatchLatencyModel, extra_seqs: int = 1) -> float:
        """The TPOT ``model`` predicts here once ``extra_seqs`` more requests of the
        in-flight mean size join: every request in flight then decodes, its prompt
        and the tokens streamed so far its KV context."""
        n = len(self.loads)
        prompts = sum(load.prompt_tokens for load in self.loads)
        mean_prompt = prompts / n if n else 1.0
        mean_output = (self.inflight_predicted_tokens - prompts) / n if n else 1.0
        context = self.decode_context_tokens + self.queued_prefill_tokens
        state = BatchState(
            num_decodes=n + extra_seqs - 1,
            decode_context_tokens=round(context + (extra_seqs - 1) * mean_prompt),
            queued_prefill_tokens=0,
            prompt_tokens=max(1, round(mean_prompt)),
            predicted_output_tokens=max(1, round(mean_output)),
        )
        return model.predict_state(state).tpot_s

    def observe_engine(self, figures: EngineFigures) -> None:
        """Fresh figures from the engine's /metrics: they replace the estimate."""
        self.engine = figures
        self.sent_since_poll = self.ended_since_poll = 0
        self.engine_stale = figures.running + figures.waiting < self.inflight
        if self.engine_stale:
            return  # lagging gauges: they say nothing about the batch limit
        if figures.waiting > 0:
            # Full now: its batch limit, shrunk or not (at least one: a queue
            # with an empty batch is a moment between two steps, not a limit).
            self.running_cap = max(1, figures.running)
        elif self.running_cap is not None and figures.running > self.running_cap:
            self.running_cap = figures.running

    def forget_engine(self) -> None:
        """The engine's figures are gone (it restarted or went away): back to counting."""
        self.engine = None
        self.engine_stale = False
        self.running_cap = None

    def _engine_total(self) -> int:
        assert self.engine is not None
        e = self.engine
        reckoned = e.running + e.waiting + self.sent_since_poll - self.ended_since_poll
        return max(self.inflight, reckoned)

    # ----------------------------------------------------------- InstanceView
    @property
    def num_waiting(self) -> int:
        """Requests estimated to wait in the engine's own queue (anyone's, not only ours)."""
        if self.engine is None:
            return 0
        if self.running_cap is None:
            return max(0, self.engine.waiting - self.ended_since_poll)
        return max(0, self._engine_total() - self.running_cap)

    @property
    def num_running(self) -> int:
        """Requests in the engine's batch (in flight when the engine does not say)."""
        if self.engine is None:
            return self.inflight
        return max(0, self._engine_total() - self.num_waiting)

    @property
    def kv_usage(self) -> float | None:
        """The engine's KV cache use (0-1) at its last report, when it reports one."""
        return None if self.engine is None else self.engine.kv_usage

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
