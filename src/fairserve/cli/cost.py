"""``fairserve cost``: hold the cost model against measured step times."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fairserve.cli.options import (
    StepsFile,
    StepsGpu,
    StepsModel,
    StepsModelConfig,
    StepsTp,
    fail,
)
from fairserve.sim.cost import UnknownProfileError

__all__ = ["check_cmd", "cost_app", "register"]

Opt = typer.Option

cost_app = typer.Typer(no_args_is_help=True)


@cost_app.command("check")
def check_cmd(
    steps: StepsFile,
    model: StepsModel = "Llama-3.1-8B",
    model_config: StepsModelConfig = None,
    gpu: StepsGpu = "H100-80GB",
    tp: StepsTp = 1,
    profile: Annotated[
        Path | None, Opt(help="Profile file from `fairserve calibrate` (default: shipped).")
    ] = None,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
) -> None:
    """Predict every measured step and print the error (percent), per regime and per tp."""
    from fairserve.sim.calibrate import StepFileError, errors, read_steps
    from fairserve.sim.cost import cost_model

    try:
        table = read_steps(steps, tp)
        tps = sorted({int(t) for t in table.tp})
        if model_config is not None:
            model = str(model_config)
        base = cost_model(gpu, model, tps[0], profile)
    except (UnknownProfileError, StepFileError, ValueError) as exc:
        raise fail(str(exc)) from exc
    # The factors apply at every tp in the file (each row is predicted at its own).
    result = errors(base, base.efficiency, table)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    _print(result, f"{model} on {gpu}")


def _print(result: dict[str, object], what: str) -> None:
    table = Table(title=f"cost model vs {result['n']} measured steps of {what} (abs. error, %)")
    for column in ("tp", "n", "mape", "mape_prefill", "mape_decode"):
        table.add_column(column, justify="right")
    by_tp = result["by_tp"]
    assert isinstance(by_tp, dict)
    for tp, row in [*by_tp.items(), ("all", result)]:
        table.add_row(tp, *(_cell(row[k]) for k in ("n", "mape", "mape_prefill", "mape_decode")))
    Console().print(table)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def register(app: typer.Typer) -> None:
    """Add the ``cost`` group to the ``fairserve`` app."""
    app.add_typer(cost_app, name="cost", help="Check the cost model against measurements.")
