"""Limits at the edge: what the HTTP server enforces before the app sees a request.

uvicorn's h11 protocol bounds the request line and headers together
(``h11_max_incomplete_event_size``) but answers a plain-text 400 when they are
too long, and it has no timeout for a request that arrives a byte at a time
(slowloris): its keep-alive timer only runs between requests. The protocol
here adds both: an OpenAI-shaped 431 for oversized headers, and a deadline
for the request line and headers from the connection's first moment (or the
next request's first byte). The body's limits (size, time) and the header
count are checked by the app (:mod:`.parse`, :class:`.asgi.HeaderLimit`).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from fairserve.gateway.config import EdgeLimitsConfig
from fairserve.gateway.errors import APIError


def headers_too_large(max_header_bytes: int) -> APIError:
    """431: the request line and headers exceed ``limits.max_header_bytes``."""
    return APIError(431, f"the request headers exceed {max_header_bytes} bytes",
                    code="headers_too_large", headers={"Connection": "close"})  # fmt: skip


class EdgeProtocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a JSON 431.

    Subclass it with :func:`edge_protocol` to set the limits.
    """

    header_timeout_s: float = 10.0
    max_header_bytes: int = 16 * 2**10

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the headers are in (or the request failed)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 could not parse, as a JSON 400 or 431."""
        if len(self.conn.trailing_data[0]) > self.max_header_bytes:
            error = headers_too_large(self.max_header_bytes)
        else:
            error = APIError(400, "the HTTP request is malformed", code="bad_http_request",
                             headers={"Connection": "close"})  # fmt: skip
        self._send_error(error)

    def _send_error(self, error: APIError) -> None:
        body = json.dumps(error.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        for data in (
            self.conn.send(h11.Response(status_code=error.status, headers=headers)),
            self.conn.send(h11.Data(data=body)),
            self.conn.send(h11.EndOfMessage()),
        ):
            if data:
                self.transport.write(data)
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        # No answer: a client this slow is not reading one; closing frees the socket.
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def edge_protocol(limits: EdgeLimitsConfig) -> type[EdgeProtocol]:
    """The protocol class for uvicorn's ``http=`` with these limits."""
    return type(
        "ConfiguredEdgeProtocol",
        (EdgeProtocol,),
        {"header_timeout_s": limits.header_timeout_s, "max_header_bytes": limits.max_header_bytes},
    )


def uvicorn_limits(limits: EdgeLimitsConfig) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments that enforce ``limits``."""
    return {
        "http": edge_protocol(limits),
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "limit_concurrency": limits.max_connections,
        "timeout_keep_alive": math.ceil(limits.idle_timeout_s),
    }
