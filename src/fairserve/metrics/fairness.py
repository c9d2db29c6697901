"""Fairness of a run, from its per-request records.

Definitions (DESIGN.md, "Metrics"):

- **Service** of a request: ``input_weight * prompt + output_weight * output``
  tokens (VTC's weights, 1 and 2 by default), given at a constant rate between
  its first scheduling and its finish. A tenant's *weighted* service divides
  its service by the tenant's weight.
- A tenant is **backlogged** in a time window when it has a request waiting
  (arrived, not yet scheduled) at both the start and the end of the window —
  a stand-in for "continuously backlogged", the condition of VTC's bound.
- **Jain's index**: for each window with at least two backlogged tenants,
  ``(sum x)^2 / (n * sum x^2)`` over their weighted service ``x`` in the
  window; the figure is the mean over such windows (1 is perfectly fair).
- **Maximum service difference** (VTC): for each pair of tenants, the weighted
  service difference accumulated over the windows where both are backlogged;
  the largest absolute value it reaches, over all pairs and times.
- **Worst wait**: the longest queueing delay (arrival to first scheduled) of a
  completed request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fairserve.metrics.records import RecordArrays


@dataclass(frozen=True)
class Fairness:
    """Fairness figures of a run (see the module docstring)."""

    jain: float
    max_service_diff: float
    worst_wait_s: float
    windows: int  # windows with at least two backlogged tenants

    def to_dict(self) -> dict[str, float | None]:
        """JSON-able figures; NaN becomes None."""

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "jain": clean(self.jain),
            "max_service_diff": clean(self.max_service_diff),
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


def fairness(
    records: RecordArrays,
    weights: Mapping[str, float] | None = None,
    window_s: float | None = None,
    input_weight: float = 1.0,
    output_weight: float = 2.0,
) -> Fairness:
    """Jain's index, VTC service difference and worst wait of a run."""
    done = records.completed
    nan = float("nan")
    if not done.any():
        return Fairness(nan, nan, nan, 0)
    arrival = records.arrival_s[done]
    sched = records.first_scheduled_s[done]
    finish = records.finish_s[done]
    tenant = records.tenant[done]
    service = (
        input_weight * records.prompt_tokens[done] + output_weight * records.output_tokens[done]
    )
    worst_wait = float(np.max(sched - arrival))
    t0, t1 = float(arrival.min()), float(finish.max())
    span = max(t1 - t0, 1e-9)
    width = window_s if window_s is not None else span / 200
    edges = t0 + width * np.arange(math.ceil(span / width) + 1)
    names = records.tenant_names
    served, backlogged = [], []
    for code, name in enumerate(names):
        mine = tenant == code
        if not mine.any():
            continue
        w = (weights or {}).get(name, 1.0)
        cum = _cumulative_service(sched[mine], finish[mine], service[mine].astype(float), edges)
        served.append(np.diff(cum) / w)
        a_sorted, s_sorted = np.sort(arrival[mine]), np.sort(sched[mine])
        # Requests waiting at each edge: arrived by then, not yet scheduled.
        waiting = np.searchsorted(a_sorted, edges, side="right") - np.searchsorted(
            s_sorted, edges, side="right"
        )
        backlogged.append((waiting[:-1] > 0) & (waiting[1:] > 0))
    x = np.array(served)  # tenants x windows
    b = np.array(backlogged)
    return _figures(x, b, worst_wait)


def _figures(x: np.ndarray, b: np.ndarray, worst_wait: float) -> Fairness:
    both = b.sum(axis=0) >= 2
    nan = float("nan")
    if not both.any():
        return Fairness(nan, nan, worst_wait, 0)
    xb = np.where(b, x, 0.0)[:, both]
    n = b[:, both].sum(axis=0)
    total = xb.sum(axis=0)
    squares = (xb**2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        jain_w = np.where(squares > 0, total**2 / (n * squares), 1.0)
    max_diff = 0.0
    for i in range(x.shape[0]):
        for j in range(i + 1, x.shape[0]):
            pair = b[i] & b[j]
            if pair.any():
                diff = np.cumsum(np.where(pair, x[i] - x[j], 0.0))
                max_diff = max(max_diff, float(np.max(np.abs(diff))))
    return Fairness(float(np.mean(jain_w)), max_diff, worst_wait, int(both.sum()))
