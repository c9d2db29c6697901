"""A lean HTTP/1.1 client for the upstream hot path: keep-alive pools, streamed bodies.

httpx's connection pool scans every connection on each request (measured:
the gateway topped out below 200 requests/s with it on the 2-core dev box, see
BENCHMARKS.md); this client keeps a stack of idle connections per backend and
does only what the relay needs (over TCP or TLS): one POST, the status and headers, and the
body as it arrives (chunked or sized). Any failure raises
:class:`TransportError`; a request on a reused keep-alive connection that the
server had closed meanwhile is retried once on a fresh one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

_MAX_HEADER_BYTES = 65536


class TransportError(Exception):
    """The connection to the upstream failed (refused, reset, closed early, timed out, garbled)."""


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class Response:
    """Status, headers and a streamed body; ``aclose`` returns the connection to the pool."""

    __slots__ = (
        "_chunked",
        "_conn",
        "_done",
        "_left",
        "_pool",
        "_timeout_s",
        "headers",
        "status_code",
    )

    def __init__(self, pool: Http1Pool, conn: _Conn, status: int, headers: dict[str, str],
                 timeout_s: float) -> None:  # fmt: skip
        self._pool = pool
        self._conn: _Conn | None = conn
        self.status_code = status
        self.headers = headers
        self._timeout_s = timeout_s
        self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        length = headers.get("content-length")
        self._left = int(length) if length is not None and length.isdigit() else -1
        self._done = not self._chunked and self._left == 0

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (chunked framing removed)."""
        conn = self._conn
        if conn is None or self._done:
            return
        reader = conn.reader
        try:
            if self._chunked:
                while True:
                    async with asyncio.timeout(self._timeout_s):
                        line = await reader.readuntil(b"\r\n")
                        size = int(line.split(b";", 1)[0], 16)
                        data = await reader.readexactly(size + 2)
                    if size == 0:
                        self._done = True
                        return
                    yield data[:-2]
            elif self._left >= 0:
                while self._left > 0:
                    async with asyncio.timeout(self._timeout_s):
                        data = await reader.read(min(self._left, 65536))
                    if not data:
                        raise TransportError("connection closed before the end of the body")
                    self._left -= len(data)
                    yield data
                self._done = True
            else:  # body until close
                while True:
                    async with asyncio.timeout(self._timeout_s):
                        data = await reader.read(65536)
                    if not data:
                        self._done = True
                        return
                    yield data
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                TimeoutError) as exc:  # fmt: skip
            raise TransportError(f"{type(exc).__name__}: {exc}") from None

    async def aread(self) -> bytes:
        """The whole body."""
        return b"".join([piece async for piece in self.aiter_raw()])

    async def aclose(self) -> None:
        """Give the connection back when the body was read to its end; close it otherwise."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self.headers.get("connection", "").lower() != "close":
            self._pool.idle.append(conn)
        else:
            conn.close()


class Http1Pool:
    """Keep-alive connections to one ``http://host:port`` origin."""

    def __init__(self, base_url: str, connect_timeout_s: float, read_timeout_s: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or parts.hostname is None:
            raise ValueError(f"expected an http(s) URL, got {base_url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.idle: list[_Conn] = []
        self._host_header = f"{self.host}:{self.port}"

    async def _connect(self) -> _Conn:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, limit=2**20, ssl=True if self.tls else None
                )
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"cannot connect to {self._host_header}: {exc}") from None
        return _Conn(reader, writer)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Response:
        """POST ``body``; returns once the status and headers have arrived."""
        head = [f"POST {self.prefix}{path} HTTP/1.1", f"host: {self._host_header}",
                f"content-length: {len(body)}"]  # fmt: skip
        head.extend(f"{k}: {v}" for k, v in headers.items())
        message = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        for reused in (True, False):
            conn = self.idle.pop() if reused and self.idle else None
            if conn is None:
                reused = False
                conn = await self._connect()
            try:
                conn.writer.write(message)
                async with asyncio.timeout(self.read_timeout_s):
                    raw = await conn.reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    TimeoutError) as exc:  # fmt: skip
                conn.close()
                if reused and isinstance(exc, asyncio.IncompleteReadError | ConnectionError):
                    continue  # the server closed an idle keep-alive connection: try a fresh one
                raise TransportError(f"{type(exc).__name__}: {exc}") from None
            except BaseException:
                conn.close()
                raise
            return self._response(conn, raw)
        raise TransportError("unreachable")  # pragma: no cover

    def _response(self, conn: _Conn, raw: bytes) -> Response:
        try:
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                if line:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
        except (IndexError, ValueError):
            conn.close()
            raise TransportError(f"garbled response head: {raw[:80]!r}") from None
        return Response(self, conn, status, headers, self.read_timeout_s)

    def close(self) -> None:
        """Close the idle connections."""
        for conn in self.idle:
            conn.close()
        self.idle.clear()
