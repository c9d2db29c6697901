"""``x-request-id`` in and out, and per-request headers added to whatever answer is sent.

A client's ``x-request-id`` (printable ASCII, at most 128 characters) is kept;
otherwise the gateway makes one. It is sent back on every answer (errors
included), passed to the backend as ``X-Request-Id`` and kept on the flight,
so one id follows a request through the gateway's and the engine's logs.
Handlers add headers of their own (the tenant's rate-limit headers) to
``scope["state"]["fairserve_headers"]``; they are added at the answer's start.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_VALID = re.compile(rb"[\x21-\x7e]{1,128}")
HEADERS_KEY = "fairserve_headers"
ID_KEY = "fairserve_request_id"


def request_id(scope: Scope) -> str:
    """The id of the request in ``scope`` (set by :class:`RequestId`)."""
    state: dict[str, Any] = scope.get("state") or {}
    return str(state.get(ID_KEY) or "")


def add_headers(scope: Scope, headers: list[tuple[bytes, bytes]]) -> None:
    """Headers to add to this request's answer, whichever it turns out to be."""
    scope.setdefault("state", {}).setdefault(HEADERS_KEY, []).extend(headers)


class RequestId:
    """ASGI middleware: the request's id, echoed with any per-request headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        rid = given.decode() if given is not None and _VALID.fullmatch(given) else None
        rid = rid or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state[ID_KEY] = rid

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-request-id", rid.encode()), *state.get(HEADERS_KEY, ())]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
