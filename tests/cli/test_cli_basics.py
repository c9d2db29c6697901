"""The command line as a whole: -h and --version, lazy loading, one error style, 80 columns."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

import fairserve
from fairserve.cli.app import COMMANDS, app, load_command

NARROW = {"COLUMNS": "80"}


def _invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_version_and_short_help() -> None:
    for flag in ("--version", "-V"):
        code, text = _invoke(flag)
        assert code == 0 and text.startswith(f"fairserve {fairserve.__version__} (simulator: ")
        assert fairserve.simulator_build() in text
    code, text = _invoke("-h")
    assert code == 0 and "Commands:" in text
    code, text = _invoke("simulate", "-h")
    assert code == 0 and "--policy" in text


@pytest.mark.parametrize("name", list(COMMANDS))
def test_listed_help_is_the_commands_own(name: str) -> None:
    command = load_command(name)
    assert command.name == name
    first_line = (command.help or "").strip().splitlines()[0]
    assert COMMANDS[name][1] == first_line


def test_help_imports_no_simulator() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from fairserve.cli.app import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('numpy', 'scipy', 'polars', 'fairserve.sim.run') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "args",
    [
        ("simulate", "--bogus"),
        ("bogus",),
        ("simulate", "--requests", "abc"),
        ("simulate", "--requests", "10", "--policy", "sjf:foo=1"),
    ],
)
def test_errors_are_one_line(args: tuple[str, ...]) -> None:
    code, text = _invoke(*args)
    assert code == 2
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert "Traceback" not in text


@pytest.mark.parametrize("command", ["simulate", "compare", "bench", "sweep", "demo"])
def test_help_fits_80_columns(command: str) -> None:
    code, text = _invoke(command, "--help", env=NARROW)
    assert code == 0
    assert "…" not in text
    assert max(map(len, text.splitlines())) <= 80


def test_compare_at_80_columns_cuts_no_number() -> None:
    args = ("compare", "--requests", "200", "--rate", "40",
            "--policies", "fifo,sjf,vtc,priority", "--predictor", "history,oracle")  # fmt: skip
    code, text = _invoke(*args, env=NARROW)
    assert code == 0, text
    assert "…" not in text
    assert max(map(len, text.splitlines())) <= 80
    assert "left out to fit 80 columns" in text  # this many columns cannot all fit
    assert "priority" in text and "oracle" in text
    wide_code, wide = _invoke(*args, env={"COLUMNS": "250"})
    assert wide_code == 0 and "left out" not in wide and "Jain" in wide


def test_goodput_only_where_an_slo_exists() -> None:
    # The synthetic tenants have no SLO: goodput would read 100% and mean nothing.
    code, text = _invoke("simulate", "--requests", "100", env={"COLUMNS": "250"})
    assert code == 0, text
    assert "Goodput (% of requests)" in text
    assert "100.0%" not in text
    code, text = _invoke("simulate", "--requests", "100", "--json")
    assert code == 0 and '"fraction": 1.0' in text  # the JSON keeps the figure


def test_version_says_how_the_simulator_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIRSERVE_PURE_PYTHON", "1")
    assert "FAIRSERVE_PURE_PYTHON is set" in _invoke("--version")[1]
    monkeypatch.delenv("FAIRSERVE_PURE_PYTHON")
    if fairserve._SourceFinder in sys.meta_path:  # `make test-pure`: sources whatever was built
        return
    build = fairserve.simulator_build()
    import fairserve.sim.engine as engine  # compiled where a build exists beside it

    assert (build == "compiled") == (not engine.__file__.endswith(".py"))
