"""The one printer of a run's result: ``simulate`` and ``bench`` print the same table and JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

from rich.console import Console

from fairserve.metrics.summary import Summary


def print_run(
    summary: Summary,
    *,
    title: str,
    as_json: bool,
    wall_time_s: float,
    failures: Mapping[int, str],
    engine_steps: int | None = None,
) -> None:
    """A run's summary as one JSON object or as tables.

    ``engine_steps`` is given for a simulated run (its speed is printed too)
    and None for a live one (``bench``), whose JSON carries the same keys as null.
    """
    simulated = engine_steps is not None
    if as_json:
        data = summary.to_dict()
        data["wall_time_s"] = wall_time_s
        data["engine_steps"] = engine_steps
        rate = summary.requests / wall_time_s if simulated and wall_time_s > 0 else None
        data["sim_requests_per_wall_s"] = rate
        sys.stdout.write(json.dumps(data, allow_nan=False) + "\n")
        return
    from fairserve.report.tables import print_summary

    console = Console()
    console.rule(title)
    print_summary(summary, console)
    if simulated:
        console.print(
            f"simulated {summary.requests:,} requests in {wall_time_s:.2f} s wall "
            f"({summary.requests / max(wall_time_s, 1e-9):,.0f} requests/s, "
            f"{engine_steps:,} engine steps)"
        )
    else:
        console.print(f"wall time {wall_time_s:.1f} s")
    if failures:
        request, reason = next(iter(failures.items()))
        verb = "failed" if simulated else "did not complete"
        console.print(
            f"[yellow]{len(failures)} request(s) {verb}[/]; e.g. request {request}: {reason}"
        )
