"""Real servers on loopback for the gateway tests: uvicorn in a thread, or a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn

from fairserve.engine_server.server import EngineSettings, create_engine_app
from fairserve.sim.config import EngineConfig

FAST_ENGINE = EngineSettings(
    model="Qwen2.5-1.5B",
    gpu="H100-80GB",
    engine=EngineConfig(max_num_seqs=16, max_num_batched_tokens=2048),
)


def free_socket() -> socket.socket:
    """A bound loopback socket on a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A port that was free a moment ago."""
    with contextlib.closing(free_socket()) as sock:
        return int(sock.getsockname()[1])


class ServerThread:
    """An ASGI app served by uvicorn on a free loopback port, in a background thread."""

    def __init__(self, app: Any) -> None:
        self.sock = free_socket()
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread (bounded)."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def engine_thread(settings: EngineSettings = FAST_ENGINE) -> Iterator[ServerThread]:
    """A simulated engine in this process."""
    with ServerThread(create_engine_app(settings)) as server:
        yield server


class Proc:
    """A ``python -m fairserve.cli.gateway ...`` subprocess on a given port."""

    def __init__(self, args: list[str], port: int, health_path: str = "/health") -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fairserve.cli.gateway", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.health_path = health_path

    def wait_ready(self, timeout_s: float = 20) -> Proc:
        """Poll the health path until it answers 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"process exited with {self.proc.returncode}: {out}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.health_path, timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError("process did not become ready")

    def kill(self) -> None:
        """Kill it at once."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()

    def output(self) -> str:
        """Its output once it has exited."""
        return self.proc.stdout.read().decode() if self.proc.stdout else ""


#: The prompt count :func:`scripted_upstream_app` reports (unlike the gateway's estimate).
SCRIPTED_PROMPT_TOKENS = 18
#: The words :func:`scripted_upstream_app` answers with, one per chunk.
SCRIPTED_WORDS = ("Hello", " there", ",", " friend", ".")


def _scripted_chunks(body: dict[str, Any], tool_calls: bool) -> list[dict[str, Any]]:
    """The chunks of one answer: per choice, reasoning, words (or tool-call deltas), finish."""
    chat = "messages" in body
    n = int(body.get("n") or 1)
    head = {"id": "up-1", "object": "chat.completion.chunk" if chat else "text_completion",
            "created": 1700000000, "model": body.get("model"), "system_fingerprint": "fp-test",
            "x_unknown": {"kept": True}}  # fmt: skip
    chunks: list[dict[str, Any]] = []

    def choice(index: int, piece: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        logprobs: dict[str, list[Any]] | None = None
        text = piece.get("content") or piece.get("text")
        if text and chat:
            logprobs = {"content": [{"token": text, "logprob": -0.5, "top_logprobs": []}]}
        elif text:
            logprobs = {"tokens": [text], "token_logprobs": [-0.5]}
        out: dict[str, Any] = {"index": index, "logprobs": logprobs, "finish_reason": finish}
        if chat:
            out["delta"] = {k: v for k, v in piece.items() if k != "text"}
        else:
            out["text"] = piece.get("text", "")
        return out

    for index in range(n):
        if chat:
            chunks.append(
                {**head, "choices": [choice(index, {"role": "assistant", "content": ""})]}
            )
            chunks.append({**head, "choices": [choice(index, {"reasoning_content": "think"})]})
        if tool_calls and chat:
            call = {"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}  # fmt: skip
            chunks.append({**head, "choices": [choice(index, {"tool_calls": [call]})]})
            for part in ('{"city": ', '"Paris"', "}"):
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}
                chunks.append({**head, "choices": [choice(index, delta)]})
            finish = "tool_calls"
        else:
            for word in SCRIPTED_WORDS:
                piece = {"content": word} if chat else {"text": word}
                chunks.append({**head, "choices": [choice(index, piece)]})
            finish = "stop"
        chunks.append({**head, "choices": [choice(index, {}, finish)]})
    return chunks


def scripted_upstream_app(*, compact: bool, crlf: bool = False, tool_calls: bool = False) -> Any:
    """An OpenAI-compatible upstream with a fixed answer, its JSON compact or with spaces.

    ``compact=False`` is Python's default ``json.dumps`` (``{"a": 1}``), as
    several OpenAI-compatible servers emit; ``crlf`` ends SSE lines with
    CRLF (as sse-starlette does). Each chunk carries one token per
    choice; the usage chunk (when asked for) reports
    :data:`SCRIPTED_PROMPT_TOKENS` and the completion tokens sent.
    ``last_body`` on the app's state is the body of the last request.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    separators = (",", ":") if compact else (", ", ": ")
    end = b"\r\n\r\n" if crlf else b"\n\n"

    async def generate(request: Request) -> StreamingResponse:
        body = await request.json()
        app.state.last_body = body
        chunks = _scripted_chunks(body, tool_calls)
        completion = sum(1 for c in chunks for ch in c["choices"] if _scripted_output(ch))

        async def events() -> Any:
            for chunk in chunks:
                yield b"data: " + json.dumps(chunk, separators=separators).encode() + end
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": SCRIPTED_PROMPT_TOKENS, "completion_tokens": completion,
                         "total_tokens": SCRIPTED_PROMPT_TOKENS + completion}  # fmt: skip
                last = {**chunks[0], "choices": [], "usage": usage}
                yield b"data: " + json.dumps(last, separators=separators).encode() + end
            yield b"data: [DONE]" + end

        return StreamingResponse(events(), media_type="text/event-stream")

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[
        Route("/v1/chat/completions", generate, methods=["POST"]),
        Route("/v1/completions", generate, methods=["POST"]),
        Route("/health", health),
    ])  # fmt: skip
    app.state.last_body = None
    return app


def _scripted_output(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta") or {}
    calls = delta.get("tool_calls") or ()
    return bool(choice.get("text") or delta.get("content") or delta.get("reasoning_content")
                or any(c["function"].get("arguments") for c in calls))  # fmt: skip
