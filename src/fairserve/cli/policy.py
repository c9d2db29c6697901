"""``fairserve policy ...`` commands (mounted by the main CLI as ``policy``).

* ``train``: fit the ``learned-rank`` policy in the simulator on the first
  part of a trace (by arrival time), score it on the rest against ``fifo``
  and ``sjf`` with the same predictor, and write the ranker as JSON.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fairserve.cli.options import (
    build_config,
    build_workload,
    component,
    fail,
    workload_and_deployment_options,
)
from fairserve.core.predict import PREDICTORS
from fairserve.core.registry import ComponentError, ComponentSpec
from fairserve.workload import TraceError, Workload, load

Opt = typer.Option

policy_app = typer.Typer(
    name="policy",
    help="Train learned scheduling policies in the simulator.",
    no_args_is_help=True,
    add_completion=False,
)


@policy_app.callback()
def _root() -> None:
    """Train learned scheduling policies in the simulator."""


def split_by_time(workload: Workload, train_fraction: float) -> tuple[Workload, Workload]:
    """The first ``train_fraction`` of the requests in arrival order, and the rest (from 0 s)."""
    n = len(workload)
    cut = round(n * train_fraction)
    if cut < 2 or n - cut < 2:
        raise ValueError(
            f"--train-fraction {train_fraction:g} of {n} requests leaves fewer than 2 on a side"
        )
    import numpy as np

    train, test = workload.take(np.arange(cut)), workload.take(np.arange(cut, n))
    rebased = np.maximum(test.arrival_s - test.arrival_s[0], 0.0)
    return train, dataclasses.replace(test, arrival_s=rebased)


def windows(workload: Workload, count: int) -> list[Workload]:
    """``workload`` cut into ``count`` consecutive parts of equal size, each from 0 s."""
    import numpy as np

    parts = []
    for rows in np.array_split(np.arange(len(workload)), count):
        part = workload.take(rows)
        rebased = np.maximum(part.arrival_s - part.arrival_s[0], 0.0)
        parts.append(dataclasses.replace(part, arrival_s=rebased))
    return parts


def _load(opts: dict[str, Any], fmt: str | None) -> Workload:
    if fmt is None:
        return build_workload(opts)
    if opts["trace"] is None:
        raise fail("--format applies to --trace")
    try:
        return load(opts["trace"], fmt=fmt, skip_bad_rows=opts["skip_bad_rows"])
    except (TraceError, ValueError, OSError) as exc:
        raise fail(str(exc)) from None


def _teachers(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(not v >= 0 for v in values):
        raise fail(f"--teachers must be prompt weights >= 0 separated by commas, got {text!r}")
    return values


def train_cmd(
    predictor: Annotated[
        str | None,
        Opt(
            help=f"Output-length predictor the policy will run with: {', '.join(PREDICTORS.names())}."
        ),
    ] = None,
    fmt: Annotated[str | None, Opt("--format", help="Trace format (default: detected).")] = None,
    train_fraction: Annotated[
        float,
        Opt(help="Share of the requests, in arrival order, trained on; the rest is held out."),
    ] = 0.5,
    tail_weight: Annotated[
        float, Opt(help="Minimise mean E2E + this x p99 E2E on the training part.")
    ] = 0.0,
    train_windows: Annotated[
        int,
        Opt(
            help="Cut the training part into this many consecutive windows; the search averages "
            "its objective over them (less over-fitting to one burst)."
        ),
    ] = 1,
    teachers: Annotated[
        str,
        Opt(
            help="Prompt weights of the clairvoyant orders imitated (0: true output; 1: prompt + output)."
        ),
    ] = "0,1",
    **opts: Any,
) -> None:
    """Fit the learned-rank policy on a trace in the simulator; score it on the held-out part."""
    from fairserve.experiments.rank_train import run_e2e, train_ranker
    from fairserve.store import save_ranker

    if opts["out"] is None:
        raise fail("--out FILE is required: where to write the ranker (JSON)")
    if not 0 < train_fraction < 1:
        raise fail(f"--train-fraction must be in (0, 1), got {train_fraction!r}")
    if not tail_weight >= 0:
        raise fail(f"--tail-weight must be >= 0, got {tail_weight!r}")
    weights = _teachers(teachers)
    if train_windows < 1:
        raise fail(f"--train-windows must be >= 1, got {train_windows!r}")
    pred = component(predictor, PREDICTORS) if predictor else None
    workload = _load(opts, fmt)
    try:
        train, test = split_by_time(workload, train_fraction)
        if len(train) < 2 * train_windows:
            raise ValueError(f"--train-windows {train_windows} for {len(train)} requests")
    except ValueError as exc:
        raise fail(str(exc)) from None
    config = build_config(opts, workload, predictor=pred)
    try:
        model = train_ranker(windows(train, train_windows), config, teacher_prompt_weights=weights,
                             tail_weight=tail_weight, seed=opts["seed"])  # fmt: skip
        rank_spec = ComponentSpec("learned-rank", {"model": model})
        heldout = {name: dataclasses.asdict(run_e2e(test, config, spec))
                   for name, spec in (("fifo", "fifo"), ("sjf", "sjf"), ("learned-rank", rank_spec))}  # fmt: skip
    except (ComponentError, ValueError) as exc:
        raise fail(str(exc)) from None
    metrics = {
        **model.metrics,
        "source": os.fspath(opts["trace"] or opts["workload"] or "synthetic"),
        "predictor": None if pred is None else str(pred),
        "placement": opts["placement"],
        "test_requests": len(test),
        "heldout": heldout,
    }
    path = save_ranker(dataclasses.replace(model, metrics=metrics), opts["out"])
    report = {"ranker": os.fspath(path), "weights": dict(model.weights),
              "tenant_offsets": dict(model.tenant_offsets), "heldout": heldout}  # fmt: skip
    if opts["as_json"]:
        typer.echo(json.dumps(report))
        return
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    console = Console(soft_wrap=True)
    weights = ", ".join(f"{k} {v:.4g}" for k, v in report["weights"].items())
    console.print(f"learned ranker: {report['ranker']}\nweights: {weights}", highlight=False)
    if report["tenant_offsets"]:
        offsets = ", ".join(f"{k} {v:+.3g}" for k, v in report["tenant_offsets"].items())
        console.print(f"tenant offsets: {offsets}", highlight=False)
    table = Table(title="held-out part of the trace")
    for column in ("policy", "mean E2E (s)", "p99 E2E (s)", "completed"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for name, row in report["heldout"].items():
        table.add_row(name, f"{row['mean_s']:.3f}", f"{row['p99_s']:.3f}", f"{row['completed']:,}")
    console.print(table)


def _ranker_out(func: Any) -> Any:
    """The shared ``--out`` (a run directory elsewhere) is the ranker file here."""
    sig = inspect.signature(func)
    annotation = Annotated[Path | None, Opt("--out", help="Ranker file to write (JSON).")]
    params = [p.replace(annotation=annotation) if p.name == "out" else p
              for p in sig.parameters.values()]  # fmt: skip
    func.__signature__ = sig.replace(parameters=params)
    func.__annotations__ = {**func.__annotations__, "out": annotation}
    return func


policy_app.command("train")(_ranker_out(workload_and_deployment_options(train_cmd)))
