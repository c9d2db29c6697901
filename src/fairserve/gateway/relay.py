"""The upstream stream back to the client: the SSE relay and the non-streaming JSON answer.

Upstream bytes are cut into whole server-sent events and each ``data:``
payload is parsed as JSON (so any JSON formatting is read alike: spaces or
none, any key order). A choice whose delta carries content, reasoning content
or tool-call arguments (``text`` for completions) counts one completion token,
for each choice of the chunk (``n > 1``); the engine's own ``usage`` replaces
these counts at the end (:mod:`.ledger`). The usage chunk (``choices: []``),
which the gateway always asks for, is kept for the ledger and dropped unless
the client asked for it; an ``error`` event or a stream without ``[DONE]`` is
a failure. Tokens are charged to the policy as they flow (the prompt estimate
with the first token), so a fair policy sees service when it happens. A
stream that breaks before its first token is resumed on another backend
(:meth:`.Connector.recover`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import orjson

from fairserve.core.policies.base import Policy
from fairserve.gateway.backends.http1 import Response as UpstreamResponse
from fairserve.gateway.backends.http1 import TransportError
from fairserve.gateway.backends.openai_http import UpstreamError
from fairserve.gateway.connect import Connector, unavailable_error
from fairserve.gateway.errors import APIError
from fairserve.gateway.flight import Flight
from fairserve.gateway.protocol import Endpoint

DONE = b"data: [DONE]"
_DECODE = json.JSONDecoder().decode
_FAST_DECODE = orjson.loads
_TEXT_KEYS = ("content", "reasoning_content", "reasoning")  # delta strings that are output


class Block:
    """Whole SSE events of one read: the bytes for the client and their parsed chunks."""

    __slots__ = ("chunks", "done", "out", "tokens")

    def __init__(self, out: bytes, chunks: list[dict[str, Any]], tokens: int, done: bool) -> None:
        self.out = out
        self.chunks = chunks
        self.tokens = tokens
        self.done = done


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
                # aclosing: a client that hangs up closes the upstream request now,
                # not when the garbage collector gets to the abandoned generator.
                async with aclosing(self._blocks(flight, response)) as blocks:
                    async for block in blocks:
                        if block.out:
                            yield block.out
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
            answer = Answer()
            try:
                async with aclosing(self._blocks(flight, response)) as blocks:
                    async for block in blocks:
                        for chunk in block.chunks:
                            answer.add(chunk)
                return answer.body(flight)
            except UpstreamError as exc:
                response = await self.connector.recover(flight, exc)
        raise unavailable_error()

    async def _blocks(
        self, flight: Flight, response: UpstreamResponse
    ) -> AsyncGenerator[Block, None]:
        """Blocks of whole events of one upstream stream, accounted; raises if it breaks off."""
        buf = b""
        done = False
        try:
            async for raw in response.aiter_raw():
                raw = buf + raw if buf else raw
                if b"\r" in raw:  # SSE allows CRLF line ends; one form is enough below
                    raw = raw.replace(b"\r\n", b"\n")
                end = raw.rfind(b"\n\n")
                if end < 0:
                    buf = raw
                    continue
                buf = raw[end + 2 :]
                block = parse_block(flight, raw[: end + 2])
                done = done or block.done
                if block.tokens:
                    self._account(flight, block.tokens)
                yield block
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
            # the estimate, unless the engine already reported (vLLM's continuous_usage_stats)
            prefill = flight.charged_prompt_tokens = flight.prompt_tokens
        else:
            scheduler = self.connector.scheduler
            if scheduler.tpot_tenants and flight.backend is not None:
                # The engine's time per output token, measured on this stream.
                per_token_s = (now - flight.last_token_s) / tokens
                flight.backend.observe_itl(per_token_s, now, scheduler.tpot_objective_s(now))
        flight.last_token_s = now
        flight.produced += tokens
        if flight.ticket is not None:
            flight.ticket.load.output_tokens += tokens  # the backend's batch estimate
        if self.policy.charges:
            self.policy.on_served(flight.tenant.name, prefill, tokens, now)


def parse_block(flight: Flight, block: bytes) -> Block:
    """One block of whole SSE events (LF line ends), parsed and counted.

    Records the engine's usage on the flight; drops the usage chunk when the
    client did not ask for it; raises :class:`UpstreamError` on an error event.
    A block as engines write them (one-line ``data:`` events, each a JSON
    object) is read in one go (:func:`_uniform_block`); any other, event by
    event, with the common case of that loop written out inline.
    """
    uniform = _uniform_block(flight, block)
    return uniform if uniform is not None else _event_block(flight, block)


def _event_block(flight: Flight, block: bytes) -> Block:
    """:func:`parse_block` for any block: event by event."""
    chunks: list[dict[str, Any]] = []
    keep: list[bytes] = []
    tokens = 0
    done = dropped = False
    fast_decode, has_output = _FAST_DECODE, _has_output
    for event in block.split(b"\n\n"):
        if not event:
            continue
        if event.startswith(b"data: {") and b"\n" not in event:
            data = event[6:]
            try:
                chunk = fast_decode(data)
            except ValueError:
                chunk = _json_object(data)
        else:
            joined = _data(event)
            if joined is None or joined == b"[DONE]":
                done = done or joined is not None
                keep.append(event)
                continue
            data = joined
            chunk = _json_object(data)
        if not isinstance(chunk, dict):  # not a JSON object: passed on, counts nothing
            keep.append(event)
            continue
        choices = chunk.get("choices")
        if choices:
            for choice in choices:
                tokens += has_output(choice)
        elif "error" in chunk:
            raise UpstreamError("upstream error event", retryable=flight.produced == 0,
                                body=b"data: " + data)  # fmt: skip
        usage = chunk.get("usage")
        if usage is not None and isinstance(usage, dict):
            flight.usage = usage
            if not choices and not flight.parsed.include_usage:
                dropped = True  # not forwarded; its other fields (system_fingerprint) still
                chunks.append(chunk)  # go into a non-streaming answer
                continue
        chunks.append(chunk)
        keep.append(event)
    out = block if not dropped else b"".join(e + b"\n\n" for e in keep)
    return Block(out, chunks, tokens, done)


_DONE_EVENT = DONE + b"\n\n"
_NEXT_EVENT = b"\n\ndata: "


def _uniform_block(flight: Flight, block: bytes) -> Block | None:
    """``block`` read with one JSON parse, or None when it must be read event by event.

    The events' payloads are joined into one JSON array (``\\n\\ndata: ``
    cannot occur inside a JSON value, whose strings hold no raw newline) and
    parsed at once: at 100 one-token events a block, a third of the per-event
    loop's time. The block qualifies only when the array parses, has exactly
    one element per event, and every element is an object; an error event, or
    a usage chunk to drop that is not the block's last event, sends it to the
    per-event reader too. (A stream built to split one JSON value over
    several events could still pass these checks; only its live token count
    would differ, and the engine's usage replaces that count at the end.)
    """
    done = block.endswith(_DONE_EVENT)
    body = block[: -len(_DONE_EVENT)] if done else block
    if not body:
        return Block(block, [], 0, done)
    if not body.startswith(b"data: {") or not body.endswith(b"}\n\n"):
        return None
    try:
        chunks = _FAST_DECODE(b"[" + body[6:-2].replace(_NEXT_EVENT, b",") + b"]")
    except ValueError:
        return None
    if len(chunks) != body.count(b"\n\n"):
        return None
    tokens = 0
    drop_last = False
    has_output = _has_output
    for chunk in chunks:
        if type(chunk) is not dict:
            return None
        choices = chunk.get("choices")
        if choices:
            for choice in choices:
                tokens += has_output(choice)
        elif "error" in chunk:
            return None  # raised, with its body, by the per-event reader
        usage = chunk.get("usage")
        if usage is not None and isinstance(usage, dict):
            flight.usage = usage
            if not choices and not flight.parsed.include_usage:
                if chunk is not chunks[-1]:
                    return None
                drop_last = True
    if drop_last:  # keep everything before the last event (and the [DONE] after it)
        start = body.rfind(_NEXT_EVENT, 0, len(body) - 2)
        out = body[: start + 2] if start >= 0 else b""
        block = out + _DONE_EVENT if done else out
    return Block(block, chunks, tokens, done)


def _data(event: bytes) -> bytes | None:
    """The joined ``data:`` lines of one event, or None when it has none (a comment, blank)."""
    if event.startswith(b"data:") and b"\n" not in event:  # the usual one-line event
        return event[5:].lstrip(b" ")
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        # orjson: 0.5 us for a one-token chat chunk against 1.6 us for the stdlib
        # decoder (timeit, 200,000 calls); it accepts a subset of what the stdlib does.
        value = _FAST_DECODE(data)
    except ValueError:
        try:
            # What orjson refuses (lone surrogate escapes, NaN, integers past 64 bits)
            # the stdlib decoder may still read, as the relay always has.
            value = _DECODE(data.decode())
        except ValueError:  # UnicodeDecodeError is a ValueError too
            return None
    return value if isinstance(value, dict) else None


def _has_output(choice: Any) -> bool:
    """Whether one streamed choice carries an output token."""
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta")
    if not isinstance(delta, dict):  # a completion's choice: its text
        return bool(choice.get("text"))
    if choice.get("text"):
        return True
    if delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"):
        return True  # (_TEXT_KEYS spelt out: a generator here cost a microsecond per event)
    for call in delta.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and (function.get("arguments") or function.get("name")):
            return True
    return False


class _Choice:
    """One choice of a non-streaming answer, gathered from its deltas."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.texts: dict[str, list[str]] = {}  # content, reasoning_content, text: pieces
        self.message: dict[str, Any] = {}  # other delta fields (role, refusal, unknown ones)
        self.fields: dict[str, Any] = {}  # other choice fields (stop_reason, unknown ones)
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.logprobs: dict[str, Any] | None = None
        self.finish_reason: str | None = None

    def add(self, choice: dict[str, Any]) -> None:
        for key, value in choice.items():
            if key == "delta" and isinstance(value, dict):
                self._delta(value)
            elif key == "text" and isinstance(value, str):
                self.texts.setdefault("text", []).append(value)
            elif key == "logprobs" and isinstance(value, dict):
                self.logprobs = _merge_lists(self.logprobs, value)
            elif key == "finish_reason":
                self.finish_reason = value or self.finish_reason
            elif key not in ("index", "delta", "text", "logprobs") and value is not None:
                self.fields[key] = value

    def _delta(self, delta: dict[str, Any]) -> None:
        for key, value in delta.items():
            if key in _TEXT_KEYS and isinstance(value, str):
                self.texts.setdefault(key, []).append(value)
            elif key == "tool_calls" and isinstance(value, list):
                for call in value:
                    if isinstance(call, dict):
                        self._tool_call(call)
            elif value is not None:
                self.message[key] = value

    def _tool_call(self, call: dict[str, Any]) -> None:
        """Merge one tool-call delta: ``arguments`` pieces are concatenated, the rest set."""
        index = call.get("index", 0)
        merged = self.tool_calls.setdefault(index if isinstance(index, int) else 0, {})
        for key, value in call.items():
            if key == "function" and isinstance(value, dict):
                function = merged.setdefault("function", {})
                for fkey, fvalue in value.items():
                    if fkey == "arguments" and isinstance(fvalue, str):
                        function[fkey] = function.get(fkey, "") + fvalue
                    elif fvalue is not None:
                        function[fkey] = fvalue
            elif key != "index" and value is not None:
                merged[key] = value

    def body(self, chat: bool) -> dict[str, Any]:
        """The choice of a ``chat.completion`` or ``text_completion`` body."""
        out: dict[str, Any] = {"index": self.index}
        if chat:
            message: dict[str, Any] = {"role": "assistant", **self.message}
            content = "".join(self.texts.get("content", ()))
            # OpenAI's shape: content null on a reply that is only tool calls
            message["content"] = content if content or not self.tool_calls else None
            for key in ("reasoning_content", "reasoning"):
                if key in self.texts:
                    message[key] = "".join(self.texts[key])
            if self.tool_calls:
                message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
            out["message"] = message
        else:
            out["text"] = "".join(self.texts.get("text", ()))
        out["logprobs"] = self.logprobs
        out["finish_reason"] = self.finish_reason
        out.update(self.fields)
        return out


def _merge_lists(into: dict[str, Any] | None, more: dict[str, Any]) -> dict[str, Any]:
    """Logprobs of one more chunk: lists (tokens, content entries, ...) are extended."""
    if into is None:
        return {k: list(v) if isinstance(v, list) else v for k, v in more.items()}
    for key, value in more.items():
        if isinstance(value, list) and isinstance(into.get(key), list):
            into[key].extend(value)
        elif value is not None or key not in into:
            into[key] = list(value) if isinstance(value, list) else value
    return into


class Answer:
    """A non-streaming answer gathered from the stream's chunks: every field kept."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}  # top-level fields (id, created, model, unknown ones)
        self.choices: dict[int, _Choice] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        """One parsed chunk."""
        for key, value in chunk.items():
            if key in ("choices", "usage", "object"):
                continue
            if key in ("id", "created"):  # the first chunk's
                self.head.setdefault(key, value)
            elif value is not None or key not in self.head:  # the last one set (fingerprint)
                self.head[key] = value
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                index = choice.get("index", 0)
                index = index if isinstance(index, int) else 0
                self.choices.setdefault(index, _Choice(index)).add(choice)

    def body(self, flight: Flight) -> dict[str, Any]:
        """The OpenAI JSON body (chat.completion or text_completion)."""
        chat = flight.parsed.endpoint is Endpoint.CHAT
        choices = self.choices or {0: _Choice(0)}
        prompt, completion = flight.prompt_tokens, flight.completion_tokens
        usage = flight.usage or {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return {
            "id": self.head.get("id") or f"fairserve-{flight.req.id}",
            "object": "chat.completion" if chat else "text_completion",
            "created": self.head.get("created") or int(time.time()),
            "model": self.head.get("model") or flight.parsed.model,
            **{k: v for k, v in self.head.items() if k not in ("id", "created", "model")},
            "choices": [choices[i].body(chat) for i in sorted(choices)],
            "usage": usage,
        }
