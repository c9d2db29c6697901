"""The first step of the request path: who is asking, and for what.

In this order, so that a stranger costs no more than its headers: the API key
names the tenant (:meth:`.Tenants.authenticate`, a 401 before any of the body
is read); the body is read incrementally up to ``limits.max_body_bytes`` (413
as soon as it is exceeded) within ``limits.body_timeout_s`` (408); it is
validated as an OpenAI request and its prompt tokens estimated
(:func:`.protocol.parse_request`, a 400 naming the field); a model the
gateway does not serve is a 404. Errors raised after authentication carry the
tenant's name for the ``rejected_*`` metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from starlette.requests import ClientDisconnect
from starlette.requests import Request as HTTPRequest

from fairserve.gateway.config import EdgeLimitsConfig
from fairserve.gateway.errors import APIError
from fairserve.gateway.protocol import Endpoint, ParsedRequest, not_found_model, parse_request
from fairserve.gateway.tenants import Tenants, TenantState

#: Sent with an answer given before the body was read: the rest of it is not wanted.
CLOSE = {"Connection": "close"}


def authenticate(tenants: Tenants, authorization: str | None) -> TenantState:
    """The tenant the key names, or a 401 that closes the connection (its body unread)."""
    try:
        return tenants.authenticate(authorization)
    except APIError as exc:
        exc.headers.update(CLOSE)
        raise


def body_too_large(max_body_bytes: int) -> APIError:
    """413: the body exceeds ``limits.max_body_bytes``."""
    return APIError(413, f"the request body exceeds {max_body_bytes} bytes",
                    code="request_too_large", headers=CLOSE)  # fmt: skip


async def read_body(request: HTTPRequest, limits: EdgeLimitsConfig) -> bytes:
    """The body, read a chunk at a time; 413 at the first byte over the cap, 408 if too
    slow, 499 (nginx's "client closed request", answered to no one) if the client left."""
    cap = limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise body_too_large(cap)  # known at once: read nothing
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    raise body_too_large(cap)
                chunks.append(chunk)
    except TimeoutError:
        raise APIError(408, f"the request body did not arrive within {limits.body_timeout_s:g} s",
                       code="request_timeout", headers=CLOSE) from None  # fmt: skip
    except ClientDisconnect:
        raise APIError(499, "the client closed the connection before its body arrived",
                       code="client_closed", headers=CLOSE) from None  # fmt: skip
    return b"".join(chunks)


def parse(
    tenant: TenantState,
    models: Sequence[str],
    endpoint: Endpoint,
    raw: bytes,
    max_json_depth: int,
) -> ParsedRequest:
    """The tenant's validated request, or an :class:`APIError` (400, 404)."""
    try:
        parsed = parse_request(endpoint, raw, max_json_depth)
        if models and parsed.model not in models:
            raise not_found_model(parsed.model, list(models))
    except APIError as exc:
        exc.tenant = tenant.name
        raise
    return parsed
