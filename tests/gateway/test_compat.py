"""OpenAI API conventions at the gateway: /v1/models/{id}, x-request-id, rate-limit headers,
batched completion prompts."""

from __future__ import annotations

import httpx
import pytest

from fairserve.gateway.errors import APIError
from fairserve.gateway.protocol import Endpoint, parse_request
from fairserve.gateway.tenants import duration
from tests.gateway.helpers import KEY_A, KEY_B, MODEL, gateway_config, gateway_thread
from tests.gateway.servers import engine_thread

AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
BODY = {"model": MODEL, "prompt": "hello", "max_tokens": 4}


def test_models_by_id_request_ids_and_rate_limit_headers() -> None:
    tenants = {
        "a": {"api_key": KEY_A, "limits": {"requests_per_min": 3, "tokens_per_min": 6000}},
        "b": {"api_key": KEY_B},
    }
    with engine_thread() as engine:
        config = gateway_config([engine.url], tenants=tenants)
        with gateway_thread(config) as (server, _gateway), httpx.Client(timeout=10) as client:
            one = client.get(server.url + f"/v1/models/{MODEL}", headers=AUTH_A)
            assert one.status_code == 200 and one.json()["id"] == MODEL
            missing = client.get(server.url + "/v1/models/org/other", headers=AUTH_A)
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "model_not_found"
            assert client.get(server.url + f"/v1/models/{MODEL}").status_code == 401

            mine = client.post(server.url + "/v1/completions", json=BODY,
                               headers={**AUTH_A, "x-request-id": "trace-42"})  # fmt: skip
            assert mine.status_code == 200 and mine.headers["x-request-id"] == "trace-42"
            assert mine.headers["x-ratelimit-limit-requests"] == "3"
            assert mine.headers["x-ratelimit-remaining-requests"] == "2"
            assert mine.headers["x-ratelimit-limit-tokens"] == "6000"
            assert int(mine.headers["x-ratelimit-remaining-tokens"]) < 6000
            assert mine.headers["x-ratelimit-reset-requests"].endswith("s")

            made = client.post(server.url + "/v1/completions", json=BODY,
                               headers={**AUTH_A, "x-request-id": "x" * 200})  # fmt: skip
            assert len(made.headers["x-request-id"]) == 32  # refused: a fresh one instead
            assert client.get(server.url + "/nowhere").headers["x-request-id"]

            client.post(server.url + "/v1/completions", json=BODY, headers=AUTH_A)
            refused = client.post(server.url + "/v1/completions", json=BODY, headers=AUTH_A)
            assert refused.status_code == 429  # the error carries the headers too
            assert refused.headers["x-ratelimit-remaining-requests"] == "0"
            other = client.post(server.url + "/v1/completions", json=BODY,
                                headers={"Authorization": f"Bearer {KEY_B}"})  # fmt: skip
            assert other.status_code == 200 and "x-ratelimit-limit-requests" not in other.headers


def test_batched_prompts_are_parsed_and_bounded() -> None:
    def parsed(prompt: object, n: int = 1) -> tuple[int, int]:
        raw = httpx.Request("POST", "/", json={"model": "m", "prompt": prompt, "n": n}).content
        p = parse_request(Endpoint.COMPLETIONS, raw)
        return p.prompts, p.sequences

    assert parsed("one") == (1, 1)
    assert parsed(["one"]) == (1, 1)
    assert parsed(["one", "two", [1, 2, 3]], n=2) == (3, 6)
    assert parsed([[1, 2], [3]]) == (2, 2)
    for bad in ([], ["ok", ""], ["ok", 3], [[1, -2]], ["x"] * 257):
        with pytest.raises(APIError) as info:
            parsed(bad)
        assert info.value.status == 400 and info.value.param == "prompt"


def test_reset_durations_read_like_openais() -> None:
    assert [duration(s) for s in (0.02, 0.5, 1.0, 59.2, 60, 360)] == [
        "20ms", "500ms", "1s", "1m0s", "1m0s", "6m0s"]  # fmt: skip
