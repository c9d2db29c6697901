"""``fairserve profile``: measure an engine's step times for ``fairserve calibrate``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console

from fairserve.cli.options import fail

__all__ = ["profile_cmd", "register"]

Opt = typer.Option


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise fail(f"{option}: expected integers separated by commas, got {text!r}") from None
    return values


def profile_cmd(
    url: Annotated[str, Opt(help="Engine base URL, e.g. http://127.0.0.1:8000 (no /v1).")],
    model: Annotated[str, Opt(help="Model name the engine serves (as clients send it).")],
    out: Annotated[Path, Opt(help="Step rows to write (CSV).")] = Path("steps.csv"),
    prefill_tokens: Annotated[
        str, Opt(help="Prompt lengths probed alone (prefill).")
    ] = "128,512,1024,2048,4096",
    batches: Annotated[str, Opt(help="Concurrent streams per decode probe.")] = "1,8,32,64",
    contexts: Annotated[str, Opt(help="Prompt lengths of the decode streams.")] = "256,2048",
    decode_tokens: Annotated[int, Opt(help="Output tokens of each decode stream.")] = 64,
    repeats: Annotated[
        int, Opt(help="Repeats per probe (prefill: fastest kept; decode: median).")
    ] = 3,
    api_key: Annotated[str | None, Opt(help="Bearer token, if the engine wants one.")] = None,
) -> None:
    """Probe an OpenAI-compatible engine and write the step rows calibrate reads."""
    from fairserve.loadgen.profile import ProbeError, ProbePlan, profile_engine, write_rows

    try:
        plan = ProbePlan(
            prefill_tokens=_ints(prefill_tokens, "--prefill-tokens"),
            decode_batches=_ints(batches, "--batches"),
            decode_contexts=_ints(contexts, "--contexts"),
            decode_tokens=decode_tokens,
            repeats=repeats,
        )
        rows = asyncio.run(profile_engine(url, model, plan, api_key))
    except ValueError as exc:
        raise fail(str(exc)) from exc
    except ProbeError as exc:
        raise fail(f"{url}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise fail(f"{url}: cannot reach the engine ({exc.__class__.__name__}: {exc})") from exc
    write_rows(out, rows)
    Console().print(f"{len(rows)} step rows written to {out}")


def register(app: typer.Typer) -> None:
    """Add ``profile`` to the main ``fairserve`` app."""
    app.command("profile")(profile_cmd)
