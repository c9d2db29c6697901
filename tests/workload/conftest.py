"""Shared helpers for the workload tests: sample writers and the real-trace folder."""

from __future__ import annotations

from pathlib import Path

from tests.traces import REPO, TRACES, real_trace

__all__ = ["REPO", "TRACES", "real_trace"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


BURSTGPT_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
