"""``fairserve calibrate``: fit the cost model to measured step times."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fairserve.cli.options import (
    StepsFile,
    StepsGpu,
    StepsModel,
    StepsModelConfig,
    StepsTp,
    fail,
)
from fairserve.sim.cost import UnknownProfileError

__all__ = ["calibrate_cmd", "register"]

Opt = typer.Option

# One model cannot tell a per-layer cost from a per-step one (both are fixed per
# step), so by default the per-layer cost stays at its shipped value.
DEFAULT_FIX = "layer_overhead_s"


def _fixed(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def calibrate_cmd(
    steps: StepsFile,
    model: StepsModel = "Llama-3.1-8B",
    model_config: StepsModelConfig = None,
    gpu: StepsGpu = "H100-80GB",
    tp: StepsTp = 1,
    fix: Annotated[
        str, Opt(help="Factors to hold at their shipped values (comma-separated; '' for none).")
    ] = DEFAULT_FIX,
    loss: Annotated[
        str,
        Opt(
            help="How each step's error counts: robust (soft L1, the default: a few "
            "outlying steps pull the factors less) or squares (least squares)."
        ),
    ] = "robust",
    out: Annotated[Path, Opt(help="Profile file to write.")] = Path("profile.yaml"),
    as_json: Annotated[bool, Opt("--json", help="Print the fit as JSON.")] = False,
) -> None:
    """Fit the cost model's efficiency factors to measured step times; write a profile."""
    from fairserve.sim.calibrate import Loss, StepFileError, UnidentifiableError, fit, read_steps
    from fairserve.sim.cost import cost_model, write_profile

    if loss not in {m.value for m in Loss}:
        raise fail(f"--loss: unknown loss {loss!r}; allowed: {', '.join(m.value for m in Loss)}")
    try:
        if model_config is not None:
            model = str(model_config)
        table = read_steps(steps, tp)
        base = cost_model(gpu, model, int(table.tp.min()))  # the profile's tp: the smallest fitted
        result = fit(base, table, _fixed(fix), Loss(loss))
    except (UnknownProfileError, StepFileError, UnidentifiableError, ValueError) as exc:
        raise fail(str(exc)) from exc
    write_profile(out, result.model, result.fit_dict(), source=str(steps))
    eff = result.model.efficiency
    if as_json:
        data = {"profile": str(out), **result.fit_dict(), "efficiency": eff.__repr__()}
        sys.stdout.write(json.dumps(data) + "\n")
        return
    console = Console()
    console.print(f"fitted {result.rows} steps of {model} on {gpu}")
    console.print(
        f"mean abs. error: {100 * result.mape_before:.1f}% with the starting factors -> "
        f"{100 * result.mape_after:.1f}% fitted "
        f"(prefill {result.errors['mape_prefill']}%, decode {result.errors['mape_decode']}%)"
    )
    console.print(", ".join(f"{k}={v:.4g}" for k, v in asdict(eff).items()))
    for term, why in result.held.items():
        console.print(f"not fitted: {term} ({why})")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"profile written to {out} (use it with --profile {out})")


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` to the ``fairserve`` app."""
    app.command("calibrate")(calibrate_cmd)
