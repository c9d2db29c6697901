"""Two small ASGI pieces: a client-disconnect watch and a lean event-stream response.

Starlette's ``StreamingResponse`` listens for disconnects with a task group per
response; the gateway's hot path does the same with one watcher task that
cancels the request's own task when the client goes away, so that waiting in
the queue, waiting for the upstream and streaming are all interrupted the
same way, and the upstream request is closed by the ``finally`` blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from starlette.types import Receive, Scope, Send

from fairserve.gateway.errors import APIError

#: How an OpenAI-style event stream ends; nothing after it is for the client.
END_OF_STREAM = b"data: [DONE]\n\n"

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class DisconnectWatch:
    """Cancels the current task when the client disconnects.

    Start it only once the request body has been read: it consumes
    ``receive``. ``gone`` tells a ``CancelledError`` caused by the client apart
    from one caused by shutdown; ``finish`` must be called before the last
    body message, after which a disconnect is normal and ignored.
    """

    __slots__ = ("_task", "_watcher", "aborted", "finished", "gone")

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self.aborted = False
        self.finished = False
        task = asyncio.current_task()
        assert task is not None, "DisconnectWatch needs a running task"
        self._task = task
        self._watcher = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if not self.finished:
            self.gone = True
            self._task.cancel()

    def finish(self) -> None:
        """The response is complete (or about to be): stop watching."""
        self.finished = True
        self._watcher.cancel()

    def abort(self) -> None:
        """Interrupt the request from the server side (shutdown after the grace period)."""
        if not self.finished and not self.gone:
            self.aborted = True
            self._task.cancel()

    def absorb(self) -> None:
        """Undo the cancellation this watch caused (call in ``except CancelledError``)."""
        self._task.uncancel()


class EventStream:
    """An ASGI response that streams ``chunks`` and stops when the client leaves.

    ``on_end(gone)`` runs exactly once after the stream ends, with ``gone``
    True if the client disconnected first. When the server aborts the stream
    (``watch.abort()``), ``abort_event`` is sent as the last body message.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        watch: DisconnectWatch,
        *,
        headers: Mapping[str, str] | None = None,
        on_end: Callable[[bool], None] | None = None,
        abort_event: bytes = b"",
    ) -> None:
        self.chunks = chunks
        self.watch = watch
        self.headers = SSE_HEADERS + [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        self.on_end = on_end
        self.abort_event = abort_event

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = self.watch
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            complete = False
            async for chunk in self.chunks:
                if complete:
                    continue  # past [DONE]: read to the end (the upstream connection is reused)
                if chunk.endswith(END_OF_STREAM):
                    # The stream's last event: sent as the last body message, so the
                    # server writes it and the end of the chunked body at once.
                    watch.finish()
                    complete = True
                    await send({"type": "http.response.body", "body": chunk, "more_body": False})
                    continue
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not complete:
                watch.finish()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not (watch.gone or watch.aborted):
                raise
            watch.absorb()
            if watch.aborted:  # tell the client why its stream ends here
                watch.finish()
                with contextlib.suppress(OSError):
                    await send({"type": "http.response.body", "body": self.abort_event,
                                "more_body": False})  # fmt: skip
        except OSError:  # the transport failed under us: the client is gone as well
            watch.gone = True
        finally:
            watch.finish()
            aclose: Any = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            if self.on_end is not None:
                self.on_end(watch.gone)


class HeaderLimit:
    """ASGI middleware: more than ``max_count`` headers, or more than ``max_bytes`` of them, is a 431.

    The server refuses headers that arrive in pieces beyond ``max_bytes``
    (:mod:`.edge`) as they are parsed; their size is checked here too,
    with their count.
    """

    def __init__(self, app: Any, max_count: int, max_bytes: int) -> None:
        self.app = app
        self.max_count = max_count
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = self._check(scope["headers"])
            if error is not None:
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _check(self, headers: list[tuple[bytes, bytes]]) -> APIError | None:
        if len(headers) > self.max_count:
            return APIError(431, f"the request has more than {self.max_count} headers",
                            code="too_many_headers", headers={"Connection": "close"})  # fmt: skip
        if sum(len(k) + len(v) for k, v in headers) > self.max_bytes:
            return APIError(431, f"the request headers exceed {self.max_bytes} bytes",
                            code="headers_too_large", headers={"Connection": "close"})  # fmt: skip
        return None
