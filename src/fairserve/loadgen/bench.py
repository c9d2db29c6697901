"""``fairserve bench``: replay a workload against any OpenAI-compatible endpoint.

Each workload row becomes one streaming request sent at its arrival time
(relative to the start), from its tenant's API key, with a synthetic prompt
of about ``prompt_tokens`` tokens (``prompt_tokens`` three-letter words: one
token each in common BPE vocabularies, and exactly ``prompt_tokens`` by the
gateway's chars/4 estimate) and ``max_tokens`` = the row's output length
(``ignore_eos: true`` is sent too, as vLLM's benchmark does, so engines that
honour it produce exactly that many). TTFT, TPOT and E2E are measured from
the scheduled send time, so client-side delays count against the server, as
they would for a user. The records go through :func:`fairserve.metrics.summary.summarize`,
so ``--json`` has the same keys as ``fairserve simulate --json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import numpy as np

from fairserve.core.model import Outcome
from fairserve.metrics.records import NAN, RequestRecords
from fairserve.workload import Workload

_WORDS = ("the", "cat", "sat", "and", "dog", "ran", "for", "big", "red", "sun", "sky", "sea")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class BenchError(ValueError):
    """The benchmark cannot run as asked (a missing key, a non-loopback URL ...)."""


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """One request to send."""

    index: int
    arrival_s: float
    tenant: str
    prompt_tokens: int
    output_tokens: int
    api_key: str


def synthetic_prompt(tokens: int, seed: int) -> str:
    """``tokens`` three-letter words separated by spaces (4 characters per token)."""
    n = len(_WORDS)
    return " ".join(_WORDS[(seed + 7 * i) % n] for i in range(tokens)) + " "


def check_url(url: str, allow_remote: bool) -> str:
    """The base URL without a trailing slash; loopback only unless ``allow_remote``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchError(f"--base-url must be an http(s) URL, got {url!r}")
    if parts.hostname not in LOOPBACK_HOSTS and not allow_remote:
        raise BenchError(
            f"--base-url {url!r} is not on this machine; pass --allow-remote to load a remote server"
        )
    return url.rstrip("/")


def plan(
    workload: Workload,
    keys: Mapping[str, str],
    default_key: str | None,
    max_requests: int | None = None,
) -> list[BenchRequest]:
    """The requests to send, with each tenant's key (``BenchError`` if one is missing).

    Rows the workload records as failed are not sent: a live engine cannot be
    made to fail as they did.
    """
    out: list[BenchRequest] = []
    for req in workload.requests():
        if max_requests is not None and len(out) >= max_requests:
            break
        if req.fails:  # a live engine cannot be made to fail as the trace did
            continue
        key = keys.get(req.tenant, default_key)
        if key is None:
            raise BenchError(
                f"no API key for tenant {req.tenant!r}: pass --api-key or --tenant-key "
                f"{req.tenant}=KEY (or --keys-from a gateway config with plain api_key entries)"
            )
        out.append(BenchRequest(len(out), req.arrival_s, req.tenant, req.prompt_tokens,
                                req.output_tokens, key))  # fmt: skip
    if out:
        start = out[0].arrival_s
        out = [
            BenchRequest(r.index, r.arrival_s - start, r.tenant, r.prompt_tokens,
                         r.output_tokens, r.api_key)
            for r in out
        ]  # fmt: skip
    return out


def retime(
    requests: Sequence[BenchRequest], rate_per_s: float, burstiness: float = 1.0, seed: int = 0
) -> list[BenchRequest]:
    """``requests`` sent at ``rate_per_s`` instead of their workload times (``vllm bench serve``'s way).

    Gaps between sends are gamma-distributed with shape ``burstiness`` and mean
    ``1 / rate_per_s``: 1 is a Poisson process, below 1 burstier, above 1 more
    regular. An infinite rate sends everything at once.
    """
    if not rate_per_s > 0:
        raise BenchError(f"--request-rate must be > 0 (or inf), got {rate_per_s}")
    if not burstiness > 0:
        raise BenchError(f"--burstiness must be > 0, got {burstiness}")
    if math.isinf(rate_per_s):
        times = [0.0] * len(requests)
    else:
        rng = np.random.default_rng(seed)
        gaps = rng.gamma(burstiness, 1.0 / (rate_per_s * burstiness), size=len(requests))
        times = [0.0, *np.cumsum(gaps[1:]).tolist()] if requests else []
    return [dataclasses.replace(r, arrival_s=t) for r, t in zip(requests, times, strict=True)]


@dataclass
class _Result:
    outcome: Outcome
    first_token_s: float
    finish_s: float
    output_tokens: int
    reason: str | None
    itl_s: list[float] = field(default_factory=list)


async def _one(
    client: httpx.AsyncClient,
    url: str,
    model: str,
    chat: bool,
    req: BenchRequest,
    t0: float,
    ignore_eos: bool,
) -> _Result:
    prompt = synthetic_prompt(req.prompt_tokens, req.index)
    body: dict[str, object] = {
        "model": model,
        "max_tokens": req.output_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    path = "/v1/chat/completions" if chat else "/v1/completions"
    headers = {"authorization": "Bearer " + req.api_key}
    first = NAN
    last = NAN
    itl: list[float] = []  # gaps between the chunks that carried text
    tokens = 0
    usage_tokens: int | None = None
    done = False
    clock = time.perf_counter
    try:
        async with client.stream("POST", url + path, json=body, headers=headers) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:300]
                return _Result(Outcome.FAILED, NAN, clock() - t0, 0,
                               f"HTTP {response.status_code}: {text}")  # fmt: skip
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return _Result(Outcome.FAILED, first, clock() - t0, tokens,
                                   str(chunk["error"].get("message")))  # fmt: skip
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if delta.get("content") or choice.get("text"):
                        tokens += 1
                        now = clock() - t0
                        if first != first:  # NaN: the first token
                            first = now
                        else:
                            itl.append(now - last)
                        last = now
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"].get("completion_tokens")
    except httpx.HTTPError as exc:
        return _Result(Outcome.FAILED, first, clock() - t0, tokens, f"{type(exc).__name__}: {exc}")
    finish = clock() - t0
    if not done:
        return _Result(Outcome.FAILED, first, finish, tokens, "stream ended without [DONE]")
    return _Result(Outcome.COMPLETED, first, finish, usage_tokens or tokens, None, itl)


async def run_bench(
    url: str,
    requests: Sequence[BenchRequest],
    *,
    model: str,
    chat: bool = False,
    max_concurrency: int = 256,
    max_duration_s: float = 600.0,
    ignore_eos: bool = True,
    itl_out: list[float] | None = None,
) -> tuple[RequestRecords, float]:
    """Send ``requests`` on schedule; their records (times from the start) and the wall time.

    With ``itl_out``, the inter-token latencies (seconds between streamed
    chunks with text) of the completed requests are appended to it.

    At most ``max_concurrency`` requests are open at once (later ones wait, and
    the wait counts in their latency); after ``max_duration_s`` the rest are
    cancelled and recorded as such.
    """
    records = RequestRecords()
    limits = httpx.Limits(
        max_connections=max_concurrency, max_keepalive_connections=max_concurrency
    )
    timeout = httpx.Timeout(max_duration_s, connect=10.0)
    gate = asyncio.Semaphore(max_concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        t0 = time.perf_counter()

        async def send(req: BenchRequest) -> None:
            delay = t0 + req.arrival_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                async with gate:
                    res = await _one(client, url, model, chat, req, t0, ignore_eos)
            except asyncio.CancelledError:
                res = _Result(Outcome.CANCELLED, NAN, time.perf_counter() - t0, 0, "bench timeout")
            if itl_out is not None:
                itl_out.extend(res.itl_s)
            records.add(req.index, req.tenant, -1, res.outcome, req.arrival_s, NAN,
                        res.first_token_s, res.finish_s, req.prompt_tokens,
                        res.output_tokens, 0, 0, res.reason)  # fmt: skip

        tasks = [asyncio.ensure_future(send(r)) for r in requests]
        _, pending = await asyncio.wait(tasks, timeout=max_duration_s) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        wall = time.perf_counter() - t0
    return records, wall
