"""The rich rendering of a summary: rows, units in headers, values and missing figures."""

from __future__ import annotations

import re

from rich.console import Console

from fairserve.core.model import Outcome
from fairserve.metrics.records import RequestRecords
from fairserve.metrics.summary import EngineStats, Summary, summarize
from fairserve.report import engine_table, print_summary, summary_table

NAN = float("nan")


def make_summary(engine: EngineStats | None = None) -> Summary:
    """Tenant "a": TTFT 0.1 / 0.3 s, 11 tokens over 1 s; tenant "b": one failed request."""
    records = RequestRecords()
    rows = [
        ("a", Outcome.COMPLETED, 0.0, 0.1, 1.1),
        ("a", Outcome.COMPLETED, 1.0, 1.3, 2.3),
        ("b", Outcome.FAILED, 2.0, NAN, 4.0),
    ]
    for i, (tenant, outcome, arrival, first, finish) in enumerate(rows):
        output = 11 if outcome is Outcome.COMPLETED else 0
        records.add(i, tenant, 0, outcome, arrival, arrival, first, finish, 40, output, 10, 0)
    return summarize(records.to_numpy(), engine=engine)


def render(renderable: object, width: int = 220) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def cells(text: str, label: str) -> list[str]:
    """The cells of the row whose first cell is ``label``."""
    for line in text.splitlines():
        parts = [p.strip() for p in re.split(r"[│┃]", line)[1:-1]]
        if parts and parts[0] == label:
            return parts
    raise AssertionError(f"no row {label!r} in:\n{text}")


def test_summary_table_rows_and_units() -> None:
    table = summary_table(make_summary(), title="My run")
    assert table.title == "My run"
    assert table.row_count == 3  # overall + a + b
    headers = [str(column.header) for column in table.columns]
    assert headers[0] == "Tenant"
    assert "TTFT p50 (ms)" in headers and "TPOT p99 (ms)" in headers
    assert "E2E p50 (s)" in headers and any("Goodput" in h for h in headers)


def test_summary_table_values() -> None:
    text = render(summary_table(make_summary()))
    # all: 3 requests, 2 completed; TTFT [100, 300] ms -> p50 200, p99 298;
    # TPOT 1 s / 10 gaps = 100 ms; E2E 1.1 and 1.3 s; goodput 2 of 3 requests.
    assert cells(text, "all") == [
        "all", "3", "2", "200.0", "298.0", "100.00", "100.00", "1.20", "1.30", "66.7%",
    ]  # fmt: skip
    assert cells(text, "a")[1:3] == ["2", "2"]
    assert cells(text, "a")[-1] == "100.0%"
    # "b" completed nothing: latencies are undefined, shown as "-".
    assert cells(text, "b") == ["b", "1", "0", "-", "-", "-", "-", "-", "-", "0.0%"]


def test_print_summary_engine_figures() -> None:
    engine = EngineStats(
        preemptions=4, kv_util_mean=0.5, kv_util_peak=0.875, prefix_cache_hit_rate=0.2
    )
    console = Console(width=160, record=True, color_system=None)
    print_summary(make_summary(engine), console)
    text = console.export_text()
    assert "TTFT p50 (ms)" in text
    # sim time 4 s (last finish 4 - first arrival 0): 22 tokens -> 5.5 tok/s.
    assert cells(text, "Simulated time (s)")[1] == "4.00"
    assert cells(text, "Output throughput (tok/s)")[1] == "5.5"
    assert cells(text, "Input throughput (tok/s)")[1] == "20.0"
    assert cells(text, "Preemptions")[1] == "4"
    assert cells(text, "KV utilisation mean")[1] == "50.0%"
    assert cells(text, "KV utilisation peak")[1] == "87.5%"
    assert cells(text, "Prefix-cache hit rate (prompt tokens)")[1] == "25.0%"
    assert cells(text, "Prefix-cache hit rate (engine)")[1] == "20.0%"


def test_engine_table_without_engine_shows_missing() -> None:
    text = render(engine_table(make_summary()))
    assert cells(text, "KV utilisation mean")[1] == "-"
    assert cells(text, "Preemptions")[1] == "0"
    assert "Prefix-cache hit rate (engine)" not in text
