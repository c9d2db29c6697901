"""Sweeps run: Ray and the process pool agree, interrupted sweeps resume, the command writes its outputs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from fairserve.cli.app import app
from fairserve.experiments.sweep import (
    Cell,
    SweepSpec,
    measure_capacity,
    parse_sweep_spec,
    plan_cells,
    run_sweep,
)

# Each cell is tiny (150 requests) so 60 of them take seconds.
WORKLOAD = {
    "name": "two-tenants",
    "synthetic": {
        "requests": 150,
        "rate_per_s": 10.0,
        "prompt_mean_tokens": 600,
        "output_mean_tokens": 200,
        "tenants": [{"name": "chat", "share": 0.6, "weight": 2}, {"name": "batch", "share": 0.4}],
    },
}
GRID = {
    "name": "test",
    "workloads": [WORKLOAD],
    "policies": ["fifo", "sjf", "vtc", "uwfq"],
    "predictors": ["oracle"],  # sjf orders by the predicted length
    "loads": [0.5, 1, 2, 4, 8],
    "load": {"unit": "rate", "rate_per_s": 10},
    "seeds": [0, 1, 2],
    "deployment": {"max_num_seqs": 32},
}


def metrics(table: pl.DataFrame) -> pl.DataFrame:
    """The table without wall-clock columns (the only ones that may differ between runs)."""
    return table.drop("wall_time_s").sort("cell")


@pytest.fixture(scope="module")
def pool_result(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    spec = parse_sweep_spec(GRID)
    out = tmp_path_factory.mktemp("pool")
    result = run_sweep(spec, out, use_ray=False, workers=2, progress=False)
    assert len(result.ran) == 60 and not result.reused
    return result.table


def test_pool_sweep_table_and_plots(pool_result: pl.DataFrame) -> None:
    table = pool_result
    assert table.height == 4 * 5 * 3
    assert table.select("policy", "load", "seed").n_unique() == 60
    for column in ("e2e_p99_s", "ttft_p50_s", "goodput_req_s", "jain", "offered_rate_per_s"):
        assert column in table.columns
    # The load multiplies load.rate_per_s (10 requests per second).
    rates = table.group_by("load").agg(pl.col("offered_rate_per_s").mean()).sort("load")
    assert rates["offered_rate_per_s"].to_list() == pytest.approx([5, 10, 20, 40, 80], rel=1e-9)
    # Past the knee latency grows, and the policies no longer agree.
    fifo = (
        table.filter(pl.col("policy") == "fifo").group_by("load").agg(pl.col("ttft_p99_s").mean())
    )
    fifo = fifo.sort("load")["ttft_p99_s"].to_list()
    assert fifo[-1] > 10 * fifo[0]
    at_8 = table.filter(pl.col("load") == 8.0).group_by("policy").agg(pl.col("ttft_p99_s").mean())
    assert at_8["ttft_p99_s"].n_unique() > 1


@pytest.mark.slow
def test_ray_and_pool_give_identical_numbers(pool_result: pl.DataFrame, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    spec = parse_sweep_spec(GRID)
    result = run_sweep(spec, tmp_path, use_ray=True, workers=2, progress=False)
    assert len(result.ran) == 60
    assert metrics(result.table).equals(metrics(pool_result))
    for name in ("results.parquet", "results.csv", "plots/latency_vs_load.png",
                 "plots/goodput_vs_load.png", "plots/fairness_vs_load.png"):  # fmt: skip
        assert (tmp_path / name).exists(), name


class Interrupted(Exception):
    """Stands in for Ctrl-C in the middle of a sweep."""


def small_spec() -> SweepSpec:
    return parse_sweep_spec(
        {**GRID, "policies": ["fifo", "vtc"], "loads": [1, 4, 8], "seeds": [0, 1]}
    )


def test_interrupted_sweep_reruns_only_unfinished_cells(tmp_path: Path) -> None:
    spec = small_spec()
    every = {c.id for c in plan_cells(spec)}
    finished: list[str] = []

    def stop_after_five(cell: Cell, _: Mapping[str, Any]) -> None:
        finished.append(cell.id)
        if len(finished) == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_sweep(spec, tmp_path, use_ray=False, workers=2, progress=False, on_cell=stop_after_five)
    stored = {p.stem for p in (tmp_path / "cells").glob("*.json")}
    assert stored == set(finished) and len(stored) == 5
    assert not list((tmp_path / "cells").glob("*.tmp"))

    again = run_sweep(spec, tmp_path, use_ray=False, workers=2, progress=False)
    assert set(again.reused) == stored
    assert set(again.ran) == every - stored
    assert again.table.height == len(every)

    # A damaged cell file (a crash mid-write elsewhere) only costs that cell.
    victim = sorted(every)[0]
    (tmp_path / "cells" / f"{victim}.json").write_text("{ not json")
    grown = parse_sweep_spec(
        {**GRID, "policies": ["fifo", "vtc"], "loads": [1, 4, 8, 16], "seeds": [0, 1]}
    )
    third = run_sweep(grown, tmp_path, use_ray=False, workers=2, progress=False)
    new_cells = {c.id for c in plan_cells(grown)} - every
    assert set(third.ran) == new_cells | {victim}
    assert len(new_cells) == 4


def test_capacity_loads_scale_to_the_measured_capacity() -> None:
    spec = parse_sweep_spec({**GRID, "load": {"unit": "capacity"}})
    capacity = measure_capacity(plan_cells(spec)[0].definition)
    assert 1_000 < capacity < 1_000_000  # tokens/s of one H100 engine for an 8B model
    cells = plan_cells(spec, capacities={"two-tenants": capacity})
    assert {c.definition["capacity_tokens_per_s"] for c in cells} == {capacity}
    given = parse_sweep_spec({**GRID, "load": {"unit": "capacity", "capacity_tokens_per_s": 5000}})
    assert {c.definition["capacity_tokens_per_s"] for c in plan_cells(given)} == {5000}


def test_sweep_command_runs_and_resumes(tmp_path: Path) -> None:
    spec_file = tmp_path / "grid.yaml"
    spec_file.write_text(
        yaml.safe_dump({**GRID, "policies": ["fifo", "vtc"], "loads": [1, 4], "seeds": [0]})
    )
    out = tmp_path / "out"
    args = [
        "sweep",
        str(spec_file),
        "--no-ray",
        "--workers",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "4 cells: 4 run, 0 already done" in first.output
    table = pl.read_csv(out / "results.csv")
    assert table.height == 4
    # The summary: one row per policy and load, the figures of the results table.
    text = first.output[first.output.index("Sweep: median over seeds (1 per row)") :]
    for policy, load in (("fifo", 1), ("fifo", 4), ("vtc", 1), ("vtc", 4)):
        row = table.filter((pl.col("policy") == policy) & (pl.col("load") == load)).row(
            0, named=True
        )
        ttft_ms = f"{row['ttft_p99_s'] * 1e3:,.0f}"
        cells = [line.replace("│", " ").split()[:3] for line in text.splitlines()]
        assert [policy, str(load), ttft_ms] in cells, (policy, load, ttft_ms, text)
    second = CliRunner().invoke(app, args)
    assert "4 cells: 0 run, 4 already done" in second.output
    both = CliRunner().invoke(app, ["sweep", str(spec_file), "--no-ray", "--address", "x:1"])
    assert both.exit_code == 2 and "not both" in both.output
