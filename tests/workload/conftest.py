"""Shared helpers for the workload tests: sample writers and the real-trace folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The public traces live beside the repository (see ../shared/traces/README.md).
TRACES = (REPO / ".." / "shared" / "traces").resolve()


def real_trace(relative: str) -> Path:
    """Path of a real trace file, or skip the test with a message when it is absent."""
    path = TRACES / relative
    if not path.exists():
        pytest.skip(f"real trace {relative} not found under {TRACES} (../shared/traces absent)")
    return path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


BURSTGPT_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
