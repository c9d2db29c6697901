"""The gateway's configuration file (YAML), validated by pydantic.

Errors name the key (``tenants.batch.limits.requests_per_min: Input should be
greater than 0``). Building a config does no I/O; :func:`load_config` reads
the file. API keys are hashed (SHA-256) as soon as the config is built: give
either ``api_key`` (plain, for demos) or ``api_key_sha256`` (the hex digest,
for production: ``printf %s "$KEY" | sha256sum``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fairserve.core.model import SLO, Tenant


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file and the key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SLOConfig(_Model):
    """Latency objectives of a tenant's requests (seconds)."""

    name: str | None = None
    ttft_s: float | None = Field(default=None, gt=0)
    tpot_s: float | None = Field(default=None, gt=0)
    e2e_s: float | None = Field(default=None, gt=0)


class LimitsConfig(_Model):
    """Per-tenant admission limits; ``None`` means unlimited."""

    requests_per_min: float | None = Field(default=None, gt=0)
    tokens_per_min: float | None = Field(default=None, gt=0)
    max_queued: int | None = Field(default=None, ge=0)
    max_prompt_tokens: int | None = Field(default=None, ge=1)
    max_queue_wait_s: float = Field(default=60.0, gt=0)


class TenantConfig(_Model):
    """One tenant: its key, weight, priority (0 = most urgent), SLO and limits."""

    api_key: str | None = Field(default=None, min_length=1, repr=False)
    api_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    weight: float = Field(default=1.0, gt=0)
    priority: int = 0
    slo: SLOConfig = SLOConfig()
    limits: LimitsConfig = LimitsConfig()

    @model_validator(mode="after")
    def _one_key(self) -> TenantConfig:
        if (self.api_key is None) == (self.api_key_sha256 is None):
            raise ValueError("give exactly one of api_key or api_key_sha256")
        return self

    def key_digest(self) -> bytes:
        """The SHA-256 digest of the tenant's API key."""
        if self.api_key_sha256 is not None:
            return bytes.fromhex(self.api_key_sha256)
        assert self.api_key is not None
        return hashlib.sha256(self.api_key.encode()).digest()

    def tenant(self, name: str) -> Tenant:
        """The core's view of this tenant."""
        slo = self.slo
        return Tenant(
            name=name,
            weight=self.weight,
            priority=self.priority,
            slo=SLO(slo.name or name, slo.ttft_s, slo.tpot_s, slo.e2e_s),
        )


class BackendConfig(_Model):
    """One upstream engine instance.

    ``max_concurrency``: requests in flight at most. ``max_tokens_in_flight``:
    prompt + max_tokens of the requests in flight at most (a token window).
    ``metrics``: read the engine's own /metrics to keep its queue short
    (``auto`` recognises vLLM and SGLang names; ``off`` uses the static limits
    only). ``priority``: send the tenant's priority in the ``priority`` field
    (vLLM started with ``--scheduling-policy priority``).
    """

    url: str = Field(pattern=r"^https?://[^/\s]+(/.*)?$")
    name: str | None = None
    max_concurrency: int = Field(default=64, ge=1)
    max_tokens_in_flight: int | None = Field(default=None, ge=1)
    max_engine_waiting: int = Field(default=8, ge=1)
    metrics: Literal["auto", "vllm", "sglang", "off"] = "auto"
    priority: bool = False
    api_key: str | None = Field(default=None, repr=False)


class DispatchConfig(_Model):
    """How the dispatcher reads the engines and checks their health."""

    metrics_interval_s: float = Field(default=0.5, gt=0)
    health_path: str = "/health"
    health_interval_s: float = Field(default=2.0, gt=0)
    health_timeout_s: float = Field(default=2.0, gt=0)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    read_timeout_s: float = Field(default=600.0, gt=0)
    unhealthy_after: int = Field(default=1, ge=1)


class ServerConfig(_Model):
    """The HTTP server."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    drain_grace_s: float = Field(default=30.0, ge=0)
    default_max_tokens: int = Field(default=256, ge=1)
    record_requests: bool = False


class GatewayConfig(_Model):
    """The whole gateway: tenants, backends and the scheduling components by name."""

    policy: str = "fifo"
    policy_params: dict[str, Any] = Field(default_factory=dict)
    router: str = "least-tokens"
    predictor: str | None = None
    predictor_params: dict[str, Any] = Field(default_factory=dict)
    models: list[str] = Field(default_factory=list)
    tenants: dict[str, TenantConfig] = Field(min_length=1)
    backends: list[BackendConfig] = Field(min_length=1)
    dispatch: DispatchConfig = DispatchConfig()
    server: ServerConfig = ServerConfig()

    @model_validator(mode="after")
    def _distinct_keys(self) -> GatewayConfig:
        seen: dict[bytes, str] = {}
        for name, tenant in self.tenants.items():
            digest = tenant.key_digest()
            if digest in seen:
                raise ValueError(f"tenants {seen[digest]!r} and {name!r} share an API key")
            seen[digest] = name
        return self

    def core_tenants(self) -> dict[str, Tenant]:
        """Tenant name -> core ``Tenant`` (for policies)."""
        return {name: t.tenant(name) for name, t in self.tenants.items()}


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_config(data: Any, source: str = "config") -> GatewayConfig:
    """Validate a parsed YAML/JSON document; ``ConfigError`` names the key."""
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {_where(first['loc'])}: {first['msg']}{more}") from None


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, str(path))
