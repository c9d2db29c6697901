"""Fairness of a run, from its per-request records.

Definitions (DESIGN.md, "Metrics"; docs/policies.md, "Fairness figures"):

- **Service** of a request: ``input_weight * prompt`` tokens given evenly over
  its prefill (first scheduled to first token) and ``output_weight * output``
  tokens evenly over its decode (first token to finish): service is attributed
  to the steps that did it, so a prefill-heavy request is served early, not
  spread over its whole life. VTC's weights, 1 and 2 by default. A tenant's
  *weighted* service divides its service by the tenant's weight.
- A tenant is **backlogged** while it has queued, unserved demand: at least
  one request that has arrived and has not yet been scheduled. This is exact
  in time (computed between consecutive record events, not sampled at window
  edges). A tenant whose requests are all admitted on arrival is never
  backlogged, however much of the engine another tenant takes.
- **Service difference** (VTC) of two tenants: the difference of their
  weighted service accumulated over the time both are backlogged.
  ``max_service_diff`` is the largest absolute value it reaches over the run
  (cumulative: it grows over many short stretches of common backlog), over
  all pairs; ``max_window_service_diff`` the largest absolute difference
  accumulated within ``window_s`` *inside one stretch of time in which both are
  continuously backlogged* (sliding), the quantity VTC's bound speaks of.
- **Jain's index** over backlogged tenants: in each window of ``window_s``,
  the tenants backlogged for at least half of it, each with its rate of
  weighted service while backlogged; ``(sum x)^2 / (n * sum x^2)`` over those
  rates, for windows with at least two such tenants; the figure is the mean
  over those windows (1 is perfectly fair).
- **Worst wait**: the longest queueing delay (arrival to first scheduled) of a
  completed request.

``window_s`` defaults to a 200th of the run. Work redone after a preemption
is not in the records and is not counted. Cost: O(T^2 * E) for T tenants and
E event times (four per record), E thinned evenly to ``MAX_GRID_POINTS``
beyond that (exact below it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fairserve.metrics.records import RecordArrays

#: Event times the timeline keeps at most (exact below, evenly thinned above).
MAX_GRID_POINTS = 400_000


@dataclass(frozen=True)
class Fairness:
    """Fairness figures of a run (see the module docstring)."""

    jain: float
    max_service_diff: float
    worst_wait_s: float
    windows: int  # windows with at least two backlogged tenants
    max_window_service_diff: float = float("nan")
    window_s: float = float("nan")

    def to_dict(self) -> dict[str, float | None]:
        """JSON-able figures; NaN becomes None."""

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "jain": clean(self.jain),
            "max_service_diff": clean(self.max_service_diff),
            "max_window_service_diff": clean(self.max_window_service_diff),
            "window_s": clean(self.window_s),
            "worst_wait_s": clean(self.worst_wait_s),
        }


def _cumulative_service(
    start: np.ndarray, end: np.ndarray, amount: np.ndarray, edges: np.ndarray
) -> np.ndarray:
    """Service given by ``edges[k]`` when each request gives ``amount`` evenly over [start, end]."""
    dur = np.maximum(end - start, 1e-12)
    rate = amount / dur
    order_s = np.argsort(start)
    order_e = np.argsort(end)
    s_sorted, e_sorted = start[order_s], end[order_e]
    r_s = np.concatenate(([0.0], np.cumsum(rate[order_s])))
    rs_s = np.concatenate(([0.0], np.cumsum((rate * start)[order_s])))
    r_e = np.concatenate(([0.0], np.cumsum(rate[order_e])))
    re_e = np.concatenate(([0.0], np.cumsum((rate * end)[order_e])))
    i = np.searchsorted(s_sorted, edges, side="right")
    j = np.searchsorted(e_sorted, edges, side="right")
    # sum over started of rate*(t - start) minus the part after each end.
    return (edges * r_s[i] - rs_s[i]) - (edges * r_e[j] - re_e[j])


@dataclass(frozen=True)
class _Timeline:
    """Per tenant, on the intervals between consecutive events: service and backlog."""

    grid: np.ndarray  # event times, ascending
    served: np.ndarray  # tenants x intervals: weighted service in each interval
    backlogged: np.ndarray  # tenants x intervals: backlogged throughout it


def _timeline(
    records: RecordArrays,
    weights: Mapping[str, float] | None,
    edges: np.ndarray,
    input_weight: float,
    output_weight: float,
) -> _Timeline:
    done = records.completed
    arrival, sched = records.arrival_s[done], records.first_scheduled_s[done]
    first, finish = records.first_token_s[done], records.finish_s[done]
    tenant = records.tenant[done]
    # A client's records (fairserve bench) cannot see when the engine scheduled a
    # request: it counts as queued until its first token, its prompt as served
    # over the wait for it.
    unseen = np.isnan(sched)
    prompt_from = np.where(unseen, arrival, sched)
    sched = np.where(unseen, first, sched)
    grid = np.unique(np.concatenate((arrival, sched, first, finish)))
    if len(grid) > MAX_GRID_POINTS:
        # Memory and time grow with tenants x events: past this many events, keep
        # evenly spaced ones (the figures become approximate between them).
        grid = grid[np.linspace(0, len(grid) - 1, MAX_GRID_POINTS).astype(np.int64)]
    grid = np.unique(np.concatenate((grid, edges)))
    served, backlogged = [], []
    for code, name in enumerate(records.tenant_names):
        mine = tenant == code
        if not mine.any():
            continue
        w = (weights or {}).get(name, 1.0)
        prompt = input_weight * records.prompt_tokens[done][mine].astype(float)
        output = output_weight * records.output_tokens[done][mine].astype(float)
        cum = _cumulative_service(prompt_from[mine], first[mine], prompt, grid)
        cum = cum + _cumulative_service(first[mine], finish[mine], output, grid)
        served.append(np.diff(cum) / w)
        # Requests queued just after each event: arrived by then, not yet scheduled.
        queued = np.searchsorted(np.sort(arrival[mine]), grid[:-1], side="right")
        queued -= np.searchsorted(np.sort(sched[mine]), grid[:-1], side="right")
        backlogged.append(queued > 0)
    return _Timeline(grid, np.array(served), np.array(backlogged))


def fairness(
    records: RecordArrays,
    weights: Mapping[str, float] | None = None,
    window_s: float | None = None,
    input_weight: float = 1.0,
    output_weight: float = 2.0,
) -> Fairness:
    """Jain's index over backlogged tenants, VTC service differences and the worst wait."""
    done = records.completed
    nan = float("nan")
    if not done.any():
        return Fairness(nan, nan, nan, 0)
    arrival, finish = records.arrival_s[done], records.finish_s[done]
    worst_wait = float(np.max(records.first_scheduled_s[done] - arrival))
    t0, t1 = float(arrival.min()), float(finish.max())
    span = max(t1 - t0, 1e-9)
    width = window_s if window_s is not None else span / 200
    edges = t0 + width * np.arange(math.ceil(span / width) + 1)
    line = _timeline(records, weights, edges, input_weight, output_weight)
    jain, windows = _jain(line, edges, width)
    cumulative, windowed = _service_differences(line, width)
    return Fairness(jain, cumulative, worst_wait, windows, windowed, width)


def _service_differences(line: _Timeline, width: float) -> tuple[float, float]:
    """The largest cumulative and windowed service differences over all pairs."""
    x, b, grid = line.served, line.backlogged, line.grid
    cumulative = windowed = 0.0
    for i in range(x.shape[0]):
        for j in range(i + 1, x.shape[0]):
            both = b[i] & b[j]
            if not both.any():
                continue
            diff = np.concatenate(([0.0], np.cumsum(np.where(both, x[i] - x[j], 0.0))))
            cumulative = max(cumulative, float(np.max(np.abs(diff))))
            windowed = max(windowed, _windowed(grid, both, diff, width))
    return cumulative, windowed


def _windowed(grid: np.ndarray, both: np.ndarray, diff: np.ndarray, width: float) -> float:
    """Largest |diff(t + width) - diff(t)| with t a grid point and [t, t + width] cut at
    the end of the stretch in which both tenants are continuously backlogged."""
    n = len(both)
    index = np.arange(n)
    # For each interval, the first interval at or after it in which they are not both backlogged.
    stop = np.minimum.accumulate(np.where(both, n, index)[::-1])[::-1]
    starts = index[both]
    target = np.minimum(grid[starts] + width, grid[stop[starts]])
    ahead = np.interp(target, grid, diff)
    return float(np.max(np.abs(ahead - diff[starts])))


def _jain(line: _Timeline, edges: np.ndarray, width: float) -> tuple[float, int]:
    """Mean Jain index of backlogged service rates over windows; the number of windows."""
    grid = line.grid
    window = np.clip(np.searchsorted(edges, grid[:-1], side="right") - 1, 0, len(edges) - 1)
    dt = np.diff(grid)
    n_windows = len(edges)
    rates, counted = [], []
    for served, backlogged in zip(line.served, line.backlogged, strict=True):
        time_b = np.bincount(window, weights=dt * backlogged, minlength=n_windows)
        service_b = np.bincount(window, weights=served * backlogged, minlength=n_windows)
        keep = time_b >= 0.5 * width
        counted.append(keep)
        rates.append(np.where(keep, service_b / np.maximum(time_b, 1e-12), 0.0))
    b, x = np.array(counted), np.array(rates)
    n = b.sum(axis=0)
    use = n >= 2
    if not use.any():
        return float("nan"), 0
    total, squares = x[:, use].sum(axis=0), (x[:, use] ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        index = np.where(squares > 0, total**2 / (n[use] * squares), 1.0)
    return float(np.mean(index)), int(use.sum())
