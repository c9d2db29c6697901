"""``fairserve engine``: a simulated OpenAI-compatible engine server.

It runs the simulator's engine model (continuous batching, a token budget per
step, chunked prefill, a paged KV cache with recompute preemption) in real
time through :class:`~fairserve.engine_server.realtime.RealtimeEngine` and
streams each token at the time the model says it is sampled.

What it generates: the text echoes the words of the prompt (the last user
message for chat), one word per token, cyclically, so a client can tell its
own answer from anyone else's. Output length: ``max_tokens`` tokens (default
``default_max_tokens``), as if ``ignore_eos`` were set; a request that sends
``"ignore_eos": false`` stops early, after a length drawn deterministically
from its prompt text in ``1..max_tokens`` (finish reason ``stop``). The
``priority`` field is accepted and ignored (the engine queue is FCFS).

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``,
``GET /v1/models``, ``GET /health``, ``GET /metrics`` in current vLLM's names
and buckets (:mod:`.metrics`), and ``GET /server_info`` in the shape of vLLM's
development endpoint (``vllm_config.scheduler_config.policy``: ``fcfs``), so
a gateway can check how the engine schedules.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fairserve.core.model import Request
from fairserve.engine_server.metrics import engine_registry, render
from fairserve.engine_server.realtime import RealtimeEngine, TokenStream
from fairserve.gateway.asgi import DisconnectWatch, EventStream
from fairserve.gateway.errors import APIError, bad_request
from fairserve.gateway.protocol import Endpoint, ParsedRequest, not_found_model, parse_request
from fairserve.sim.config import EngineConfig
from fairserve.sim.cost import cost_model

_MAX_ECHO_WORDS = 256


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """What ``fairserve engine`` serves and how fast."""

    model: str = "Qwen2.5-1.5B"
    gpu: str = "H100-80GB"
    tp: int = 1
    engine: EngineConfig = field(default_factory=EngineConfig)
    time_scale: float = 1.0
    default_max_tokens: int = 256
    served_model_name: str | None = None

    @property
    def model_name(self) -> str:
        """The name clients must send in ``model``."""
        return self.served_model_name or self.model


class _Generation:
    """One request's output: its words and the SSE encoding of its chunks."""

    def __init__(self, parsed: ParsedRequest, rid: str, model: str, output_tokens: int) -> None:
        words = parsed.text.split()[:_MAX_ECHO_WORDS] or ["tok"]
        self.words = [" " + w for w in words]
        self.parsed = parsed
        self.output_tokens = output_tokens
        self.max_tokens = parsed.max_tokens
        self.chat = parsed.endpoint is Endpoint.CHAT
        self.rid = rid
        self.created = int(time.time())
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        head = json.dumps(
            {"id": rid, "object": obj, "created": self.created, "model": model},
            separators=(",", ":"),
        )
        self._head = b"data: " + head[:-1].encode() + b',"choices":[{"index":0,'
        self.model = model

    def word(self, i: int) -> str:
        return self.words[i % len(self.words)]

    def text(self, n: int) -> str:
        return "".join(self.word(i) for i in range(n))

    def finish_reason(self, produced: int) -> str:
        return "length" if produced >= (self.max_tokens or self.output_tokens) else "stop"

    def chunk(self, i: int) -> bytes:
        """The SSE event of token ``i`` (0-based)."""
        text = json.dumps(self.word(i)).encode()
        if self.chat:
            role = b'"role":"assistant",' if i == 0 else b""
            body = b'"delta":{' + role + b'"content":' + text + b"}"
        else:
            body = b'"text":' + text
        return self._head + body + b',"logprobs":null,"finish_reason":null}]}\n\n'

    def final_chunk(self, produced: int) -> bytes:
        reason = self.finish_reason(produced).encode()
        body = b'"delta":{}' if self.chat else b'"text":""'
        return self._head + body + b',"logprobs":null,"finish_reason":"' + reason + b'"}]}\n\n'

    def usage(self, produced: int) -> dict[str, int]:
        prompt = self.parsed.prompt_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": produced,
            "total_tokens": prompt + produced,
        }

    def usage_chunk(self, produced: int) -> bytes:
        usage = json.dumps(self.usage(produced), separators=(",", ":")).encode()
        head = self._head[: -len(b'"choices":[{"index":0,')]
        return head + b'"choices":[],"usage":' + usage + b"}\n\n"

    def full_body(self, produced: int) -> dict[str, object]:
        text = self.text(produced)
        choice: dict[str, object] = {"index": 0, "logprobs": None}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice["finish_reason"] = self.finish_reason(produced)
        return {
            "id": self.rid,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": self.usage(produced),
        }


def _max_token_id(prompt: object) -> int:
    """The largest token id of a prompt given as ids (also a batch of one); -1 for text."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list | str):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return max(prompt)
    return -1


class EngineServer:
    """The HTTP face of one :class:`RealtimeEngine`."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        cost = cost_model(settings.gpu, settings.model, settings.tp)
        self.max_model_len = settings.engine.max_model_len or cost.model.max_model_len
        self.vocab_size = cost.model.vocab_size
        self.engine = RealtimeEngine(cost, settings.engine, time_scale=settings.time_scale)
        self._ids = itertools.count()
        self.requests_total = 0
        self.cancelled_total = 0
        self.finished: Counter[str] = Counter()  # by vLLM's finished_reason
        self.registry = engine_registry(self.engine, settings.model_name, self.finished)

    # ----------------------------------------------------------- helpers
    def _output_tokens(self, parsed: ParsedRequest) -> int:
        max_tokens = parsed.max_tokens or self.settings.default_max_tokens
        if parsed.prompt_tokens + max_tokens > self.max_model_len:
            raise bad_request(
                f"This model's maximum context length is {self.max_model_len} tokens; the "
                f"request has {parsed.prompt_tokens} prompt tokens and asks for {max_tokens} "
                "completion tokens. Reduce the prompt or max_tokens.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        if parsed.ignore_eos is False:  # "stop early": a length fixed by the prompt text
            return 1 + zlib.crc32(parsed.text.encode()) % max_tokens
        return max_tokens

    def _admit(self, parsed: ParsedRequest) -> tuple[_Generation, TokenStream]:
        if parsed.model != self.settings.model_name:
            raise not_found_model(parsed.model, [self.settings.model_name])
        if parsed.n != 1:
            raise bad_request("the simulated engine serves n = 1 only", param="n")
        if parsed.prompts != 1:
            raise bad_request("the simulated engine serves one prompt per request", param="prompt")
        top = _max_token_id(parsed.body.get("prompt"))
        if top >= self.vocab_size:  # as vLLM answers it
            raise bad_request(f"Token id {top} is out of vocabulary (the model has "
                              f"{self.vocab_size} tokens)", param="prompt")  # fmt: skip
        output_tokens = self._output_tokens(parsed)
        n = next(self._ids)
        prefix = "chatcmpl" if parsed.endpoint is Endpoint.CHAT else "cmpl"
        gen = _Generation(parsed, f"{prefix}-sim{n}", self.settings.model_name, output_tokens)
        req = Request(n, self.engine.now(), parsed.prompt_tokens, output_tokens,
                      max_tokens=parsed.max_tokens, model=parsed.model)  # fmt: skip
        stream = self.engine.submit(req)
        if stream.failed_reason is not None:
            raise bad_request(f"the request cannot be served: {stream.failed_reason}",
                              code="context_length_exceeded")  # fmt: skip
        self.requests_total += 1
        return gen, stream

    def _cancel(self, stream: TokenStream) -> None:
        if not stream.done:
            self.cancelled_total += 1
            self.finished["abort"] += 1
            self.engine.cancel(stream)

    def _finished(self, gen: _Generation, stream: TokenStream) -> None:
        reason = "error" if stream.failed_reason is not None else gen.finish_reason(stream.produced)
        self.finished[reason] += 1

    # ----------------------------------------------------------- endpoints
    async def generate(self, request: HTTPRequest, endpoint: Endpoint) -> Response | EventStream:
        try:
            parsed = parse_request(endpoint, await request.body())
            gen, stream = self._admit(parsed)
        except APIError as exc:
            return exc.response()
        watch = DisconnectWatch(request.receive)
        if parsed.stream:
            return EventStream(self._chunks(gen, stream), watch)
        try:
            seen = 0
            while not stream.done:
                seen = await stream.wait(seen)
        except BaseException:
            self._cancel(stream)
            if watch.gone:
                watch.absorb()
                return Response(status_code=499)
            raise
        finally:
            watch.finish()
        self._finished(gen, stream)
        if stream.failed_reason is not None:
            return APIError(503, stream.failed_reason, type="server_error").response()
        return JSONResponse(gen.full_body(stream.produced))

    async def _chunks(self, gen: _Generation, stream: TokenStream) -> AsyncIterator[bytes]:
        sent = 0
        try:
            while not stream.done or sent < stream.produced:
                produced = await stream.wait(sent)
                if produced > sent:
                    yield b"".join(gen.chunk(i) for i in range(sent, produced))
                    sent = produced
            self._finished(gen, stream)
            if stream.failed_reason is not None:
                yield APIError(503, stream.failed_reason, type="server_error").sse_event()
            else:
                tail = gen.final_chunk(sent)
                if gen.parsed.include_usage:
                    tail += gen.usage_chunk(sent)
                yield tail
            yield b"data: [DONE]\n\n"
        finally:
            self._cancel(stream)

    async def chat(self, request: HTTPRequest) -> Response | EventStream:
        return await self.generate(request, Endpoint.CHAT)

    async def completions(self, request: HTTPRequest) -> Response | EventStream:
        return await self.generate(request, Endpoint.COMPLETIONS)

    async def models(self, request: HTTPRequest) -> Response:
        name = self.settings.model_name
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "fairserve-sim",
             "max_model_len": self.max_model_len}]})  # fmt: skip

    async def health(self, request: HTTPRequest) -> Response:
        return Response(status_code=200)

    async def metrics(self, request: HTTPRequest) -> Response:
        return Response(render(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def server_info(self, request: HTTPRequest) -> Response:
        config = {
            "scheduler_config": {"policy": "fcfs"},
            "model_config": {
                "model": self.settings.model_name,
                "max_model_len": self.max_model_len,
            },
        }
        return JSONResponse({"vllm_config": config})

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.engine.start()
        try:
            yield
        finally:
            await self.engine.stop()


def create_engine_app(settings: EngineSettings) -> Starlette:
    """The ASGI app of a simulated engine (raises ``UnknownProfileError`` for unknown names)."""
    server = EngineServer(settings)
    routes = [
        Route("/v1/chat/completions", server.chat, methods=["POST"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/health", server.health, methods=["GET"]),
        Route("/healthz", server.health, methods=["GET"]),
        Route("/metrics", server.metrics, methods=["GET"]),
        Route("/server_info", server.server_info, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=server.lifespan)
    app.state.server = server
    return app
