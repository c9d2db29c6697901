"""Warnings about a run whose figures should not be read at face value.

- **Preemption storm**: more than ``STORM_PREEMPTIONS_PER_REQUEST`` preemptions
  per completed request. Each recompute preemption computes a request's prompt
  and its output so far again, so the engine spends much of its time redoing
  work and the latencies say more about KV pressure than about the policy.
- **Past the capacity knee**: the queue grows through the run. The queueing
  delay (arrival to first scheduled) of completed requests is fitted by least
  squares against arrival time, leaving out the first tenth of the arrival
  window (warm-up); the run is past the knee when the fitted growth over the
  rest of the window exceeds both the mean delay there and
  ``KNEE_MIN_GROWTH_S``. Below the knee the delay is stationary (bursts come
  and go); past it every figure grows with the run's length, so it describes
  the run, not the deployment.
"""

from __future__ import annotations

import numpy as np

from fairserve.metrics.records import RecordArrays

STORM_PREEMPTIONS_PER_REQUEST = 0.5
KNEE_MIN_GROWTH_S = 5.0
_MIN_REQUESTS = 50  # fewer: too few to tell a trend from noise


def preemption_storm(preemptions: int, completed: int) -> str | None:
    """The warning for a preemption storm, or None."""
    if completed <= 0 or preemptions <= STORM_PREEMPTIONS_PER_REQUEST * completed:
        return None
    return (
        f"preemption storm: {preemptions:,} preemptions for {completed:,} completed requests "
        f"({preemptions / completed:.2f} each); every one recomputes a prompt and its output "
        "so far, so latencies reflect KV pressure (more KV memory or a lower max_num_seqs "
        "helps) or, with a service quantum, its yields (a larger quantum means fewer)"
    )


def past_capacity_knee(records: RecordArrays) -> str | None:
    """The warning for a run whose queue grows from start to end, or None."""
    done = records.completed
    arrival = records.arrival_s[done]
    delay = records.first_scheduled_s[done] - arrival
    if len(arrival) < _MIN_REQUESTS:
        return None
    t0, t1 = float(arrival.min()), float(arrival.max())
    kept = arrival >= t0 + 0.1 * (t1 - t0)
    x, y = arrival[kept], delay[kept]
    if len(x) < _MIN_REQUESTS or not float(x.max()) > float(x.min()):
        return None
    slope = float(np.polyfit(x, y, 1)[0])
    growth, mean = slope * float(x.max() - x.min()), float(y.mean())
    if growth <= max(mean, KNEE_MIN_GROWTH_S):
        return None
    return (
        f"past the capacity knee: the queueing delay grows by {growth:,.1f} s across the run "
        f"(mean {mean:,.1f} s); the queue grows, so the figures grow with the run's length "
        "(lower the load or add instances to measure the deployment)"
    )


def run_warnings(records: RecordArrays, preemptions: int) -> tuple[str, ...]:
    """Every warning that applies to a run."""
    completed = int(records.completed.sum())
    found = (preemption_storm(preemptions, completed), past_capacity_knee(records))
    return tuple(w for w in found if w is not None)
