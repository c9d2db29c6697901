"""The deterministic discrete-event loop.

Events are ordered by ``(time, seq)``: arrivals (pulled lazily from the
request stream, so a million requests never sit in memory at once) and engine
wake-ups (each engine has at most one live wake-up; a stale one is skipped by
its version). An arrival at the same instant as a step boundary is seen by the
step that starts there.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fairserve.core.model import Request
from fairserve.sim.cluster import Cluster, Instance


@dataclass(frozen=True, slots=True)
class LoopStats:
    """What the loop itself counted."""

    arrivals: int
    wakeups: int
    end_s: float


def run(
    requests: Iterable[Request],
    cluster: Cluster,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 10_000,
) -> LoopStats:
    """Drive ``cluster`` through ``requests`` (sorted by arrival) until all work ends."""
    heap: list[tuple[float, int, int, Instance]] = []
    seq = 0
    last_t = 0.0
    arrivals = wakeups = 0
    it = iter(requests)
    nxt = next(it, None)
    touched = cluster.touched
    pushed: dict[int, int] = {}  # id(instance) -> version of its live wake-up
    while True:
        if nxt is not None and (not heap or nxt.arrival_s <= heap[0][0]):
            t = nxt.arrival_s
            if t < last_t:
                raise ValueError(
                    f"requests must be sorted by arrival: request {nxt.id} arrives at {t} "
                    f"after one at {last_t}"
                )
            cluster.submit(nxt, t)
            arrivals += 1
            if progress is not None and arrivals % progress_every == 0:
                progress(arrivals)
            nxt = next(it, None)
        elif heap:
            t, _, version, inst = heapq.heappop(heap)
            if version != inst.version:
                continue
            assert t >= last_t, "time went back"
            inst.advance()
            wakeups += 1
            touched.append(inst)
            if len(cluster.queue):
                cluster.dispatch(t)
        else:
            break
        last_t = t
        for inst in touched:
            if inst.wake_s is not None and pushed.get(id(inst)) != inst.version:
                pushed[id(inst)] = inst.version
                seq += 1
                heapq.heappush(heap, (inst.wake_s, seq, inst.version, inst))
        touched.clear()
    if progress is not None:
        progress(arrivals)
    return LoopStats(arrivals=arrivals, wakeups=wakeups, end_s=last_t)
