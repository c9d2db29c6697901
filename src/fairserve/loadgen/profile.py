"""Measure an OpenAI-compatible engine's step times with controlled probes.

Two kinds of probe, each sent to ``/v1/completions`` with the prompt as a list
of token ids (so its length is exact without a tokenizer; fresh random ids
each time, so a prefix cache cannot serve it) and ``ignore_eos`` with
``max_tokens`` (so the output length is exact):

- **prefill**: one prompt of ``n`` tokens alone on the engine, one output
  token. Its time to first token is the engine's prefill step of ``n`` tokens
  (plus the HTTP round trip and the engine's own request handling).
- **decode**: ``b`` streams with ``n``-token prompts sent together. Once every
  stream has its first token and until the first stream ends, every step is
  a pure decode step of ``b`` sequences; each stream's tokens in that window
  give the mean step time and the mean context read.

The rows are the step rows ``fairserve calibrate`` and ``fairserve cost
check`` read: ``prefill_tokens, prefill_seqs, decode_seqs, kv_tokens,
step_time_s``.
"""

from __future__ import annotations

import asyncio
import csv
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

STEP_HEADER = ("prefill_tokens", "prefill_seqs", "decode_seqs", "kv_tokens", "step_time_s")
# Token ids drawn for prompts: clear of the special tokens at the bottom of
# every common vocabulary and inside the smallest one fairserve knows (32,000).
TOKEN_ID_RANGE = (1000, 30000)


class ProbeError(RuntimeError):
    """The engine refused a probe or answered something other than a token stream."""


@dataclass(frozen=True)
class ProbePlan:
    """What to measure: prompt lengths alone, and batches x contexts of decode streams."""

    prefill_tokens: tuple[int, ...] = (128, 512, 1024, 2048, 4096)
    decode_batches: tuple[int, ...] = (1, 8, 32, 64)
    decode_contexts: tuple[int, ...] = (256, 2048)
    decode_tokens: int = 64
    repeats: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("prefill_tokens", "decode_batches", "decode_contexts"):
            values = getattr(self, key)
            if not values or any(v < 1 for v in values):
                raise ValueError(f"{key} must be a non-empty list of integers >= 1, got {values}")
        if self.decode_tokens < 4:
            raise ValueError(f"decode_tokens must be >= 4, got {self.decode_tokens}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")


@dataclass(frozen=True)
class StepRow:
    """One measured step, in the columns ``calibrate`` reads."""

    prefill_tokens: int
    prefill_seqs: int
    decode_seqs: int
    kv_tokens: int
    step_time_s: float


class Prober:
    """Sends the probes of a plan to one engine and turns the token times into step rows."""

    def __init__(self, client: httpx.AsyncClient, model: str, plan: ProbePlan) -> None:
        self.client, self.model, self.plan = client, model, plan
        self._rng = np.random.default_rng(plan.seed)

    async def run(self) -> list[StepRow]:
        """Every probe of the plan, one after another (the engine idle between them)."""
        rows = [await self.prefill(n) for n in self.plan.prefill_tokens]
        for context in self.plan.decode_contexts:
            for batch in self.plan.decode_batches:
                rows.append(await self.decode(batch, context))
        return rows

    async def prefill(self, tokens: int) -> StepRow:
        """Shortest time to first token of a lone ``tokens``-token prompt over the repeats.

        The fastest, not the median: with a single step per sample, anything
        else on the hosts (the client's, the engine's) can only add to it.
        """
        times = []
        for _ in range(self.plan.repeats):
            start = time.perf_counter()
            stamps = await self._stream(tokens, 1)
            times.append(stamps[0] - start)
        return StepRow(tokens, 1, 0, 0, min(times))

    async def decode(self, batch: int, context: int) -> StepRow:
        """Mean pure-decode step of ``batch`` streams at ``context`` prompt tokens (median of repeats)."""
        steps, contexts = [], []
        for _ in range(self.plan.repeats):
            streams = await asyncio.gather(
                *(self._stream(context, self.plan.decode_tokens) for _ in range(batch))
            )
            step_s, mean_index = decode_window(streams)
            steps.append(step_s)
            contexts.append(context + mean_index)
        kv = round(batch * statistics.median(contexts))
        return StepRow(0, 0, batch, kv, statistics.median(steps))

    def _prompt(self, tokens: int) -> list[int]:
        return [int(t) for t in self._rng.integers(*TOKEN_ID_RANGE, size=tokens)]

    async def _stream(self, prompt_tokens: int, max_tokens: int) -> list[float]:
        """Send one streamed completion; the arrival time of each token."""
        body = {
            "model": self.model,
            "prompt": self._prompt(prompt_tokens),
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0.0,
            "stream": True,
        }
        stamps: list[float] = []
        async with self.client.stream("POST", "/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:300]
                raise ProbeError(f"the engine answered {resp.status_code}: {text}")
            async for line in resp.aiter_lines():
                if _is_token(line):
                    stamps.append(time.perf_counter())
        if len(stamps) != max_tokens:
            raise ProbeError(
                f"asked for {max_tokens} tokens with ignore_eos, got {len(stamps)} chunks: the "
                "engine must stream one chunk per token and honour ignore_eos and max_tokens"
            )
        return stamps


def _is_token(line: str) -> bool:
    if not line.startswith("data:"):
        return False
    data = line[5:].strip()
    if data == "[DONE]":
        return False
    # A token's chunk has text, or no finish reason yet (its text may be empty
    # while a multi-byte character is incomplete); a closing chunk with only a
    # finish reason, and the usage chunk (no choices), are not tokens.
    for choice in json.loads(data).get("choices") or []:
        if choice.get("text") or choice.get("finish_reason") is None:
            return True
    return False


def decode_window(streams: list[list[float]]) -> tuple[float, float]:
    """(step time, mean output index) over the pure-decode window of streams sent together.

    The window opens when the last stream has its first token (every prefill
    done) and closes when the first stream ends (the batch still whole).
    """
    opens = max(s[0] for s in streams)
    closes = min(s[-1] for s in streams)
    steps, indices = [], []
    for stamps in streams:
        inside = [i for i, t in enumerate(stamps) if opens <= t <= closes]
        if len(inside) >= 2:
            first, last = inside[0], inside[-1]
            # The median gap, not the mean: one stall of the client or the
            # engine's host (a shared machine) does not move it.
            gaps = [stamps[i + 1] - stamps[i] for i in range(first, last)]
            steps.append(statistics.median(gaps))
            indices.append((first + last) / 2)
    if not steps:
        raise ProbeError(
            "no decode window: the streams did not run together (raise decode_tokens, or the "
            "engine queues some of them: lower the batch below its max_num_seqs)"
        )
    return statistics.median(steps), statistics.mean(indices)


async def profile_engine(
    url: str, model: str, plan: ProbePlan, api_key: str | None = None, timeout_s: float = 600.0
) -> list[StepRow]:
    """Probe the engine at ``url`` (its base, without ``/v1``) and return the step rows."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=max(plan.decode_batches) + 4)
    async with httpx.AsyncClient(
        base_url=url.rstrip("/"), headers=headers, timeout=timeout_s, limits=limits
    ) as client:
        return await Prober(client, model, plan).run()


def write_rows(path: Path, rows: list[StepRow]) -> None:
    """Write step rows as the CSV ``calibrate`` reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(STEP_HEADER)
        for r in rows:
            writer.writerow(
                [
                    r.prefill_tokens,
                    r.prefill_seqs,
                    r.decode_seqs,
                    r.kv_tokens,
                    f"{r.step_time_s:.6g}",
                ]
            )
