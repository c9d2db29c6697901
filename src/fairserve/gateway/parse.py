"""The first step of the request path: who is asking, and for what.

The API key names the tenant (:meth:`.Tenants.authenticate`, a 401
otherwise); the body is validated as an OpenAI request and its prompt tokens
estimated (:func:`.protocol.parse_request`, a 400 naming the field); a model
the gateway does not serve is a 404. Errors raised after authentication carry
the tenant's name for the ``rejected_*`` metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

from fairserve.gateway.errors import APIError
from fairserve.gateway.protocol import Endpoint, ParsedRequest, not_found_model, parse_request
from fairserve.gateway.tenants import Tenants, TenantState


def parse(
    tenants: Tenants,
    models: Sequence[str],
    authorization: str | None,
    endpoint: Endpoint,
    raw: bytes,
) -> tuple[TenantState, ParsedRequest]:
    """The tenant and its validated request, or an :class:`APIError` (401, 400, 404)."""
    tenant = tenants.authenticate(authorization)
    try:
        parsed = parse_request(endpoint, raw)
        if models and parsed.model not in models:
            raise not_found_model(parsed.model, list(models))
    except APIError as exc:
        exc.tenant = tenant.name
        raise
    return tenant, parsed
