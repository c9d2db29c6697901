"""The one command-line entry point: ``fairserve``."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="fairserve",
    help="Fair, SLO-aware scheduling for shared LLM inference.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """fairserve: simulate and serve fair LLM scheduling."""


def main() -> None:
    """Console-script entry point."""
    app()
