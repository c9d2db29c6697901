"""End to end: the gateway in front of two simulated engines, real HTTP on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from fairserve.gateway.app import Gateway
from tests.gateway.helpers import KEY_A, KEY_B, MODEL, ended_total, gateway_config, gateway_thread
from tests.gateway.servers import ServerThread, engine_thread
from tests.helpers import wait_until


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[ServerThread, ServerThread]]:
    with engine_thread() as e1, engine_thread() as e2:
        yield e1, e2


@pytest.fixture(scope="module")
def gateway(engines: tuple[ServerThread, ServerThread]) -> Iterator[tuple[str, Gateway]]:
    tenants = {
        "a": {"api_key": KEY_A, "limits": {"max_prompt_tokens": 100}},
        "b": {"api_key": KEY_B, "limits": {"requests_per_min": 2}},
    }
    config = gateway_config([e.url for e in engines], tenants=tenants)
    with gateway_thread(config) as (server, state):
        yield server.url, state


def test_openai_client_chat_and_completions(gateway: tuple[str, Gateway]) -> None:
    url, state = gateway
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY_A, max_retries=0)
    messages = [{"role": "user", "content": "alpha beta gamma"}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=7)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == " alpha beta gamma alpha beta gamma alpha"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 7

    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=5, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " alpha beta gamma alpha beta"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5

    done = client.completions.create(model=MODEL, prompt="one two", max_tokens=3)
    assert done.choices[0].text == " one two one"
    streamed = client.completions.create(model=MODEL, prompt=[5, 6, 7], max_tokens=4, stream=True)
    assert sum(1 for c in streamed if c.choices and c.choices[0].text) == 4

    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert state.admitted == ended_total(state)


def _post(url: str, body: object, key: str | None = KEY_A, path: str = "/v1/chat/completions",
          raw: bytes | None = None) -> httpx.Response:  # fmt: skip
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    if raw is not None:
        return httpx.post(url + path, content=raw, headers=headers, timeout=10)
    return httpx.post(url + path, json=body, headers=headers, timeout=10)


def _error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err  # type: ignore[no-any-return]


GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def test_error_cases(gateway: tuple[str, Gateway]) -> None:
    url, state = gateway
    assert _error(_post(url, GOOD, key=None), 401)["code"] == "missing_api_key"
    assert _error(_post(url, GOOD, key="sk-wrong"), 401)["type"] == "authentication_error"
    assert _error(_post(url, None, raw=b"{not json"), 400)["type"] == "invalid_request_error"
    assert _error(_post(url, None, raw=b"[1, 2]"), 400)
    assert _error(_post(url, {"messages": GOOD["messages"]}), 400)["param"] == "model"
    assert _error(_post(url, {**GOOD, "messages": []}), 400)["param"] == "messages"
    assert _error(_post(url, {**GOOD, "max_tokens": 0}), 400)["param"] == "max_tokens"
    assert _error(_post(url, {**GOOD, "max_tokens": "7"}), 400)["param"] == "max_tokens"
    assert _error(_post(url, {**GOOD, "stream": "yes"}), 400)["param"] == "stream"
    # A batch of prompts passes the gateway; the simulated engine serves one prompt per
    # request, and its 400 is passed on (a real vLLM serves it: tests/gateway/test_vllm.py).
    batch = _post(url, {"model": MODEL, "prompt": ["a", "b"]}, path="/v1/completions")
    assert _error(batch, 400)["param"] == "prompt"
    long_prompt = {**GOOD, "messages": [{"role": "user", "content": "word " * 200}]}
    too_long = _error(_post(url, long_prompt), 400)
    assert (too_long["code"], too_long["param"]) == ("prompt_too_long", "messages")
    long_completion = _post(url, {"model": MODEL, "prompt": "word " * 200}, path="/v1/completions")
    assert _error(long_completion, 400)["param"] == "prompt"
    assert _error(_post(url, {**GOOD, "model": "gpt-9"}), 404)["code"] == "model_not_found"
    # token ids beyond the model's vocabulary: the engine's 400 (as vLLM's), passed on
    for prompt in ([1, 2, 10**9], [[5, 10**9]]):
        oov = _post(url, {"model": MODEL, "prompt": prompt}, path="/v1/completions")
        assert "out of vocabulary" in str(_error(oov, 400)["message"])
    in_vocab = _post(url, {"model": MODEL, "prompt": [[5, 6]], "max_tokens": 2},
                     path="/v1/completions")  # fmt: skip
    assert in_vocab.status_code == 200
    huge = {**GOOD, "max_tokens": 10**6}  # passes the gateway, the engine refuses: passed on
    assert _error(_post(url, huge), 400)["code"] == "context_length_exceeded"
    # n > 1 passes the gateway; the simulated engine serves n = 1 only: passed on
    assert _error(_post(url, {**GOOD, "n": 3}), 400)["param"] == "n"
    # tenant b: 2 requests a minute
    assert _post(url, GOOD, key=KEY_B).status_code == 200
    assert _post(url, GOOD, key=KEY_B).status_code == 200
    limited = _post(url, GOOD, key=KEY_B)
    assert _error(limited, 429)["code"] == "rate_limit_exceeded"
    assert int(limited.headers["retry-after"]) >= 1
    assert httpx.get(url + "/healthz").status_code == 200
    assert httpx.get(url + "/readyz").json()["ready"] is True
    assert state.admitted == ended_total(state)
    metrics = httpx.get(url + "/metrics").text
    assert 'fairserve_requests_total{outcome="rejected_429",tenant="b"} 1.0' in metrics
    # the engine's 400s: the batch, the two out-of-vocabulary prompts, max_tokens, n
    assert 'fairserve_requests_total{outcome="failed",tenant="a"} 5.0' in metrics


def test_queue_timeout_is_503() -> None:
    with engine_thread() as engine:
        config = gateway_config(
            [engine.url],
            backends=[{"url": engine.url, "max_concurrency": 1}],
            tenants={"a": {"api_key": KEY_A, "limits": {"max_queue_wait_s": 0.2}}},
        )
        with gateway_thread(config) as (server, state), httpx.Client(timeout=10) as client:
            body = {**GOOD, "max_tokens": 600, "stream": True}  # ~1 s of decoding
            headers = {"authorization": f"Bearer {KEY_A}"}
            with client.stream("POST", server.url + "/v1/chat/completions", json=body,
                               headers=headers) as first:  # fmt: skip
                lines = first.iter_lines()  # keep it: a dropped iterator closes the stream
                assert next(lines).startswith("data: ")
                late = _post(server.url, GOOD)
                err = _error(late, 503)
                assert err["code"] == "queue_timeout" and "max_queue_wait_s" in str(err["message"])
                assert "retry-after" in late.headers
            assert wait_until(lambda: state.admitted == ended_total(state))
            assert state.outcomes["expired"] == 1


def _engine_running(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("vllm:num_requests_running"))
    return float(line.rsplit(" ", 1)[1])


def test_disconnect_mid_stream_frees_capacity() -> None:
    with engine_thread() as engine:
        config = gateway_config([engine.url], backends=[{"url": engine.url, "max_concurrency": 1}])
        with gateway_thread(config) as (server, state):
            body = {**GOOD, "max_tokens": 3000, "stream": True}  # ~5 s if left to finish
            headers = {"authorization": f"Bearer {KEY_A}"}
            with (
                httpx.Client(timeout=10) as client,
                client.stream(
                    "POST", server.url + "/v1/chat/completions", json=body, headers=headers
                ) as response,
            ):
                lines = response.iter_lines()
                assert next(lines).startswith("data: ")
                assert state.backends[0].inflight == 1
                assert _engine_running(engine.url) == 1
            # the client is gone: the gateway cancels upstream, the engine frees the sequence
            assert wait_until(lambda: state.backends[0].inflight == 0)
            assert wait_until(lambda: _engine_running(engine.url) == 0)
            assert state.outcomes["cancelled"] == 1
            started = time.monotonic()
            assert _post(server.url, GOOD).status_code == 200  # the one slot is free again
            assert time.monotonic() - started < 2
            assert state.admitted == ended_total(state) == 2
