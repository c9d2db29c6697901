"""The upstream stream back to the client: the SSE relay and the non-streaming JSON answer.

Upstream bytes are cut into whole server-sent events and scanned by byte
patterns (no JSON parse per event on the hot path): an event with non-empty
``content`` or ``text`` counts one token, the usage chunk (``"choices":[]``)
is kept for the ledger and dropped unless the client asked for it, an
``{"error"`` event or a stream without ``[DONE]`` is a failure. Tokens are
charged to the policy as they flow (the prompt with the first token), so a
fair policy sees service when it happens. A stream that breaks before its
first token is resumed on another backend (:meth:`.Connector.recover`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fairserve.core.policies.base import Policy
from fairserve.gateway.backends.http1 import Response as UpstreamResponse
from fairserve.gateway.backends.http1 import TransportError
from fairserve.gateway.backends.openai_http import UpstreamError
from fairserve.gateway.connect import Connector, unavailable_error
from fairserve.gateway.errors import APIError
from fairserve.gateway.flight import Flight
from fairserve.gateway.protocol import Endpoint

DONE = b"data: [DONE]"


class Relay:
    """Reads a flight's upstream stream, charges the policy, and hands the client its answer."""

    def __init__(self, connector: Connector, policy: Policy, clock: Callable[[], float]) -> None:
        self.connector = connector
        self.policy = policy
        self.clock = clock

    async def stream(self, flight: Flight, response: UpstreamResponse) -> AsyncIterator[bytes]:
        """The client's SSE stream (upstream bytes forwarded as they come)."""
        for _attempt in range(self.connector.attempts):
            try:
                async for block in self._events(flight, response):
                    yield block
                return
            except UpstreamError as exc:
                try:
                    response = await self.connector.recover(flight, exc)
                except APIError as err:
                    flight.failed = True
                    yield err.sse_event() + DONE + b"\n\n"
                    return

    async def collect(self, flight: Flight, response: UpstreamResponse) -> dict[str, Any]:
        """One JSON answer assembled from the upstream stream (for ``stream: false``)."""
        for _attempt in range(self.connector.attempts):
            answer = _Answer()
            try:
                async for block in self._events(flight, response):
                    answer.add(block)
                return answer.body(flight)
            except UpstreamError as exc:
                response = await self.connector.recover(flight, exc)
        raise unavailable_error()

    async def _events(self, flight: Flight, response: UpstreamResponse) -> AsyncIterator[bytes]:
        """Whole-event blocks of one upstream stream, accounted; raises if it breaks off."""
        buf = b""
        done = False
        try:
            async for raw in response.aiter_raw():
                if buf:
                    raw = buf + raw
                end = raw.rfind(b"\n\n")
                if end < 0:
                    buf = raw
                    continue
                buf = raw[end + 2 :]
                out, tokens, done = _scan(flight, raw[: end + 2])
                if tokens:
                    self._account(flight, tokens)
                if out:
                    yield out
        except TransportError as exc:
            raise UpstreamError(
                f"upstream stream broke: {exc}", retryable=flight.produced == 0
            ) from None
        finally:
            await response.aclose()
        if not done:
            raise UpstreamError("upstream ended without [DONE]", retryable=flight.produced == 0)

    def _account(self, flight: Flight, tokens: int) -> None:
        now = self.clock()
        prefill = 0
        if flight.produced == 0:
            flight.first_token_s = now
            prefill = flight.req.prompt_tokens
        flight.produced += tokens
        if flight.ticket is not None:
            flight.ticket.load.output_tokens += tokens  # the backend's batch estimate
        if self.policy.charges:
            self.policy.on_served(flight.tenant.name, prefill, tokens, now)


def _scan(flight: Flight, block: bytes) -> tuple[bytes, int, bool]:
    """One block of whole SSE events: (bytes for the client, tokens, saw [DONE])."""
    tokens = 0
    done = False
    dropped = False
    keep: list[bytes] = []
    for event in block.split(b"\n\n"):
        if not event:
            continue
        if event.startswith(DONE):
            done = True
        elif b'"choices":[]' in event:  # the usage chunk we asked for
            with contextlib.suppress(ValueError):
                flight.usage = json.loads(event[5:]).get("usage")
            if not flight.parsed.include_usage:
                dropped = True
                continue
        elif event.startswith(b'data: {"error"'):
            raise UpstreamError("upstream error event", retryable=flight.produced == 0,
                                body=event)  # fmt: skip
        elif (b'"content":"' in event and b'"content":""' not in event) or (
            b'"text":"' in event and b'"text":""' not in event
        ):
            tokens += 1
        keep.append(event)
    if not dropped:
        return block, tokens, done
    return b"".join(e + b"\n\n" for e in keep), tokens, done


class _Answer:
    """The pieces of a non-streaming answer, gathered from the stream's chunks."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.head: dict[str, Any] = {}
        self.finish: str | None = None

    def add(self, block: bytes) -> None:
        for event in block.split(b"\n\n"):
            if not event.startswith(b"data: {"):
                continue
            chunk = json.loads(event[6:])
            self.head = self.head or chunk
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                self.pieces.append(delta.get("content") or choice.get("text") or "")
                self.finish = choice.get("finish_reason") or self.finish

    def body(self, flight: Flight) -> dict[str, Any]:
        """The OpenAI JSON body (chat.completion or text_completion)."""
        chat = flight.parsed.endpoint is Endpoint.CHAT
        text = "".join(self.pieces)
        choice: dict[str, Any] = {"index": 0, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice["finish_reason"] = self.finish
        usage = flight.usage or {
            "prompt_tokens": flight.req.prompt_tokens,
            "completion_tokens": flight.produced,
            "total_tokens": flight.req.prompt_tokens + flight.produced,
        }
        head = self.head
        return {
            "id": head.get("id", f"fairserve-{flight.req.id}"),
            "object": "chat.completion" if chat else "text_completion",
            "created": head.get("created", int(time.time())),
            "model": head.get("model", flight.parsed.model),
            "choices": [choice],
            "usage": usage,
        }
