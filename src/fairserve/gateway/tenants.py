"""Tenants at the gateway: API-key authentication and per-tenant rate limits.

Keys are kept only as SHA-256 digests. A presented key is hashed and compared
with every tenant's digest using ``hmac.compare_digest``, without stopping at
the first match, so the time taken does not tell which tenant (if any) a key
is close to.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping

from fairserve.core.model import Tenant
from fairserve.gateway.config import GatewayConfig, LimitsConfig
from fairserve.gateway.errors import APIError


class TokenBucket:
    """``per_min`` units a minute, with a burst of one minute's worth."""

    __slots__ = ("capacity", "level", "rate_per_s", "stamp_s")

    def __init__(self, per_min: float, now_s: float) -> None:
        self.capacity = per_min
        self.rate_per_s = per_min / 60.0
        self.level = per_min
        self.stamp_s = now_s

    def _refill(self, now_s: float) -> None:
        if now_s > self.stamp_s:
            self.level = min(self.capacity, self.level + (now_s - self.stamp_s) * self.rate_per_s)
            self.stamp_s = now_s

    def wait_s(self, amount: float, now_s: float) -> float:
        """Seconds until ``amount`` is available (0 when it is now)."""
        self._refill(now_s)
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / self.rate_per_s

    def take(self, amount: float, now_s: float) -> None:
        """Take ``amount`` (call ``wait_s`` first)."""
        self._refill(now_s)
        self.level -= amount

    def headers(self, kind: str, now_s: float) -> list[tuple[bytes, bytes]]:
        """OpenAI's ``x-ratelimit-{limit,remaining,reset}-<kind>`` headers for this bucket."""
        self._refill(now_s)
        reset_s = max(0.0, self.capacity - self.level) / self.rate_per_s
        return [
            (b"x-ratelimit-limit-" + kind.encode(), b"%d" % self.capacity),
            (b"x-ratelimit-remaining-" + kind.encode(), b"%d" % max(0, math.floor(self.level))),
            (b"x-ratelimit-reset-" + kind.encode(), duration(reset_s).encode()),
        ]


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: ``1s``, ``6m0s``, ``20ms``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


class TenantState:
    """One tenant's configuration and live counters."""

    __slots__ = ("active", "core", "digest", "last_end_s", "limits", "name", "queued",
                 "requests", "tokens")  # fmt: skip

    def __init__(
        self, name: str, core: Tenant, digest: bytes, limits: LimitsConfig, now_s: float
    ) -> None:
        self.name = name
        self.core = core
        self.digest = digest
        self.limits = limits
        self.queued = 0  # waiting for a backend
        self.active = 0  # admitted and not ended (queued, in flight)
        self.last_end_s = -math.inf  # when its last admitted request ended
        self.requests = (
            TokenBucket(limits.requests_per_min, now_s) if limits.requests_per_min else None
        )
        self.tokens = TokenBucket(limits.tokens_per_min, now_s) if limits.tokens_per_min else None

    def ratelimit_headers(self, now_s: float) -> list[tuple[bytes, bytes]]:
        """The tenant's rate-limit headers (none for limits it does not have)."""
        out: list[tuple[bytes, bytes]] = []
        if self.requests is not None:
            out += self.requests.headers("requests", now_s)
        if self.tokens is not None:
            out += self.tokens.headers("tokens", now_s)
        return out


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def rate_limited(tenant: TenantState, wait_s: float) -> APIError:
    """The 429 of a tenant over its request or token rate, retry in ``wait_s``."""
    return APIError(
        429,
        f"Rate limit reached for tenant {tenant.name!r}; retry in {math.ceil(wait_s)} s.",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers=_retry_after(wait_s),
    )


class Tenants:
    """All tenants: authentication and admission limits."""

    def __init__(self, config: GatewayConfig, now_s: float) -> None:
        core = config.core_tenants()
        self.by_name: Mapping[str, TenantState] = {
            name: TenantState(name, core[name], t.key_digest(), t.limits, now_s)
            for name, t in config.tenants.items()
        }
        self._all = list(self.by_name.values())

    def authenticate(self, authorization: str | None) -> TenantState:
        """The tenant whose key is in ``Authorization: Bearer <key>``, or a 401."""
        if not authorization:
            raise APIError(401, "Missing API key: send 'Authorization: Bearer <key>'.",
                           type="authentication_error", code="missing_api_key")  # fmt: skip
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(401, "Malformed Authorization header: expected 'Bearer <key>'.",
                           type="authentication_error", code="invalid_api_key")  # fmt: skip
        digest = hashlib.sha256(key.strip().encode()).digest()
        found: TenantState | None = None
        for tenant in self._all:  # no early exit: constant time in the matching position
            if hmac.compare_digest(digest, tenant.digest):
                found = tenant
        if found is None:
            raise APIError(401, "Incorrect API key provided.",
                           type="authentication_error", code="invalid_api_key")  # fmt: skip
        return found

    @classmethod
    def admit(cls, tenant: TenantState, prompt_tokens: int, max_tokens: int, now_s: float) -> None:
        """Check the tenant's limits for one request and charge its buckets; 400/429 if over."""
        cls.check(tenant, prompt_tokens, max_tokens, now_s)
        cls.charge(tenant, prompt_tokens, max_tokens, now_s)

    @staticmethod
    def check(tenant: TenantState, prompt_tokens: int, max_tokens: int, now_s: float) -> None:
        """Raise the 400/429 the tenant's limits give one request; charge nothing."""
        Tenants.check_request(tenant, prompt_tokens, max_tokens, tenant.queued)
        wait = 0.0
        if tenant.requests is not None:
            wait = tenant.requests.wait_s(1, now_s)
        if tenant.tokens is not None:
            wait = max(wait, tenant.tokens.wait_s(prompt_tokens + max_tokens, now_s))
        if wait > 0:
            raise rate_limited(tenant, wait)

    @staticmethod
    def check_request(
        tenant: TenantState,
        prompt_tokens: int,
        max_tokens: int,
        queued: int,
        prompt_param: str = "messages",
    ) -> None:
        """The limits that do not depend on rates: prompt size, request size, queue cap.

        ``queued``: the tenant's requests queued (over the fleet, with shared state).
        ``prompt_param``: the body field that holds the prompt, named by a 400.
        """
        limits = tenant.limits
        if limits.max_prompt_tokens is not None and prompt_tokens > limits.max_prompt_tokens:
            raise APIError(
                400,
                f"The prompt has about {prompt_tokens} tokens; tenant {tenant.name!r} allows at "
                f"most {limits.max_prompt_tokens}.",
                param=prompt_param,
                code="prompt_too_long",
            )
        if limits.max_queued is not None and queued >= limits.max_queued:
            raise APIError(
                429,
                f"Too many queued requests for tenant {tenant.name!r} "
                f"(max_queued={limits.max_queued}); retry later.",
                type="rate_limit_error",
                code="queue_full",
                headers=_retry_after(1),
            )
        cost_tokens = prompt_tokens + max_tokens
        if tenant.tokens is not None and cost_tokens > tenant.tokens.capacity:
            raise APIError(
                400,
                f"The request needs {cost_tokens} tokens (prompt + max_tokens), more than "
                f"tenant {tenant.name!r}'s tokens_per_min ({tenant.tokens.capacity:g}); lower "
                "max_tokens.",
                param="max_tokens",
                code="request_too_large",
            )

    @staticmethod
    def charge(tenant: TenantState, prompt_tokens: int, max_tokens: int, now_s: float) -> None:
        """Take one admitted request from the tenant's buckets (after :meth:`check`)."""
        if tenant.requests is not None:
            tenant.requests.take(1, now_s)
        if tenant.tokens is not None:
            tenant.tokens.take(prompt_tokens + max_tokens, now_s)
