"""OpenAI-shaped HTTP errors: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.responses import Response


class APIError(Exception):
    """An error answered to the client with an OpenAI-compatible body.

    ``type`` follows OpenAI's names (``invalid_request_error``,
    ``authentication_error``, ``rate_limit_error``, ``server_error`` ...);
    ``headers`` carries e.g. ``Retry-After``.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.tenant = ""  # the tenant it concerns, once known (for the metrics label)

    def body(self) -> dict[str, dict[str, str | None]]:
        """The JSON error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> Response:
        """The HTTP response carrying this error."""
        return Response(
            json.dumps(self.body()),
            status_code=self.status,
            headers=self.headers,
            media_type="application/json",
        )

    def sse_event(self) -> bytes:
        """The error as one server-sent event (for a stream that already started)."""
        return b"data: " + json.dumps(self.body()).encode() + b"\n\n"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """400: the request body is not acceptable."""
    return APIError(400, message, param=param, code=code)
