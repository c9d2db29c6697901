"""Latency telemetry from the simulator: the batch state each request meets, and its latency.

:func:`dispatch_telemetry` runs one engine on any list of requests (a
workload, a trace, or :func:`swinging_load`'s load that swings between two
rates) with a configured output-length predictor, and notes for every request
the engine's public view at the moment it is dispatched (``BatchState``:
decodes in the batch, the KV tokens they read, the prefill tokens queued
ahead, the requests queued, the output the co-located requests are predicted
to still produce) and the *estimate* the predictor gave at dispatch. The true
output length is kept only as a label, beside the measured TTFT, mean TPOT
and E2E (from dispatch) and the E2E the same request would take on an idle
engine (from the cost model), whose ratio is its slowdown.
``fairserve predictor latency`` fits its latency model on these and
``fairserve predictor score`` scores a saved one on another workload.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from fairserve.core.model import Request
from fairserve.core.policies.fifo import FifoPolicy
from fairserve.core.predict import PREDICTORS
from fairserve.core.predict.latency import BatchState, LatencySamples
from fairserve.core.registry import ComponentSpec
from fairserve.core.route.basic import RoundRobinRouter
from fairserve.core.route.latency import remaining_output_tokens
from fairserve.metrics.records import RequestRecords
from fairserve.sim import loop
from fairserve.sim.cluster import Cluster
from fairserve.sim.config import EngineConfig
from fairserve.sim.cost import CostModel, cost_model
from fairserve.sim.engine import Engine

#: The output-length predictor telemetry uses unless told otherwise: a
#: realistic one (per-tenant history), not the true length.
DEFAULT_LENGTH_PREDICTOR = "history"
#: Requests the engine may hold queued: enough that its queue, not the global
#: one, is where a request waits under heavy load (so TTFT sees the load).
ENGINE_QUEUE = 64
#: The prompt and output lengths whose E2E alone every telemetry adds for the fit.
GRID_PROMPT_TOKENS = (1, 8, 64, 256, 1024, 4096, 16_384)
GRID_OUTPUT_TOKENS = (1, 2, 8, 32, 128, 512, 2048)


class Probe:
    """An engine behind a recorder: notes the batch state each request meets at dispatch.

    The cluster and the event loop see the engine's own interface; ``add``
    first reads the engine's public view, then hands the request on.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.rows: dict[int, tuple[BatchState, float]] = {}  # request id -> (state, dispatched at)

    @property
    def index(self) -> int:
        """The engine's index."""
        return self.engine.index

    @property
    def on_finish(self) -> Callable[[Request, int, float], None] | None:
        """The engine's end-of-request hook (the cluster sets it)."""
        return self.engine.on_finish

    @on_finish.setter
    def on_finish(self, hook: Callable[[Request, int, float], None] | None) -> None:
        self.engine.on_finish = hook

    @property
    def wake_s(self) -> float | None:
        """The engine's next step boundary."""
        return self.engine.wake_s

    @property
    def cost(self) -> CostModel:
        """The engine's cost model."""
        return self.engine.cost

    @property
    def num_decodes(self) -> int:
        """Running requests past their prefill."""
        return self.engine.num_decodes

    @property
    def decode_context_tokens(self) -> int:
        """KV tokens the engine's decodes read per step."""
        return self.engine.decode_context_tokens

    @property
    def queued_prefill_tokens(self) -> int:
        """Prefill tokens the engine still has to compute."""
        return self.engine.queued_prefill_tokens

    @property
    def version(self) -> int:
        """The engine's wake-up version."""
        return self.engine.version

    @property
    def num_waiting(self) -> int:
        """Requests queued in the engine."""
        return self.engine.num_waiting

    @property
    def num_running(self) -> int:
        """Requests in the engine's batch."""
        return self.engine.num_running

    @property
    def outstanding_tokens(self) -> int:
        """Prompt plus max_tokens of the engine's requests."""
        return self.engine.outstanding_tokens

    @property
    def predicted_tokens(self) -> int:
        """Prompt plus predicted output of the engine's requests."""
        return self.engine.predicted_tokens

    def prefix_match(
        self, hashes: tuple[int, ...], block_tokens: int, now: float
    ) -> tuple[int, int, int]:
        """The engine's cached prefix of ``hashes``, by KV tier."""
        return self.engine.prefix_match(hashes, block_tokens, now)

    def add(self, req: Request, now: float) -> None:
        """Note the state ``req`` meets (with the output the cluster's predictor
        estimated for it, or its true one without a predictor), then hand it on."""
        engine = self.engine
        state = BatchState(
            num_decodes=engine.num_decodes,
            decode_context_tokens=engine.decode_context_tokens,
            queued_prefill_tokens=engine.queued_prefill_tokens,
            prompt_tokens=req.prompt_tokens,
            predicted_output_tokens=max(1, req.predicted_output_tokens or req.output_tokens),
            num_waiting=engine.num_waiting,
            batch_remaining_tokens=remaining_output_tokens(engine),
        )
        self.rows[req.id] = (state, now)
        engine.add(req, now)

    def advance(self) -> None:
        """Let the engine finish its work in flight."""
        self.engine.advance()


#: The tenants of :func:`swinging_load`: (name, prompt median, output median)
#: tokens, lognormal spread 0.7 each. Their prompt-to-output ratios span 1:4 to
#: 60:1, so the training batches range from decode-heavy to prefill-heavy.
MIX = (("chat", 600, 250), ("code", 2000, 32), ("summary", 4000, 150), ("writer", 150, 600))


def swinging_load(
    n_requests: int,
    seed: int,
    min_rate_per_s: float,
    max_rate_per_s: float,
    period_s: float,
    tenants: int = 1,
) -> list[Request]:
    """Poisson arrivals whose rate follows a sine between two rates; lognormal lengths.

    ``tenants`` = 1: one tenant, prompt and output medians 512/e^0.5 and
    256/e^0.5, spread 1. Otherwise the first ``tenants`` of :data:`MIX`
    (cycled, up to 4 kinds), each request's tenant drawn with shares that
    drift slowly and out of phase, so the batch's mix of long prompts and long
    answers changes over time as well as its size.
    """
    rng = np.random.default_rng(seed)
    times = _arrivals(rng, n_requests, min_rate_per_s, max_rate_per_s, period_s)
    if tenants <= 1:
        prompt = np.clip(np.rint(rng.lognormal(math.log(512) - 0.5, 1.0, n_requests)), 1, 6000)
        output = np.clip(np.rint(rng.lognormal(math.log(256) - 0.5, 1.0, n_requests)), 1, 2000)
        return [Request(i, times[i], int(prompt[i]), int(output[i])) for i in range(n_requests)]
    kinds = [MIX[i % len(MIX)] for i in range(tenants)]
    t = np.asarray(times)
    phase = 2 * np.pi * np.arange(tenants) / tenants
    shares = 1.05 + np.sin(2 * np.pi * t[:, None] / (3.1 * period_s) + phase[None, :])
    cum = np.cumsum(shares / shares.sum(axis=1, keepdims=True), axis=1)
    which = np.minimum((cum < rng.uniform(size=n_requests)[:, None]).sum(axis=1), tenants - 1)
    reqs = []
    for i, k in enumerate(which.tolist()):
        name, p_med, o_med = kinds[k]
        prompt_tokens = int(np.clip(round(p_med * rng.lognormal(0.0, 0.7)), 1, 16_000))
        output_tokens = int(np.clip(round(o_med * rng.lognormal(0.0, 0.7)), 1, 4000))
        reqs.append(Request(i, times[i], prompt_tokens, output_tokens, tenant=f"{name}{k}"))
    return reqs


def _arrivals(
    rng: np.random.Generator, n: int, min_rate_per_s: float, max_rate_per_s: float, period_s: float
) -> list[float]:
    """Arrival times of a Poisson process whose rate follows a sine between two rates."""
    peak = max_rate_per_s
    mid, half = (max_rate_per_s + min_rate_per_s) / 2, (max_rate_per_s - min_rate_per_s) / 2
    times: list[float] = []
    t = 0.0
    while len(times) < n:  # thinning of a Poisson process at the peak rate
        t += float(rng.exponential(1.0 / peak))
        if rng.uniform(0.0, peak) < mid + half * math.sin(2 * math.pi * t / period_s):
            times.append(t)
    return times


@dataclass(frozen=True)
class Telemetry:
    """One row per completed request: the state at dispatch and what followed.

    ``states`` hold the length predictor's estimate (``predicted_output_tokens``);
    ``output_tokens`` the true length (a label only). Latencies are seconds from
    dispatch; ``tpot_s`` is NaN for a one-token answer; ``alone_e2e_s`` is the
    same request's E2E on an idle engine (the cost model's steps).
    """

    states: list[BatchState]
    output_tokens: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    e2e_s: np.ndarray
    alone_e2e_s: np.ndarray
    token_budget: int
    length_predictor: str
    #: (states, E2E alone) over a grid of prompt and output lengths (the cost model's).
    alone_grid: tuple[list[BatchState], np.ndarray] | None = None
    #: The engine's seats (``EngineConfig.max_num_seqs``), which the latency model keeps.
    max_num_seqs: int = 256
    #: Each row's ``Request.id`` (to join a row with its request's tenant, text, ...).
    request_ids: np.ndarray | None = None

    @property
    def slowdown(self) -> np.ndarray:
        """E2E in the shared batch over E2E alone."""
        return np.asarray(self.e2e_s / self.alone_e2e_s, dtype=np.float64)

    def samples(self) -> LatencySamples:
        """The rows as the latency model's fit and score take them."""
        return LatencySamples(self.states, self.output_tokens, self.ttft_s, self.tpot_s,
                              self.e2e_s, self.alone_e2e_s, self.alone_grid)  # fmt: skip

    def with_true_lengths(self) -> list[BatchState]:
        """The states with the true output length in place of the estimate."""
        return [
            replace(s, predicted_output_tokens=max(1, int(o)))
            for s, o in zip(self.states, self.output_tokens.tolist(), strict=True)
        ]


def alone_e2e_s(cost: CostModel, prompt_tokens: int, output_tokens: int, budget: int) -> float:
    """A request's E2E on an idle engine: its prefill in budget-sized chunks, then
    its decodes alone, each reading the context so far (no prefix cache hits)."""
    total, done = 0.0, 0
    while done < prompt_tokens:
        chunk = min(budget, prompt_tokens - done)
        pairs = chunk * done + chunk * (chunk + 1) // 2
        total += cost.step_time_s(chunk, 0, done + chunk, pairs, 1, 1)
        done += chunk
    if output_tokens > 1:
        total += cost.decode_line(1, prompt_tokens + 1).total_s(output_tokens - 1)
    return total


def dispatch_telemetry(
    requests: Sequence[Request],
    length_predictor: str | ComponentSpec = DEFAULT_LENGTH_PREDICTOR,
    gpu: str = "H100-80GB",
    model: str = "Llama-3.1-8B",
    config: EngineConfig | None = None,
) -> Telemetry:
    """Run ``requests`` through one engine (FIFO, the engine's queue up to
    ``ENGINE_QUEUE``, no prefix cache unless ``config`` says) with ``length_predictor`` estimating each output at arrival
    (``"none"``: the true length); one :class:`Telemetry` row per completed request.

    The predictor is built from its registry spec (``history``,
    ``learned:path=DIR``, ``noisy-oracle:sigma=0.5``, ...); a learned one's
    saved model is opened with :func:`fairserve.store.load_model`.
    """
    from fairserve.store import load_model

    spec = ComponentSpec.parse(str(length_predictor))
    predictor = None if spec.name == "none" else PREDICTORS.build(spec, load=load_model)
    # No prefix cache by default: the batch state (like the gateway's view) counts a
    # prompt's every token as prefill to compute, so cache hits would be noise.
    config = config if config is not None else EngineConfig(enable_prefix_caching=False)
    cost = cost_model(gpu, model)
    records = RequestRecords()
    probe = Probe(Engine(0, cost, config, records))
    reqs = [replace(r, predicted_output_tokens=None) for r in requests]
    cluster = Cluster([probe], RoundRobinRouter(), FifoPolicy(), ENGINE_QUEUE, predictor=predictor)
    loop.run(reqs, cluster)
    tel = _rows(probe, records, cost, config.max_num_batched_tokens, str(spec))
    return replace(tel, max_num_seqs=config.max_num_seqs)


def _rows(
    probe: Probe, records: RequestRecords, cost: CostModel, budget: int, predictor: str
) -> Telemetry:
    arrays = records.to_numpy()
    done = arrays.completed
    states, ttft, e2e, out, alone = [], [], [], [], []
    for rid, first, finish, n_out in zip(
        arrays.request_id[done].tolist(),
        arrays.first_token_s[done].tolist(),
        arrays.finish_s[done].tolist(),
        arrays.output_tokens[done].tolist(),
        strict=True,
    ):
        state, dispatched = probe.rows[rid]
        states.append(state)
        ttft.append(first - dispatched)
        e2e.append(finish - dispatched)
        out.append(n_out)
        alone.append(alone_e2e_s(cost, state.prompt_tokens, n_out, budget))
    grid = [BatchState(0, 0, 0, p, o) for p in GRID_PROMPT_TOKENS for o in GRID_OUTPUT_TOKENS]
    grid_s = np.asarray([alone_e2e_s(cost, s.prompt_tokens, s.predicted_output_tokens, budget)
                         for s in grid])  # fmt: skip
    ttft_a, e2e_a, out_a = np.asarray(ttft), np.asarray(e2e), np.asarray(out)
    gaps = (out_a - 1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(gaps > 0, (e2e_a - ttft_a) / gaps, np.nan)
    ids = arrays.request_id[done]
    return Telemetry(states, out_a, ttft_a, tpot, e2e_a, np.asarray(alone), budget, predictor,
                     (grid, grid_s), request_ids=ids)  # fmt: skip


def latency_telemetry(
    n_requests: int = 4000,
    seed: int = 0,
    min_rate_per_s: float = 1.0,
    max_rate_per_s: float = 40.0,
    period_s: float = 120.0,
    gpu: str = "H100-80GB",
    model: str = "Llama-3.1-8B",
) -> tuple[list[BatchState], np.ndarray, np.ndarray, int]:
    """The version-1 training data: a swinging load with the *true* output length
    in each state. Returns ``(states, ttft_s, e2e_s, token_budget)``.

    Kept for :class:`~fairserve.core.predict.latency.LatencyModel` (version 1);
    new code uses :func:`dispatch_telemetry`, which records the estimate a
    length predictor gave.
    """
    reqs = swinging_load(n_requests, seed, min_rate_per_s, max_rate_per_s, period_s)
    tel = dispatch_telemetry(reqs, "none", gpu=gpu, model=model)
    return tel.states, tel.ttft_s, tel.e2e_s, tel.token_budget
