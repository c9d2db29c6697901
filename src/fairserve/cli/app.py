"""The one command-line entry point, ``fairserve``: the command groups assembled.

Each group lives in its own module and adds its commands with ``register``.
"""

from __future__ import annotations

import typer

from fairserve.cli import bench, calibrate, cost, demo, gateway, profile, report, simulate, sweep
from fairserve.cli.predictor import predictor_app
from fairserve.cli.trace import trace_app

app = typer.Typer(
    name="fairserve",
    help="Fair, SLO-aware scheduling for shared LLM inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(trace_app, name="trace", help="Inspect traces and workload specs.")
app.add_typer(predictor_app, name="predictor", help="Train and evaluate predictors.")
for group in (simulate, calibrate, cost, profile, demo, report, sweep, gateway, bench):
    group.register(app)
