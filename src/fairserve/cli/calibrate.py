"""``fairserve calibrate``: fit the cost model to measured step times."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fairserve.cli.options import fail
from fairserve.sim.cost import UnknownProfileError

__all__ = ["calibrate_cmd", "register"]

Opt = typer.Option


def calibrate_cmd(
    steps: Annotated[
        Path, typer.Argument(help="CSV: prefill_tokens,decode_seqs,kv_tokens,step_time_s")
    ],
    model: Annotated[str, Opt(help="Model the steps were measured on.")] = "Llama-3.1-8B",
    gpu: Annotated[str, Opt(help="GPU the steps were measured on.")] = "H100-80GB",
    tp: Annotated[int, Opt(help="Tensor-parallel degree.")] = 1,
    out: Annotated[Path, Opt(help="Profile file to write.")] = Path("profile.yaml"),
    as_json: Annotated[bool, Opt("--json", help="Print the fit as JSON.")] = False,
) -> None:
    """Fit the cost model's efficiency factors to measured step times; write a profile."""
    from fairserve.sim.calibrate import StepFileError, fit, read_steps
    from fairserve.sim.cost import CostModel, write_profile

    try:
        base = CostModel.from_names(gpu, model, tp)
        table = read_steps(steps)
    except (UnknownProfileError, StepFileError) as exc:
        raise fail(str(exc)) from exc
    result = fit(base, table)
    write_profile(out, result.model, result.fit_dict(), source=str(steps))
    eff = result.model.efficiency
    if as_json:
        data = {"profile": str(out), **result.fit_dict(), "efficiency": eff.__repr__()}
        sys.stdout.write(json.dumps(data) + "\n")
        return
    console = Console()
    console.print(f"fitted {result.rows} steps of {model} on {gpu} (tp={tp})")
    console.print(
        f"mean abs. error: {100 * result.mape_before:.1f}% with the default factors -> "
        f"{100 * result.mape_after:.1f}% fitted"
    )
    console.print(
        f"mfu={eff.mfu:.3f} mbu={eff.mbu:.3f} step_overhead={1e3 * eff.step_overhead_s:.3f} ms "
        f"per_seq_overhead={1e6 * eff.per_seq_overhead_s:.2f} us"
    )
    console.print(f"profile written to {out} (use it with --profile {out})")


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` to the ``fairserve`` app."""
    app.command("calibrate")(calibrate_cmd)
