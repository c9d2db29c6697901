"""``fairserve compare``: run several configurations on one workload and tabulate them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from fairserve.metrics.fairness import fairness
from fairserve.sim.run import SimConfig, SimResult, simulate
from fairserve.workload import Workload


def predictor_error(result: SimResult) -> dict[str, float | None]:
    """MAE and RMSE (tokens) of the predictions made during a run; None without any."""
    if not len(result.actual_tokens):
        return {"mae": None, "rmse": None}
    diff = result.predicted_tokens.astype(float) - result.actual_tokens
    return {"mae": float(np.mean(np.abs(diff))), "rmse": float(np.sqrt(np.mean(diff**2)))}


def run_row(
    workload: Workload, policy: str, predictor: str | None, router: str, config: SimConfig
) -> dict[str, Any]:
    """One configuration's figures: the keys of ``simulate --json`` plus fairness."""
    return run_config(workload, policy, predictor, router, config)[0]


def run_config(
    workload: Workload, policy: str, predictor: str | None, router: str, config: SimConfig
) -> tuple[dict[str, Any], SimResult]:
    """Run one configuration; its row of figures and the raw result."""
    result = simulate(workload.requests(), config)
    return result_row(workload, policy, predictor, router, result), result


def result_row(
    workload: Workload, policy: str, predictor: str | None, router: str, result: SimResult
) -> dict[str, Any]:
    """The figures of one finished run (the keys of ``simulate --json`` plus fairness)."""
    slos = {n: workload.tenant_config(n).slo for n in workload.tenant_names()}
    weights = {n: workload.tenant_config(n).weight for n in workload.tenant_names()}
    row: dict[str, Any] = {"policy": policy, "predictor": predictor, "router": router}
    row.update(result.summary(slos=slos).to_dict())
    row["wall_time_s"] = result.wall_time_s
    row["fairness"] = fairness(result.records, weights).to_dict()
    row["predictor_error"] = predictor_error(result)
    return row


def compare_runs(
    workload: Workload,
    configs: Sequence[tuple[str, str | None, str, SimConfig]],
    progress: bool = True,
) -> list[tuple[dict[str, Any], SimResult]]:
    """Run every configuration; each one's row and raw result."""
    out = []
    console = Console(stderr=True)
    # No bar off a terminal: a log or a pipe would keep its last frame.
    show = progress and console.is_terminal
    with Progress(console=console, transient=True, disable=not show) as bar:
        task = bar.add_task("comparing", total=len(configs))
        for policy, predictor, router, config in configs:
            out.append(run_config(workload, policy, predictor, router, config))
            bar.advance(task)
    return out


def label_of(row: dict[str, Any]) -> str:
    """A short distinct label for a configuration row: policy[/predictor][/router]."""
    parts = [str(row["policy"])]
    if row.get("predictor"):
        parts.append(str(row["predictor"]))
    parts.append(str(row["router"]))
    return "/".join(parts)


def write_runs(
    out: Path,
    kind: str,
    workload: Workload,
    config: dict[str, Any],
    runs: Sequence[tuple[dict[str, Any], SimResult]],
    labels: Sequence[str],
) -> Path:
    """Write a run directory and its HTML report; returns the report's path."""
    from fairserve.report.html import write_report
    from fairserve.report.run_dir import run_data_from_result, write_run_dir

    weights = {n: workload.tenant_config(n).weight for n in workload.tenant_names()}
    slos = {n: workload.tenant_config(n).slo for n in workload.tenant_names()}
    data = [
        run_data_from_result(
            label, result, weights, slos, {k: row.get(k) for k in ("policy", "predictor", "router")}
        )
        for label, (row, result) in zip(labels, runs, strict=True)
    ]
    write_run_dir(out, kind, config, data, weights=weights, slos=slos)
    return write_report(out)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:,.0f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _label_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The configuration columns worth showing: those that differ between rows."""
    keys = [k for k in ("policy", "predictor", "router") if len({str(r[k]) for r in rows}) > 1]
    return keys or ["policy"]


def print_comparison(rows: Sequence[dict[str, Any]], console: Console) -> None:
    """The overall table, then one row per configuration and tenant."""
    labels = _label_columns(rows)
    shared = [f"{k}={rows[0][k]}" for k in ("policy", "predictor", "router") if k not in labels]
    if shared and rows:
        console.print("all rows: " + ", ".join(shared))
    overall = Table(title="Overall")
    for col in labels:
        overall.add_column(col)
    for col in ("TTFT p50 ms", "TTFT p99 ms", "E2E p50 s", "E2E p99 s", "goodput %", "Jain",
                "max svc diff", "worst wait s", "pred. MAE"):  # fmt: skip
        overall.add_column(col, justify="right")
    for r in rows:
        fair, err = r["fairness"], r["predictor_error"]
        good = r["goodput"]["fraction"]
        overall.add_row(
            *(str(r[k] or "-") for k in labels),
            _ms(r["ttft_s"]["p50"]), _ms(r["ttft_s"]["p99"]),
            _s(r["e2e_s"]["p50"]), _s(r["e2e_s"]["p99"]),
            "-" if good is None else f"{100 * good:.1f}",
            "-" if fair["jain"] is None else f"{fair['jain']:.3f}",
            "-" if fair["max_service_diff"] is None else f"{fair['max_service_diff']:,.0f}",
            _s(fair["worst_wait_s"]),
            "-" if err["mae"] is None else f"{err['mae']:.1f}",
        )  # fmt: skip
    console.print(overall)
    tenants = Table(title="Per tenant")
    for col in [*labels, "tenant"]:
        tenants.add_column(col)
    for col in ("TTFT p50 ms", "TTFT p99 ms", "E2E p50 s", "E2E p99 s", "goodput %"):
        tenants.add_column(col, justify="right")
    for r in rows:
        for name, t in r["per_tenant"].items():
            good = t["goodput"]["fraction"]
            tenants.add_row(
                *(str(r[k] or "-") for k in labels), name,
                _ms(t["ttft_s"]["p50"]), _ms(t["ttft_s"]["p99"]),
                _s(t["e2e_s"]["p50"]), _s(t["e2e_s"]["p99"]),
                "-" if good is None else f"{100 * good:.1f}",
            )  # fmt: skip
    console.print(tenants)
