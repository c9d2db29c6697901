"""Reliability with real processes: an engine killed mid-run, SIGTERM draining the gateway."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.gateway.helpers import KEY_A, MODEL, ended_total, gateway_config, gateway_thread
from tests.gateway.servers import Proc, engine_thread, free_port
from tests.helpers import wait_until, wait_until_async


def _engine_proc() -> Proc:
    port = free_port()
    return Proc(["engine", "--port", str(port), "--max-num-seqs", "64"], port).wait_ready()


async def _stream_one(client: httpx.AsyncClient, url: str, i: int) -> tuple[str, int]:
    """('completed' | 'error', tokens seen) for one streaming chat request."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"w{i}"}],
            "max_tokens": 300, "stream": True}  # fmt: skip
    tokens = 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body,
                             headers={"authorization": f"Bearer {KEY_A}"}) as response:  # fmt: skip
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                return ("completed" if tokens == 300 else "short"), tokens
            if line.startswith("data: "):
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return "error", tokens
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    tokens += 1
    return "no-done", tokens


def test_engine_killed_mid_run_loses_nothing_counts_nothing_twice() -> None:
    e1, e2 = _engine_proc(), _engine_proc()
    try:
        config = gateway_config([e1.url, e2.url], router="round-robin")
        with gateway_thread(config) as (server, state):

            async def run() -> list[tuple[str, int]]:
                async with httpx.AsyncClient(timeout=30) as client:
                    tasks = [asyncio.create_task(_stream_one(client, server.url, i))
                             for i in range(40)]  # fmt: skip
                    # Kill e2 once it is streaming answers (on a loaded machine the
                    # gateway may take a while to dispatch): wait until it holds
                    # requests, then a little longer so tokens are flowing.
                    await wait_until_async(lambda: state.backends[1].inflight >= 5, 20)
                    await asyncio.sleep(0.1)
                    e2.kill()
                    more = [
                        asyncio.create_task(_stream_one(client, server.url, 100 + i))
                        for i in range(20)
                    ]  # fmt: skip  (sent after the kill)
                    return await asyncio.gather(*tasks, *more)

            results = asyncio.run(run())
            assert wait_until(lambda: ended_total(state) >= state.admitted, timeout_s=15)
            kinds = [kind for kind, _ in results]
            # every client got an answer: a full one, or an error event if its engine died mid-answer
            assert set(kinds) <= {"completed", "error"}, kinds
            assert 0 < kinds.count("error") <= 40  # those streaming from the killed engine
            assert kinds[40:].count("completed") == 20  # later ones went to the live engine
            assert state.admitted == 60 == ended_total(state)  # each ended exactly once
            assert state.outcomes["completed"] == kinds.count("completed")
            assert state.outcomes["failed"] == kinds.count("error")
            assert not state.backends[1].healthy and state.backends[0].healthy
            assert state.backends[0].inflight == state.backends[1].inflight == 0
    finally:
        e1.kill()
        e2.kill()


def test_connection_refused_is_retried_on_another_backend() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with engine_thread() as live:
        config = gateway_config([dead, live.url], router="round-robin",
                                dispatch={"health_interval_s": 60})  # fmt: skip
        with gateway_thread(config) as (server, state):
            body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 3}
            for _ in range(4):
                r = httpx.post(server.url + "/v1/chat/completions", json=body,
                               headers={"authorization": f"Bearer {KEY_A}"})  # fmt: skip
                assert r.status_code == 200, r.text
            assert state.outcomes["completed"] == 4 == state.admitted
            assert not state.backends[0].healthy


def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    """SIGTERM: /readyz 503 at once, requests served for drain_delay_s, then refused."""
    with engine_thread() as engine:
        cfg = gateway_config([engine.url]).model_dump(exclude_none=True)
        cfg["server"] = {"drain_grace_s": 10, "drain_delay_s": 1.0}
        path = tmp_path / "gw.yaml"
        path.write_text(yaml.safe_dump(cfg))
        port = free_port()
        gw = Proc(["serve", "--config", str(path), "--port", str(port)], port, "/healthz")
        gw.wait_ready()
        try:
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 2400,
                "stream": True,
            }  # fmt: skip  (~4 s)
            short = {**body, "max_tokens": 4, "stream": False}
            headers = {"authorization": f"Bearer {KEY_A}"}
            with (
                httpx.Client(timeout=20) as client,
                client.stream(
                    "POST", gw.url + "/v1/chat/completions", json=body, headers=headers
                ) as response,
                httpx.Client(timeout=20) as keep_alive,
            ):
                lines = response.iter_lines()
                assert next(lines).startswith("data: ")
                gw.proc.send_signal(signal.SIGTERM)
                time.sleep(0.2)
                assert httpx.get(gw.url + "/readyz").status_code == 503
                # Within the delay the balancer may still send: those are served.
                served = keep_alive.post(gw.url + "/v1/chat/completions", json=short,
                                         headers=headers)  # fmt: skip
                assert served.status_code == 200, served.text
                time.sleep(1.3)  # past drain_delay_s: the listener is closed
                refused = keep_alive.post(gw.url + "/v1/chat/completions", json=short,
                                          headers=headers)  # fmt: skip
                assert refused.status_code == 503
                assert refused.json()["error"]["code"] == "draining"
                with pytest.raises(httpx.ConnectError):
                    httpx.get(gw.url + "/healthz", timeout=2)
                rest = list(lines)  # the in-flight request finishes
                assert rest[-2] == "data: [DONE]"
            assert gw.proc.wait(timeout=15) == 0
        finally:
            gw.kill()
