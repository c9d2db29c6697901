"""The one command-line entry point, ``fairserve``: the command groups assembled.

Each group lives in its own module and adds its commands with ``register``.
The modules are imported only when one of their commands runs (or prints its
own help): the simulator pulls in numpy and scipy, which would make
``fairserve --help`` and ``fairserve --version`` take seconds.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperCommand, TyperGroup

from fairserve import __version__, simulator_build

# Command name -> (module whose register() adds it, the one-line help that
# `fairserve --help` shows without importing the module; a test checks it is
# the command's own first docstring line).
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("fairserve.cli.simulate", "Simulate a trace or a synthetic workload on a modelled cluster."),
    "compare": ("fairserve.cli.simulate", "Several policies x predictors x routers on the same workload and seed, side by side."),
    "demo": ("fairserve.cli.demo", "Three tenants on two simulated H100s near capacity: every policy side by side, a verdict and a report."),
    "sweep": ("fairserve.cli.sweep", "Run a grid of simulations (resumable); write a tidy table and load plots."),
    "report": ("fairserve.cli.report", "Write one self-contained HTML report (and PNG plots in RUN_DIR/plots/) for a run."),
    "serve": ("fairserve.cli.gateway", "Run the OpenAI-compatible gateway in front of the configured backends."),
    "engine": ("fairserve.cli.gateway", "Run a simulated OpenAI-compatible engine (the simulator's engine model, in real time)."),
    "bench": ("fairserve.cli.bench", "Replay a workload against an OpenAI-compatible endpoint; report TTFT/TPOT/ITL/E2E per tenant."),
    "calibrate": ("fairserve.cli.calibrate", "Fit the cost model's efficiency factors to measured step times; write a profile."),
    "cost": ("fairserve.cli.cost", "Check the cost model against measurements."),
    "profile": ("fairserve.cli.profile", "Probe an OpenAI-compatible engine and write the step rows calibrate reads."),
    "trace": ("fairserve.cli.trace", "Inspect traces and workload specs."),
    "predictor": ("fairserve.cli.predictor", "Train and evaluate predictors."),
    "policy": ("fairserve.cli.policy", "Train learned scheduling policies in the simulator."),
}  # fmt: skip


@functools.cache
def _module_group(module_name: str) -> Any:
    # Once per module: its register() may decorate its functions (simulate, compare).
    module = importlib.import_module(module_name)
    sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    if hasattr(module, "register"):
        module.register(sub)
    else:  # a group of its own (trace_app, predictor_app)
        name = module_name.rsplit(".", 1)[1]
        sub.add_typer(getattr(module, f"{name}_app"), name=name, help=COMMANDS[name][1])
    return typer.main.get_group(sub)


def load_command(name: str) -> Any:
    """The command ``name`` (a click command), its module imported and registered."""
    return _module_group(COMMANDS[name][0]).commands[name]


class LazyGroup(TyperGroup):
    """A group that imports a command's module only when that command is used."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        if self._listing:  # the group's own --help: names and one line each
            return TyperCommand(cmd_name, help=COMMANDS[cmd_name][1])
        return load_command(cmd_name)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Run the command; a usage error is one line in the style of every other error."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **kwargs)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **kwargs)
        except NoArgsIsHelpError as exc:  # `fairserve` alone: the help, as click prints it
            typer.echo(exc.format_message())
            sys.exit(exc.exit_code)
        except ClickException as exc:
            from fairserve.cli.options import fail  # only now: it imports the simulator

            where = getattr(exc, "ctx", None)
            hint = (
                f" (see '{where.command_path} -h')" if isinstance(exc, UsageError) and where else ""
            )
            fail(exc.format_message() + hint, exc.exit_code)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fairserve {__version__} (simulator: {simulator_build()})")
        raise typer.Exit()


app = typer.Typer(
    name="fairserve",
    cls=LazyGroup,
    rich_markup_mode=None,
    help="Fair, SLO-aware scheduling for shared LLM inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Fair, SLO-aware scheduling for shared LLM inference."""
