"""`fairserve report` on a sweep folder: the capacity knee and the figures against load."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import yaml
from typer.testing import CliRunner

from fairserve.cli.app import app
from fairserve.report.sweep import capacity_knee, sweep_summary
from tests.sweep.test_sweep_run import GRID


def test_knee_is_the_first_load_past_twice_the_lowest_loads_ttft() -> None:
    table = pl.DataFrame({
        "policy": ["a"] * 6 + ["b"] * 3,
        "load": [0.5, 0.5, 1.0, 1.0, 1.5, 1.5, 0.5, 1.0, 1.5],
        "seed": [0, 1, 0, 1, 0, 1, 0, 0, 0],
        "ttft_p99_s": [0.1, 0.3, 0.3, 0.5, 0.5, 0.9, 0.1, 0.19, 0.2],
    })  # fmt: skip
    summary = sweep_summary(table)
    assert summary.filter(pl.col("policy") == "a")["ttft_p99_s"].to_list() == [0.2, 0.4, 0.7]
    knees = {k["policy"]: k["knee_load"] for k in capacity_knee(summary, ["policy"])}
    # a: 0.4 is not more than twice 0.2, 0.7 is; b never doubles.
    assert knees == {"a": 1.5, "b": None}


def test_report_command_on_a_sweep_folder(tmp_path: Path) -> None:
    spec = tmp_path / "grid.yaml"
    spec.write_text(
        yaml.safe_dump({**GRID, "policies": ["fifo", "vtc"], "loads": [1, 4], "seeds": [0]})
    )
    out = tmp_path / "sweep"
    ran = CliRunner().invoke(app, ["sweep", str(spec), "--no-ray", "--workers", "1", "--out",
                                   str(out), "--no-progress"])  # fmt: skip
    assert ran.exit_code == 0, ran.output
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert "Capacity knee" in page and page.count("data:image/png;base64,") == 3
    table = pl.read_csv(out / "results.csv")
    for row in table.iter_rows(named=True):
        assert f"<td>{row['policy']}</td><td>{row['load']:g}</td><td>1</td>" in page
        assert f"<td>{row['ttft_p99_s'] * 1e3:,.0f}</td>" in page
