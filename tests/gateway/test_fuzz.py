"""The HTTP API fuzzed with hypothesis: never a 500, always an OpenAI error body, no leaks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.helpers import KEY_A, KEY_B, MODEL, ended_total, gateway_config, gateway_thread
from tests.gateway.servers import engine_thread

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "bot", 3]),
     "content": st.one_of(st.text(max_size=40), st.none(), _json)}
)  # fmt: skip
_body = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.just(MODEL), st.text(max_size=12), _json),
        "messages": st.one_of(st.lists(_message, max_size=3), _json),
        "prompt": st.one_of(st.text(max_size=40), st.lists(st.integers(-5, 50), max_size=5), _json),
        "max_tokens": st.one_of(st.integers(-3, 8), st.just(10**7), _json),
        "stream": st.one_of(st.booleans(), _json),
        "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), _json),
        "n": st.one_of(st.integers(0, 3), _json),
        "priority": st.one_of(st.integers(-5, 5), _json),
        "ignore_eos": st.one_of(st.booleans(), _json),
    },
)
_key = st.sampled_from([KEY_A, KEY_B, "sk-nope", "x", None])


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, Any]]:
    with engine_thread() as engine, gateway_thread(gateway_config([engine.url])) as (server, gw):
        yield server.url, gw


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code == 503, response.text
    if response.status_code >= 400:
        err = response.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_body, key=_key, path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
       raw=st.one_of(st.none(), st.binary(max_size=30)))  # fmt: skip
def test_fuzzed_bodies_never_500(gateway: tuple[str, Any], body: dict[str, Any], key: str | None,
                                 path: str, raw: bytes | None) -> None:  # fmt: skip
    url, _ = gateway
    headers = {} if key is None else {"authorization": f"Bearer {key}"}
    content = raw if raw is not None else json.dumps(body).encode()
    with httpx.Client(timeout=10) as client:
        _check(client.post(url + path, content=content, headers=headers))


_surrogate_text = st.text(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters(max_codepoint=0x2FF),
    min_size=1, max_size=8,
)  # fmt: skip
_huge_number = st.one_of(
    st.integers(2**31, 10**400), st.integers(-(10**400), -(2**31)),
    st.sampled_from(["1e999", "-1e400", "NaN", "Infinity", "-Infinity", "1" + "0" * 5000]),
)  # fmt: skip


def _nested(depth: int, opener: str) -> str:
    closer = "]" if opener == "[" else "}"
    inner = "[" if opener == "[" else '{"k": '
    return inner * depth + "1" + closer * depth


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    field=st.sampled_from(["prompt", "max_tokens", "temperature", "priority", "logit_bias", "n"]),
    value=st.one_of(
        st.builds(_nested, st.integers(1, 200_000), st.sampled_from(["[", "{"])),
        _surrogate_text.map(json.dumps),
        _huge_number.map(str),
    ),
    path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
)
def test_hostile_json_never_500(gateway: tuple[str, Any], field: str, value: str,
                                path: str) -> None:  # fmt: skip
    """Deep nesting, lone surrogates and huge numbers, anywhere in a body: a 4xx, never a 500."""
    url, _ = gateway
    base = {"model": MODEL, "max_tokens": 2, "prompt": "hi",
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    base.pop(field, None)
    head = json.dumps(base)[:-1]
    raw = f'{head}, "{field}": {value}}}'.encode()
    headers = {"authorization": f"Bearer {KEY_A}", "content-type": "application/json"}
    with httpx.Client(timeout=20) as client:
        _check(client.post(url + path, content=raw, headers=headers))


def test_fuzz_left_no_request_open(gateway: tuple[str, Any]) -> None:
    _, gw = gateway
    assert gw.admitted == ended_total(gw)
    assert all(b.inflight == 0 for b in gw.backends)


def test_tenants_only_see_their_own_answers(gateway: tuple[str, Any]) -> None:
    """Concurrent streams of two tenants: every word a client gets comes from its own prompt."""
    url, _ = gateway

    async def one(client: httpx.AsyncClient, key: str, word: str) -> str:
        body = {"model": MODEL, "stream": True, "max_tokens": 20,
                "messages": [{"role": "user", "content": f"{word} {word}x"}]}  # fmt: skip
        text = []
        async with client.stream("POST", url + "/v1/chat/completions", json=body,
                                 headers={"authorization": f"Bearer {key}"}) as r:  # fmt: skip
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    if chunk["choices"]:
                        text.append(chunk["choices"][0]["delta"].get("content") or "")
        return "".join(text)

    async def run() -> list[tuple[str, str]]:
        async with httpx.AsyncClient(timeout=30) as client:
            jobs = [(KEY_A if i % 2 else KEY_B, f"secret{i}") for i in range(30)]
            texts = await asyncio.gather(*(one(client, k, w) for k, w in jobs))
            return [(w, t) for (_, w), t in zip(jobs, texts, strict=True)]

    for word, text in asyncio.run(run()):
        assert set(text.split()) == {word, word + "x"}
