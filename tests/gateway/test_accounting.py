"""Exact accounting: upstream SSE parsed as JSON, the engine's usage wins, every field kept.

The gateway runs in front of a scripted upstream (tests.gateway.servers) that
formats its JSON compact or with Python's default spaces; both must be
charged alike, and the non-streaming answer must keep every field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairserve.core.model import Request
from fairserve.gateway.app import Gateway
from fairserve.gateway.backends.openai_http import UpstreamError
from fairserve.gateway.flight import Flight
from fairserve.gateway.protocol import Endpoint, parse_request
from fairserve.gateway.relay import Answer, _event_block, parse_block
from fairserve.gateway.tenants import Tenants
from tests.gateway.helpers import KEY_A, MODEL, ended_total, gateway_config, gateway_thread
from tests.gateway.servers import (
    SCRIPTED_PROMPT_TOKENS,
    SCRIPTED_WORDS,
    ServerThread,
    engine_thread,
    scripted_upstream_app,
)
from tests.helpers import wait_until

AUTH = {"authorization": f"Bearer {KEY_A}"}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
#: Output tokens of the scripted chat answer: one reasoning chunk and one per word.
CHAT_OUTPUT_TOKENS = 1 + len(SCRIPTED_WORDS)


@pytest.fixture(params=[True, False], ids=["compact", "spaces-crlf"])
def scripted(request: pytest.FixtureRequest) -> Iterator[tuple[str, Gateway, Any]]:
    """The gateway (VTC) in front of one scripted upstream."""
    compact = request.param
    app = scripted_upstream_app(compact=compact, crlf=not compact)
    with ServerThread(app) as upstream:
        config = gateway_config(
            [upstream.url], policy="vtc",
            backends=[{"url": upstream.url, "max_concurrency": 8, "metrics": "off"}],
        )  # fmt: skip
        with gateway_thread(config) as (server, gateway):
            yield server.url, gateway, app


def _tokens(gateway: Gateway, kind: str) -> float:
    value = gateway.metrics.registry.get_sample_value(
        "fairserve_tokens_total", {"tenant": "a", "kind": kind}
    )
    return value or 0.0


def _sse_chunks(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines()
            if line.startswith("data: {")]  # fmt: skip


def test_non_streaming_usage_is_the_engines_whatever_the_json_spacing(
    scripted: tuple[str, Gateway, Any],
) -> None:
    url, gateway, upstream = scripted
    reply = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=10)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["usage"] == {
        "prompt_tokens": SCRIPTED_PROMPT_TOKENS,
        "completion_tokens": CHAT_OUTPUT_TOKENS,
        "total_tokens": SCRIPTED_PROMPT_TOKENS + CHAT_OUTPUT_TOKENS,
    }
    assert upstream.state.last_body["stream_options"] == {"include_usage": True}
    assert wait_until(lambda: ended_total(gateway) == 1)
    assert _tokens(gateway, "completion") == CHAT_OUTPUT_TOKENS
    assert _tokens(gateway, "prompt") == SCRIPTED_PROMPT_TOKENS
    records = gateway.records
    assert records is not None
    arrays = records.to_numpy()
    assert arrays.ttft_s.size == 1 and arrays.ttft_s[0] > 0
    assert arrays.tpot_s.size == 1 and arrays.tpot_s[0] >= 0
    ttft = gateway.metrics.registry.get_sample_value(
        "fairserve_time_to_first_token_seconds_count", {"tenant": "a"}
    )
    tpot = gateway.metrics.registry.get_sample_value(
        "fairserve_request_time_per_output_token_seconds_count", {"tenant": "a"}
    )
    assert ttft == 1 and tpot == 1
    # VTC was charged the engine's counts: the real prompt (above the 7-token
    # estimate of "hi") at weight 1, the output at weight 2.
    policy: Any = gateway.policy
    assert policy.counter("a") == pytest.approx(SCRIPTED_PROMPT_TOKENS + 2 * CHAT_OUTPUT_TOKENS)


def test_streaming_strips_the_usage_chunk_unless_asked(
    scripted: tuple[str, Gateway, Any],
) -> None:
    url, gateway, _upstream = scripted
    plain = httpx.post(url + "/v1/chat/completions", json={**CHAT, "stream": True},
                       headers=AUTH, timeout=10)  # fmt: skip
    chunks = _sse_chunks(plain.text)
    assert chunks and all(c["choices"] for c in chunks)
    assert plain.text.rstrip().endswith("data: [DONE]")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "".join(SCRIPTED_WORDS)

    asked = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    reply = httpx.post(url + "/v1/chat/completions", json=asked, headers=AUTH, timeout=10)
    usage_chunks = [c for c in _sse_chunks(reply.text) if not c["choices"]]
    assert [c["usage"]["completion_tokens"] for c in usage_chunks] == [CHAT_OUTPUT_TOKENS]
    assert wait_until(lambda: ended_total(gateway) == 2)
    assert _tokens(gateway, "completion") == 2 * CHAT_OUTPUT_TOKENS
    assert _tokens(gateway, "prompt") == 2 * SCRIPTED_PROMPT_TOKENS
    assert gateway.outcomes == {"completed": 2}


def test_non_streaming_answer_keeps_every_field(scripted: tuple[str, Gateway, Any]) -> None:
    url, _gateway, _upstream = scripted
    body = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=10).json()
    assert body["id"] == "up-1" and body["created"] == 1700000000
    assert body["object"] == "chat.completion"
    assert body["system_fingerprint"] == "fp-test"
    assert body["x_unknown"] == {"kept": True}
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    message = choice["message"]
    assert message == {
        "role": "assistant",
        "content": "".join(SCRIPTED_WORDS),
        "reasoning_content": "think",
    }
    assert [e["token"] for e in choice["logprobs"]["content"]] == list(SCRIPTED_WORDS)

    done = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "hi"},
                      headers=AUTH, timeout=10).json()  # fmt: skip
    (choice,) = done["choices"]
    assert choice["text"] == "".join(SCRIPTED_WORDS)
    assert choice["logprobs"] == {"tokens": list(SCRIPTED_WORDS), "token_logprobs": [-0.5] * 5}
    assert done["usage"]["completion_tokens"] == len(SCRIPTED_WORDS)


def test_tool_call_deltas_are_assembled_and_the_engines_count_wins() -> None:
    app = scripted_upstream_app(compact=False, tool_calls=True)
    with ServerThread(app) as upstream:
        config = gateway_config([upstream.url], backends=[{"url": upstream.url, "metrics": "off"}])
        with gateway_thread(config) as (server, gateway):
            reply = httpx.post(server.url + "/v1/chat/completions", json=CHAT, headers=AUTH,
                               timeout=10)  # fmt: skip
            assert reply.status_code == 200, reply.text
            (choice,) = reply.json()["choices"]
            assert choice["finish_reason"] == "tool_calls"
            assert choice["message"]["content"] is None
            assert choice["message"]["tool_calls"] == [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }]  # fmt: skip
            # The gateway counts 5 chunks with output (reasoning, the name, three
            # argument pieces); this engine reports 4 (it does not count the name):
            # the engine's count is the one kept.
            usage = reply.json()["usage"]
            assert usage["completion_tokens"] == 4
            assert wait_until(lambda: ended_total(gateway) == 1)
            assert _tokens(gateway, "completion") == 4


def test_n_choices_through_a_backend_that_serves_them(scripted: tuple[str, Gateway, Any]) -> None:
    url, gateway, upstream = scripted
    body = httpx.post(url + "/v1/chat/completions", json={**CHAT, "n": 2}, headers=AUTH,
                      timeout=10).json()  # fmt: skip
    assert upstream.state.last_body["n"] == 2
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert {c["message"]["content"] for c in body["choices"]} == {"".join(SCRIPTED_WORDS)}
    assert body["usage"]["completion_tokens"] == 2 * CHAT_OUTPUT_TOKENS
    streamed = httpx.post(url + "/v1/chat/completions", json={**CHAT, "n": 2, "stream": True},
                          headers=AUTH, timeout=10)  # fmt: skip
    indexes = {c["choices"][0]["index"] for c in _sse_chunks(streamed.text)}
    assert indexes == {0, 1}
    assert wait_until(lambda: ended_total(gateway) == 2)
    assert _tokens(gateway, "completion") == 4 * CHAT_OUTPUT_TOKENS


@pytest.fixture(scope="module")
def engine_gateway() -> Iterator[tuple[str, str, Gateway]]:
    with engine_thread() as engine:
        config = gateway_config([engine.url])
        with gateway_thread(config) as (server, gateway):
            yield engine.url, server.url, gateway


def _generation_tokens(engine_url: str) -> float:
    text = httpx.get(engine_url + "/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("vllm:generation_tokens_total"))  # fmt: skip


def test_simulated_engine_tokens_match_what_the_gateway_charged(
    engine_gateway: tuple[str, str, Gateway],
) -> None:
    engine_url, url, gateway = engine_gateway
    before = _generation_tokens(engine_url)
    body = httpx.post(url + "/v1/chat/completions", json={**CHAT, "max_tokens": 9},
                      headers=AUTH, timeout=10).json()  # fmt: skip
    assert body["usage"]["completion_tokens"] == 9
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["logprobs"] is None
    streamed = httpx.post(
        url + "/v1/completions",
        headers=AUTH,
        timeout=10,
        json={"model": MODEL, "prompt": "a b", "max_tokens": 4, "stream": True},
    )
    assert len([c for c in _sse_chunks(streamed.text) if not c["choices"]]) == 0
    assert wait_until(lambda: ended_total(gateway) == 2)
    assert _tokens(gateway, "completion") == 13
    assert _generation_tokens(engine_url) - before == 13
    # n > 1 where the backend does not serve it: its 400 is passed on
    refused = httpx.post(url + "/v1/chat/completions", json={**CHAT, "n": 2}, headers=AUTH,
                         timeout=10)  # fmt: skip
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "n"


def _flight(include_usage: bool = False) -> Flight:
    raw = json.dumps({**CHAT, "stream": True, "stream_options": {"include_usage": include_usage}})
    parsed = parse_request(Endpoint.CHAT, raw.encode())
    tenants = Tenants(gateway_config(["http://127.0.0.1:1"]), 0.0)
    tenant = tenants.by_name["a"]
    req = Request(0, 0.0, parsed.prompt_tokens, 16, tenant="a")
    return Flight(req, tenant, parsed)


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk, indent=1).replace("\n", "\ndata: ").encode() + b"\n\n"


def test_n_choices_are_each_charged_and_answered_by_index() -> None:
    flight = _flight()
    head = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    chunks = [
        {**head, "choices": [{"index": 1, "delta": {"content": "B"}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"content": "A"}, "finish_reason": None},
                             {"index": 1, "delta": {"content": "b"}, "finish_reason": "length"}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                              "stop_reason": 7}]},
        {**head, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}},
    ]  # fmt: skip
    # multi-line data (indented JSON), an SSE comment, and the usage chunk
    block = b": keep-alive\n\n" + b"".join(_event(c) for c in chunks) + b"data: [DONE]\n\n"
    parsed = parse_block(flight, block)
    assert parsed.tokens == 3 and parsed.done
    assert flight.usage == {"prompt_tokens": 9, "completion_tokens": 3}
    assert b"usage" not in parsed.out and b"keep-alive" in parsed.out  # stripped: not asked
    answer = Answer()
    for chunk in parsed.chunks:
        answer.add(chunk)
    body = answer.body(flight)
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in body["choices"]] == [
        (0, "A", "stop"), (1, "Bb", "length"),
    ]  # fmt: skip
    assert body["choices"][0]["stop_reason"] == 7
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 3}


def test_error_events_and_non_json_data() -> None:
    flight = _flight(include_usage=True)
    chunk = {"choices": [{"index": 0, "delta": {"reasoning": "r"}}], "usage": None}
    usage = {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1}}
    block = _event(chunk) + _event(usage) + b"data: hello\n\n"
    parsed = parse_block(flight, block)
    assert parsed.tokens == 1 and not parsed.done
    assert parsed.out == block  # the client asked for usage: nothing stripped
    assert flight.usage == usage["usage"]
    with pytest.raises(UpstreamError):
        parse_block(flight, _event({"error": {"message": "boom"}}))


def test_events_the_fast_decoder_refuses_are_still_read() -> None:
    flight = _flight()
    # A lone surrogate escape and an integer past 64 bits: valid for the stdlib
    # decoder, refused by orjson; each still counts its token.
    surrogate = b'data: {"choices": [{"index": 0, "delta": {"content": "\\ud800"}}]}\n\n'
    huge = b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}], "n": 1' + b"0" * 30
    parsed = parse_block(flight, surrogate + huge + b"}\n\n")
    assert parsed.tokens == 2
    assert [c["choices"][0]["delta"]["content"] for c in parsed.chunks] == ["\ud800", "x"]


def test_an_over_estimated_prompt_is_taken_back(scripted: tuple[str, Gateway, Any]) -> None:
    """The estimate of a long message (ceil(chars / 4) + 6) is above the engine's 18 tokens:
    VTC ends up charged the engine's count, streaming and not."""
    url, gateway, _upstream = scripted
    long_chat = {"model": MODEL, "messages": [{"role": "user", "content": "word " * 60}]}
    policy: Any = gateway.policy
    for ended, stream in enumerate((False, True), start=1):
        before = policy.counter("a")
        reply = httpx.post(url + "/v1/chat/completions", json={**long_chat, "stream": stream},
                           headers=AUTH, timeout=10)  # fmt: skip
        assert reply.status_code == 200, reply.text
        assert wait_until(lambda n=ended: ended_total(gateway) == n)
        assert policy.counter("a") - before == pytest.approx(
            SCRIPTED_PROMPT_TOKENS + 2 * CHAT_OUTPUT_TOKENS
        )
    assert _tokens(gateway, "prompt") == 2 * SCRIPTED_PROMPT_TOKENS


# -- the one-parse reader of whole blocks against the event-by-event reader
_CHUNKS = [
    {"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"reasoning_content": "r"}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "{"}}]}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"choices": [{"index": 0, "delta": {"content": "x"}}, {"index": 1, "delta": {"content": ""}}]},
    {"choices": [{"index": 0, "text": "t"}]},
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    {"choices": [{"index": 0, "delta": {"content": "u"}}], "usage": {"completion_tokens": 1}},
    {"error": {"message": "boom"}},
    {"object": "unknown", "n": 10**30},
]
_OTHER_EVENTS = [b"data: [DONE]", b": keep-alive", b"data: hello", b"data: 7", b"event: x\ndata: {}",
                 b'data:{"choices":[{"delta":{"content":"c"}}]}', b'data: {"a":1},{"b":2}']  # fmt: skip


def _encoded(chunk: dict[str, Any], style: int) -> bytes:
    if style == 0:
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode()
    if style == 1:
        return b"data: " + json.dumps(chunk).encode()
    return b"data: " + json.dumps(chunk, indent=1).replace("\n", "\ndata: ").encode()


def _read(block: bytes, include_usage: bool, reader: Any) -> tuple[Any, ...]:
    flight = _flight(include_usage=include_usage)
    try:
        parsed = reader(flight, block)
    except UpstreamError:
        return ("error",)
    return parsed.out, parsed.tokens, parsed.done, parsed.chunks, flight.usage


_CHUNK_EVENT = st.tuples(st.sampled_from(range(len(_CHUNKS))), st.sampled_from([0, 0, 0, 1, 2]))


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.one_of(  # mostly blocks as engines write them, so both readers run often
            *[_CHUNK_EVENT.map(lambda pick: _encoded(_CHUNKS[pick[0]], pick[1]))] * 6,
            st.sampled_from(_OTHER_EVENTS),
        ),
        max_size=8,
    ),
    done=st.booleans(),
    include_usage=st.booleans(),
)
def test_a_block_read_in_one_parse_reads_as_event_by_event(
    events: list[bytes], done: bool, include_usage: bool
) -> None:
    block = b"".join(e + b"\n\n" for e in events) + (b"data: [DONE]\n\n" if done else b"")
    if not block:
        return
    fast = _read(block, include_usage, parse_block)
    assert fast == _read(block, include_usage, _event_block)
