"""A lower bound on latency that no policy can beat: each request alone on an empty engine.

A request's latency in a shared engine is at least its latency alone, for any
order, victim or batch cap: alone, it is admitted at its arrival, its prefill
gets the whole token budget of every step, and each step is the cheapest a
step holding it can be (a step's time only grows with what else it carries).
So the mean of the alone latencies bounds the mean E2E of every policy from
below, and "the share of the gap closed" against it lies in [0, 1].

Prefix caching can only help a request, so a request with prefix hashes is
run twice in a row and the second, fully cached run is the one measured (the
most any policy could reuse). The bound is computed with the simulator's own
engine (the event-skipping one), so it shares its cost model exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from fairserve.core.model import Request
from fairserve.metrics.records import RequestRecords
from fairserve.sim.engine import Engine
from fairserve.sim.run import InstanceSpec


def alone_e2e_s(requests: Iterable[Request], instance: InstanceSpec | None = None) -> np.ndarray:
    """Each request's E2E alone on an empty engine of kind ``instance``, in request order.

    NaN for a request the engine can never run (too long for it).
    """
    spec = instance if instance is not None else InstanceSpec()
    records = RequestRecords()
    engine = Engine(0, spec.cost_model(), spec.engine, records)
    warm_cache = spec.engine.enable_prefix_caching
    order: list[int] = []
    for req in requests:
        runs = 2 if warm_cache and req.prefix_hashes else 1
        for run in range(runs):
            # Ids stay unique across the warm-up run and the measured one.
            alone = dataclasses.replace(req, id=2 * len(order) + run, arrival_s=engine.now)
            _run_alone(engine, alone)
        order.append(2 * len(order) + runs - 1)
    arrays = records.to_numpy()
    e2e = dict(zip(arrays.request_id.tolist(), arrays.e2e_s.tolist(), strict=True))
    return np.array([e2e.get(rid, np.nan) for rid in order], dtype=np.float64)


def _run_alone(engine: Engine, req: Request) -> None:
    """Add ``req`` to the idle ``engine`` and step it until it is idle again."""
    engine.add(req, req.arrival_s)
    while engine.wake_s is not None:
        engine.advance()
