"""How the commands print: tables fitted to the terminal, and the one printer of a run's result.

``simulate`` and ``bench`` print the same table and JSON (:func:`print_run`).
Every table goes through a :class:`FittingConsole`: where a table is wider than
the terminal, the least informative columns are left out (and a note says
which) rather than cutting a number or a name to ``…``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Column, Table

from fairserve.core.model import SLO
from fairserve.metrics.summary import Goodput, Summary

__all__ = ["FittingConsole", "fit_table", "has_objective", "print_run", "slo_goodput_rows"]

#: Headers left out first when a table does not fit, least important first.
#: A column whose every cell is "-" (nothing measured) goes before any of these.
DROP_ORDER = (
    "pred. MAE",
    "worst wait s",
    "max svc diff",
    "TPOT p50 (ms)",
    "Completed",
    "E2E p50 (s)",
    "E2E p50 s",
    "ITL p50 (ms)",
    "TTFT p50 (ms)",
    "TTFT p50 ms",
    "TPOT p99 (ms)",
    "ITL p99 (ms)",
    "Requests",
    "Jain",
    "E2E p99 (s)",
    "E2E p99 s",
)
MISSING = "-"


def _needed(column: Column) -> int:
    """The narrowest ``column`` can be with no cell broken: its widest cell or header word."""
    words = str(column.header).split() or [""]
    return max(max(map(len, words)), *(len(str(c)) for c in column._cells), 1)


def _natural(column: Column) -> int:
    """``column``'s width with nothing wrapped: its widest cell or its whole header."""
    return max(len(str(column.header)), *(len(str(c)) for c in column._cells), 1)


def _width(table: Table, measure: Callable[[Column], int] = _needed) -> int:
    """``table``'s width with each column ``measure`` wide, padding and borders included."""
    pad = 2 if table.padding else 0
    return sum(measure(c) + pad for c in table.columns) + len(table.columns) + 1


def fit_table(table: Table, console: Console) -> list[str]:
    """Leave out columns of ``table`` until it fits ``console``; the headers left out.

    Columns whose cells are all "-" go first, then those in :data:`DROP_ORDER`.
    Where the table is still too wide for every header on one line, each
    column kept is made exactly :func:`_needed` wide, so a number or a name is
    never cut; only headers wrap, between words.
    """
    if _width(table, _natural) <= console.width:
        return []
    headers = [str(c.header) for c in table.columns]
    empty = [h for c, h in zip(table.columns, headers, strict=True)
             if c._cells and all(x == MISSING for x in c._cells)]  # fmt: skip
    order = [*empty, *(h for h in DROP_ORDER if h in headers and h not in empty)]
    dropped: list[str] = []
    for header in order:
        if _width(table) <= console.width:
            break
        table.columns = [c for c in table.columns if str(c.header) != header]
        dropped.append(f"{header} (all {MISSING})" if header in empty else header)
    for column in table.columns:
        column.width = _needed(column)
    return dropped


class FittingConsole(Console):
    """A rich console that fits every table it prints to its width (:func:`fit_table`)."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Print as rich does, each table fitted first; then a note of what was left out."""
        notes = []
        for obj in objects:
            if isinstance(obj, Table):
                dropped = fit_table(obj, self)
                if dropped:
                    notes.append(", ".join(dropped))
        super().print(*objects, **kwargs)
        for note in notes:
            super().print(
                f"[dim](left out to fit {self.width} columns: {note}; "
                "a wider terminal or --json shows them)[/]",
                highlight=False,
            )

    def rule(self, title: Any = "", **kwargs: Any) -> None:
        """A rule with its title, or (a title too long for one line) a rule then the title."""
        if isinstance(title, str) and len(title) + 6 > self.width:
            super().rule(**kwargs)
            super().print(title, style="bold", highlight=False)
        else:
            super().rule(title, **kwargs)


def has_objective(slo: SLO | None) -> bool:
    """Whether ``slo`` sets any latency objective (else goodput says nothing)."""
    return slo is not None and any(v is not None for v in (slo.ttft_s, slo.tpot_s, slo.e2e_s))


_NO_GOODPUT = Goodput(req_s=math.nan, tok_s=math.nan, fraction=math.nan)


def _tables_summary(summary: Summary, slos: Mapping[str, SLO] | None) -> Summary:
    """``summary`` with goodput blanked ("-") for tenants without an SLO, and overall if none has one."""
    if slos is None:
        return summary
    tenants = {
        name: t if has_objective(slos.get(name)) else dataclasses.replace(t, goodput=_NO_GOODPUT)
        for name, t in summary.per_tenant.items()
    }
    overall = summary.goodput if any(map(has_objective, slos.values())) else _NO_GOODPUT
    return dataclasses.replace(summary, per_tenant=tenants, goodput=overall)


def slo_goodput_rows(
    rows: Sequence[dict[str, Any]], slos: Mapping[str, SLO]
) -> list[dict[str, Any]]:
    """Comparison rows for the tables: goodput None ("-") where the tenant has no SLO."""
    out = []
    for row in rows:
        tenants = {
            name: t
            if has_objective(slos.get(name))
            else t | {"goodput": t["goodput"] | {"fraction": None}}
            for name, t in row["per_tenant"].items()
        }
        copy = row | {"per_tenant": tenants}
        if not any(map(has_objective, slos.values())):
            copy["goodput"] = row["goodput"] | {"fraction": None}
        out.append(copy)
    return out


def print_run(
    summary: Summary,
    *,
    title: str,
    as_json: bool,
    wall_time_s: float,
    failures: Mapping[int, str],
    engine_steps: int | None = None,
    slos: Mapping[str, SLO] | None = None,
) -> None:
    """A run's summary as one JSON object or as tables.

    ``engine_steps`` is given for a simulated run (its speed is printed too)
    and None for a live one (``bench``), whose JSON carries the same keys as
    null. With ``slos``, the tables show goodput only for tenants with an SLO.
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
    from fairserve.report.tables import engine_table, summary_table

    console = FittingConsole()
    console.rule(title)
    shown = _tables_summary(summary, slos)
    console.print(summary_table(shown))
    engine = engine_table(shown)
    if not simulated:  # a live run: its clock is the wall clock
        for column in engine.columns[:1]:
            column._cells = [
                "Live run time (s)" if c == "Simulated time (s)" else c for c in column._cells
            ]
    console.print(engine)
    if simulated:
        console.print(
            f"simulated {summary.requests:,} requests in {wall_time_s:.2f} s wall "
            f"({summary.requests / max(wall_time_s, 1e-9):,.0f} requests/s, "
            f"{engine_steps:,} engine steps)"
        )
    else:
        console.print(f"live run: wall time {wall_time_s:.1f} s")
    if failures:
        request, reason = next(iter(failures.items()))
        verb = "failed" if simulated else "did not complete"
        console.print(
            f"[yellow]{len(failures)} request(s) {verb}[/]; e.g. request {request}: {reason}"
        )
