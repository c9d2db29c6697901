"""Latency telemetry from the simulator: the batch state each request meets, and its latency.

``latency_telemetry`` runs one engine under a load that swings between two
rates and notes, for every request, the engine's public view at the moment it
is dispatched (``BatchState``: decodes in the batch, the KV tokens they read,
the prefill tokens queued ahead) next to its TTFT and end-to-end latency from
that moment. ``fairserve predictor latency`` fits its latency model on these.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from fairserve.core.model import Request
from fairserve.core.policies.fifo import FifoPolicy
from fairserve.core.predict.latency import BatchState
from fairserve.core.route.basic import RoundRobinRouter
from fairserve.metrics.records import RequestRecords
from fairserve.sim import loop
from fairserve.sim.cluster import Cluster
from fairserve.sim.config import EngineConfig
from fairserve.sim.cost import CostModel, cost_model
from fairserve.sim.engine import Engine


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

    def add(self, req: Request, now: float) -> None:
        """Note the state ``req`` meets, then hand it to the engine."""
        engine = self.engine
        state = BatchState(
            num_decodes=engine.num_decodes,
            decode_context_tokens=engine.decode_context_tokens,
            queued_prefill_tokens=engine.queued_prefill_tokens,
            prompt_tokens=req.prompt_tokens,
            predicted_output_tokens=req.predicted_output_tokens or req.output_tokens,
        )
        self.rows[req.id] = (state, now)
        engine.add(req, now)

    def advance(self) -> None:
        """Let the engine finish its work in flight."""
        self.engine.advance()


def swinging_load(
    n_requests: int, seed: int, min_rate_per_s: float, max_rate_per_s: float, period_s: float
) -> list[Request]:
    """Poisson arrivals whose rate follows a sine between two rates; lognormal lengths."""
    rng = np.random.default_rng(seed)
    peak = max_rate_per_s
    mid, half = (max_rate_per_s + min_rate_per_s) / 2, (max_rate_per_s - min_rate_per_s) / 2
    times: list[float] = []
    t = 0.0
    while len(times) < n_requests:  # thinning of a Poisson process at the peak rate
        t += float(rng.exponential(1.0 / peak))
        if rng.uniform(0.0, peak) < mid + half * math.sin(2 * math.pi * t / period_s):
            times.append(t)
    prompt = np.clip(np.rint(rng.lognormal(math.log(512) - 0.5, 1.0, n_requests)), 1, 6000)
    output = np.clip(np.rint(rng.lognormal(math.log(256) - 0.5, 1.0, n_requests)), 1, 2000)
    return [Request(i, times[i], int(prompt[i]), int(output[i])) for i in range(n_requests)]


def latency_telemetry(
    n_requests: int = 4000,
    seed: int = 0,
    min_rate_per_s: float = 1.0,
    max_rate_per_s: float = 40.0,
    period_s: float = 120.0,
    gpu: str = "H100-80GB",
    model: str = "Llama-3.1-8B",
) -> tuple[list[BatchState], np.ndarray, np.ndarray, int]:
    """Simulate one engine under a load that swings between two rates; sample each dispatch.

    Arrivals are Poisson with a rate that follows a sine between the two
    rates (so the samples cover an idle engine, a full batch and a queue);
    prompt and output lengths are lognormal (means 512 and 256, sigma 1). The
    request's true output length stands in for its prediction. Returns
    ``(states, ttft_s, e2e_s, token_budget)``, latencies measured from dispatch.
    """
    reqs = swinging_load(n_requests, seed, min_rate_per_s, max_rate_per_s, period_s)
    config = EngineConfig()
    records = RequestRecords()
    probe = Probe(Engine(0, cost_model(gpu, model), config, records))
    cluster = Cluster([probe], RoundRobinRouter(), FifoPolicy(), 64)
    loop.run(reqs, cluster)
    arrays = records.to_numpy()
    done = arrays.completed
    states, ttft, e2e = [], [], []
    for rid, first, finish in zip(
        arrays.request_id[done].tolist(),
        arrays.first_token_s[done].tolist(),
        arrays.finish_s[done].tolist(),
        strict=True,
    ):
        state, dispatched = probe.rows[rid]
        states.append(state)
        ttft.append(first - dispatched)
        e2e.append(finish - dispatched)
    return states, np.asarray(ttft), np.asarray(e2e), config.max_num_batched_tokens
