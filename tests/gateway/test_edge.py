"""Limits at the edge, attacked over raw sockets on loopback: the gateway runs as ``fairserve serve``.

A bad key with a 50 MB body, oversized and too many headers, slowloris headers
and bodies, a full connection table; and inputs that used to give a 500
(nesting, surrogates, huge numbers, unknown routes). Every loop is bounded.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.gateway.helpers import KEY_A, MODEL, ended_total, gateway_config, gateway_thread
from tests.gateway.servers import FAST_ENGINE, Proc, ServerThread, engine_thread, free_port

LIMITS = {
    "max_body_bytes": 2**20,
    "max_header_bytes": 8192,
    "max_header_count": 40,
    "header_timeout_s": 2.0,
    "body_timeout_s": 2.0,
    "max_connections": 16,
}
BIG_BODY_BYTES = 50 * 2**20


@pytest.fixture(scope="module")
def engine() -> Iterator[ServerThread]:
    with engine_thread() as server:
        yield server


@pytest.fixture(scope="module")
def served(engine: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """``fairserve serve`` in a subprocess, with small limits."""
    config = {
        "models": [MODEL],
        "tenants": {"a": {"api_key": KEY_A}},
        "backends": [{"url": engine.url}],
        "limits": LIMITS,
    }
    path = tmp_path_factory.mktemp("edge") / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    proc = Proc(["serve", "--config", str(path), "--port", str(port)], port, "/healthz")
    try:
        yield proc.wait_ready()
    finally:
        proc.kill()


def _connect(proc: Proc) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
    return sock


def _head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of one response (read until the server closes)."""
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}


def _rss_kb(proc: Proc) -> int:
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _push(sock: socket.socket, total_bytes: int) -> int:
    """Send up to ``total_bytes`` of body; how many went out before the server closed."""
    chunk = b"x" * 2**16
    sent = 0
    with contextlib.suppress(OSError):
        while sent < total_bytes:
            sent += sock.send(chunk)
    return sent


def test_bad_key_is_refused_before_the_body(served: Proc) -> None:
    before_kb = _rss_kb(served)
    for _ in range(3):
        with contextlib.closing(_connect(served)) as sock:
            sock.sendall(_head("/v1/chat/completions", {
                "authorization": "Bearer sk-wrong", "content-type": "application/json",
                "content-length": str(BIG_BODY_BYTES)}))  # fmt: skip
            status, body = _read_response(sock)  # answered on the headers alone
            assert status == 401 and body["error"]["type"] == "authentication_error"
            assert _push(sock, BIG_BODY_BYTES) < BIG_BODY_BYTES  # the server hung up
    grown_kb = _rss_kb(served) - before_kb
    assert grown_kb < 4096, f"RSS grew by {grown_kb} kB"


def test_declared_oversized_body_is_413_at_once(served: Proc) -> None:
    with contextlib.closing(_connect(served)) as sock:
        sock.sendall(_head("/v1/completions", {
            "authorization": f"Bearer {KEY_A}", "content-length": str(BIG_BODY_BYTES)}))  # fmt: skip
        status, body = _read_response(sock)
    assert status == 413 and body["error"]["code"] == "request_too_large"


def test_chunked_body_is_cut_off_at_the_cap(served: Proc) -> None:
    before_kb = _rss_kb(served)
    with contextlib.closing(_connect(served)) as sock:
        sock.sendall(_head("/v1/completions", {
            "authorization": f"Bearer {KEY_A}", "transfer-encoding": "chunked"}))  # fmt: skip
        piece = b"x" * 2**16
        frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        sent = 0
        with contextlib.suppress(OSError):
            for _ in range(BIG_BODY_BYTES // len(piece)):
                sock.sendall(frame)
                sent += len(piece)
        status, body = _read_response(sock)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert sent < BIG_BODY_BYTES
    assert _rss_kb(served) - before_kb < 4096


@pytest.mark.parametrize("pieces", [1, 10])
def test_oversized_header_is_431(served: Proc, pieces: int) -> None:
    """In one read (checked by the app) or in pieces (refused by the server before it ends)."""
    head = _head("/v1/models", {"x-big": "y" * 20000})
    step = len(head) // pieces + 1
    with contextlib.closing(_connect(served)) as sock:
        with contextlib.suppress(OSError):
            for i in range(0, len(head), step):
                sock.sendall(head[i : i + step])
                time.sleep(0.02 if pieces > 1 else 0)
        status, body = _read_response(sock)
    assert status == 431 and body["error"]["code"] == "headers_too_large"


def test_too_many_headers_is_431(served: Proc) -> None:
    headers = {f"x-h{i}": "1" for i in range(60)}
    response = httpx.get(served.url + "/v1/models", headers=headers)
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "too_many_headers"


def test_slowloris_headers_are_closed_within_the_timeout(served: Proc) -> None:
    timeout_s = LIMITS["header_timeout_s"]
    with contextlib.closing(_connect(served)) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\n")
        sock.settimeout(0.5)
        closed_after_s = None
        for i in range(int(timeout_s * 2 + 10)):  # a header byte every 0.5 s
            try:
                sock.sendall(b"x-slow-%d: 1\r\n" % i)
                if sock.recv(1024) == b"":
                    closed_after_s = time.monotonic() - start
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after_s = time.monotonic() - start
                break
    assert closed_after_s is not None and closed_after_s < timeout_s + 1.5, closed_after_s


def test_slow_body_is_408(served: Proc) -> None:
    with contextlib.closing(_connect(served)) as sock:
        sock.sendall(_head("/v1/completions", {
            "authorization": f"Bearer {KEY_A}", "content-length": "1000"}))  # fmt: skip
        sock.sendall(b"{")
        status, body = _read_response(sock)
    assert status == 408 and body["error"]["code"] == "request_timeout"


def _requests_total(proc: Proc, outcome: str) -> float:
    """Tenant ``a``'s ``fairserve_requests_total`` of one outcome, from /metrics."""
    text = httpx.get(proc.url + "/metrics").text
    for line in text.splitlines():
        if line.startswith(f'fairserve_requests_total{{outcome="{outcome}",tenant="a"}}'):
            return float(line.split()[-1])
    return 0.0


def test_a_client_gone_before_its_body_is_counted_not_an_error(served: Proc) -> None:
    before = _requests_total(served, "rejected_499")
    for expect in (False, True):  # a plain partial body; an Expect: 100-continue left unsent
        with contextlib.closing(_connect(served)) as sock:
            headers = {"authorization": f"Bearer {KEY_A}", "content-length": "1000"}
            if expect:
                headers["expect"] = "100-continue"
            sock.sendall(_head("/v1/completions", headers))
            if not expect:
                sock.sendall(b'{"model": ')
            time.sleep(0.2)
    deadline = time.monotonic() + 5
    while _requests_total(served, "rejected_499") < before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    # Answered (to no one) as a 499 and counted, instead of an exception out of the app.
    assert _requests_total(served, "rejected_499") == before + 2
    assert httpx.get(served.url + "/healthz").status_code == 200


def test_connection_cap(served: Proc) -> None:
    idle = [_connect(served) for _ in range(int(LIMITS["max_connections"]))]
    try:
        time.sleep(0.2)
        refused = httpx.get(served.url + "/healthz")
        assert refused.status_code == 503  # in the OpenAI shape, not uvicorn's plain text
        assert refused.json()["error"]["code"] == "too_many_connections"
        assert refused.headers["retry-after"] == "1"
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while httpx.get(served.url + "/healthz").status_code != 200:
        assert time.monotonic() < deadline, "the cap did not free up"
        time.sleep(0.05)


# ------------------------------------------------------------------ no 500s (in-process)
@pytest.fixture(scope="module")
def gateway(engine: ServerThread) -> Iterator[tuple[str, Any]]:
    with gateway_thread(gateway_config([engine.url])) as (server, gw):
        yield server.url, gw


def _post(url: str, raw: bytes, path: str = "/v1/completions") -> httpx.Response:
    headers = {"authorization": f"Bearer {KEY_A}", "content-type": "application/json"}
    return httpx.post(url + path, content=raw, headers=headers, timeout=10)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"model": "m", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"model": "M", "prompt": "x", "logit_bias": ' + b'{"a": ' * 70 + b"1" + b"}" * 71,
        b'{"model": "M", "prompt": "\\ud800 hi"}',
        b'{"model": "M", "messages": [{"role": "user", "content": "\\udfff"}]}',
        b'{"model": "M", "prompt": "x", "temperature": 1e999}',
        b'{"model": "M", "prompt": "x", "temperature": NaN}',
        b'{"model": "M", "prompt": "x", "max_tokens": 100000000000000000000000000000}',
        b'{"model": "M", "prompt": "x", "priority": -100000000000000000000000000000}',
        b'{"model": "M", "prompt": "x", "max_tokens": 1' + b"0" * 5000 + b"}",
    ],
)
def test_hostile_bodies_are_400_before_admission(gateway: tuple[str, Any], raw: bytes) -> None:
    url, gw = gateway
    admitted = gw.admitted
    path = "/v1/chat/completions" if b"messages" in raw else "/v1/completions"
    response = _post(url, raw.replace(b'"M"', json.dumps(MODEL).encode()), path)
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert gw.admitted == admitted == ended_total(gw)


def test_valid_surrogate_pair_is_served(gateway: tuple[str, Any]) -> None:
    url, gw = gateway
    raw = json.dumps({"model": MODEL, "prompt": "smile \U0001f600", "max_tokens": 3}).encode()
    assert b"\\ud83d" in raw
    assert _post(url, raw).status_code == 200
    assert gw.admitted == ended_total(gw)


def test_unknown_route_and_wrong_method_are_json(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    missing = httpx.get(url + "/v1/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = httpx.get(url + "/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]


def test_a_client_that_stops_reading_its_stream_is_dropped(tmp_path: Path) -> None:
    """Its socket and its engine slot are freed once the server's writes stay paused
    for write_stall_timeout_s; the request ends once, as cancelled."""
    fast = replace(FAST_ENGINE, time_scale=0.001)  # tokens fast enough to fill the buffers
    with engine_thread(fast) as engine:
        config = {
            "models": [MODEL],
            "tenants": {"a": {"api_key": KEY_A}},
            "backends": [{"url": engine.url, "max_concurrency": 1}],
            "limits": {**LIMITS, "write_stall_timeout_s": 1.0},
        }
        path = tmp_path / "gw.yaml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        proc = Proc(["serve", "--config", str(path), "--port", str(port)], port, "/healthz")
        try:
            proc.wait_ready()
            body = json.dumps({"model": MODEL, "prompt": "hi", "max_tokens": 30000,
                               "stream": True, "ignore_eos": True}).encode()  # fmt: skip
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            with contextlib.closing(sock):
                sock.connect(("127.0.0.1", port))
                sock.sendall(_head("/v1/completions", {
                    "authorization": f"Bearer {KEY_A}", "content-type": "application/json",
                    "content-length": str(len(body))}) + body)  # fmt: skip
                deadline = time.monotonic() + 30
                while _requests_total(proc, "cancelled") < 1 and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert _requests_total(proc, "cancelled") == 1
            # The one engine slot is free again: the next request is served at once.
            answer = httpx.post(proc.url + "/v1/completions", timeout=10,
                                headers={"authorization": f"Bearer {KEY_A}"},
                                json={"model": MODEL, "prompt": "hi", "max_tokens": 2})  # fmt: skip
            assert answer.status_code == 200
            assert _requests_total(proc, "cancelled") == 1  # ended once
        finally:
            proc.kill()
