"""Limits at the edge: what the HTTP server enforces before the app sees a request.

uvicorn's httptools protocol (llhttp, in C: the fastest parser uvicorn has)
neither bounds the request line and headers (a client may send megabytes of
them) nor times them out (slowloris: its keep-alive timer only runs between
requests), and it answers a malformed request with plain text. The protocol
here adds a bound on the bytes of the request line and headers (an
OpenAI-shaped 431 as soon as it is passed), a deadline for them from the
connection's first moment (or the next request's first byte), JSON 400s, and
a deadline for a client that stops reading its answer (the server's writes
paused that long: the connection is dropped, which frees the socket and, for
a stream, the engine slot it holds).
The body's limits (size, time) and the header count are checked by the app
(:mod:`.parse`, :class:`.asgi.HeaderLimit`).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fairserve.gateway.config import EdgeLimitsConfig
from fairserve.gateway.errors import APIError


def headers_too_large(max_header_bytes: int) -> APIError:
    """431: the request line and headers exceed ``limits.max_header_bytes``."""
    return APIError(431, f"the request headers exceed {max_header_bytes} bytes",
                    code="headers_too_large", headers={"Connection": "close"})  # fmt: skip


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header bound, a header deadline and JSON errors.

    Subclass it with :func:`edge_protocol` to set the limits.
    """

    header_timeout_s: float = 10.0
    max_header_bytes: int = 16 * 2**10
    write_stall_timeout_s: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # request line and headers of the request being parsed
        self._too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self.cycle is None:
            self._arm()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        if self._too_large:
            self.send_400_response("headers too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._header_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        if not self._too_large:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        if not self._too_large:  # past the bound nothing more is kept
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        if not self._too_large:  # else no request starts; the 431 follows
            super().on_headers_complete()

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.max_header_bytes:
            self._too_large = True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._unstall()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        # The transport's buffer is over its high-water mark: the client is not
        # taking its answer as fast as it comes. It has until the deadline to
        # take some (resume_writing) before the connection is dropped.
        super().pause_writing()
        self._unstall()
        self._stall_timer = self.loop.call_later(self.write_stall_timeout_s, self._write_stalled)

    def resume_writing(self) -> None:
        self._unstall()
        super().resume_writing()

    def _unstall(self) -> None:
        _cancel(self._stall_timer)
        self._stall_timer = None

    def _write_stalled(self) -> None:
        # abort, not close: close would wait for the unsent bytes the client
        # is not reading. The app then sees a disconnect and ends the request.
        self._stall_timer = None
        if not self.transport.is_closing():
            self.transport.abort()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # Past max_connections uvicorn answers with its own plain-text 503.
        super()._start_asgi_task(cycle, _over_capacity if app is service_unavailable else app)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it could not parse, as a JSON 400 or 431."""
        if self.transport.is_closing():
            return
        if self._too_large:
            error = headers_too_large(self.max_header_bytes)
        else:
            error = APIError(400, "the HTTP request is malformed", code="bad_http_request",
                             headers={"Connection": "close"})  # fmt: skip
        body = json.dumps(error.body()).encode()
        head = (f"HTTP/1.1 {error.status} {_REASONS.get(error.status, 'Error')}\r\n"
                "content-type: application/json\r\nconnection: close\r\n"
                f"content-length: {len(body)}\r\n\r\n").encode()  # fmt: skip
        self.transport.write(head + body)
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _disarm(self) -> None:
        _cancel(self._header_timer)
        self._header_timer = None

    def _header_timeout(self) -> None:
        # No answer: a client this slow is not reading one; closing frees the socket.
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


_REASONS = {400: "Bad Request", 431: "Request Header Fields Too Large"}


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    """Cancel ``timer`` if it is set."""
    if timer is not None:
        timer.cancel()


async def _over_capacity(scope: Any, receive: Any, send: Any) -> None:
    """503 in the OpenAI shape when the server holds ``limits.max_connections`` already."""
    error = APIError(503, "The gateway is at its connection limit; retry shortly.",
                     type="server_error", code="too_many_connections",
                     headers={"Retry-After": "1", "Connection": "close"})  # fmt: skip
    await error.response()(scope, receive, send)


def edge_protocol(limits: EdgeLimitsConfig) -> type[EdgeProtocol]:
    """The protocol class for uvicorn's ``http=`` with these limits."""
    return type(
        "ConfiguredEdgeProtocol",
        (EdgeProtocol,),
        {
            "header_timeout_s": limits.header_timeout_s,
            "max_header_bytes": limits.max_header_bytes,
            "write_stall_timeout_s": limits.write_stall_timeout_s,
        },
    )


def uvicorn_limits(limits: EdgeLimitsConfig) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments that enforce ``limits``."""
    return {
        "http": edge_protocol(limits),
        "limit_concurrency": limits.max_connections,
        "timeout_keep_alive": math.ceil(limits.idle_timeout_s),
    }
