"""The gateway's configuration file (YAML), validated by pydantic.

Errors name the key (``tenants.batch.limits.requests_per_min: Input should be
greater than 0``). Building a config does no I/O; :func:`load_config` reads
the file. API keys are hashed (SHA-256) as soon as the config is built: give
either ``api_key`` (plain, for demos) or ``api_key_sha256`` (the hex digest,
for production: ``printf %s "$KEY" | sha256sum``).

The scheduling components (``policy``, ``router``, ``predictor``,
``admission``) are component specs, written as in the simulator's CLI
(``prefix-affinity:imbalance=2``) or as ``{name: ..., params: {...}}``; their
names and parameter names are checked against the registries when the config
is built, so a typo is a config error naming the key and the allowed values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fairserve.core.model import SLO, Tenant
from fairserve.core.policies import POLICIES
from fairserve.core.predict import PREDICTORS
from fairserve.core.registry import ComponentError, ComponentSpec, Registry
from fairserve.core.route import ADMISSION, ROUTERS
from fairserve.store.specs import load_yaml, validate


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
    """How the dispatcher reads the engines and checks their health.

    ``slo_concurrency``: hold each backend's batch to the size at which its
    streams' measured time per output token meets the tightest TPOT objective
    in force (``auto``: on when some tenant has one); ``slo_reserve_seqs``:
    sequences of that batch a request without an objective leaves free;
    ``slo_hold_s``: how long an objective stays in force after its tenant's
    last request ended; ``slo_tpot_model``: a latency model (version 2, from
    ``fairserve predictor latency --out FILE``) whose predicted TPOT for the
    batch with one more request must also meet the objective, so the limit
    holds before the measured time per token overshoots.
    """

    slo_concurrency: Literal["auto", "on", "off"] = "auto"
    slo_reserve_seqs: int = Field(default=4, ge=0)
    slo_hold_s: float = Field(default=10.0, ge=0)
    slo_tpot_model: str | None = None
    metrics_interval_s: float = Field(default=0.5, gt=0)
    health_path: str = "/health"
    health_interval_s: float = Field(default=2.0, gt=0)
    health_timeout_s: float = Field(default=2.0, gt=0)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    read_timeout_s: float = Field(default=600.0, gt=0)
    unhealthy_after: int = Field(default=2, ge=1)


class ServerConfig(_Model):
    """The HTTP server."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    drain_delay_s: float = Field(default=5.0, ge=0)
    drain_grace_s: float = Field(default=30.0, ge=0)
    default_max_tokens: int = Field(default=256, ge=1)
    record_requests: bool = False


class EdgeLimitsConfig(_Model):
    """Limits on every connection and request, enforced before any other work (``limits:``).

    ``max_body_bytes``: a larger body is refused with 413 as soon as its
    ``Content-Length`` or its bytes so far exceed it. ``max_header_bytes`` (the
    request line and headers together) and ``max_header_count``: 431 beyond.
    ``header_timeout_s``: the request line and headers must arrive within this
    long of the connection opening (or of the next request's first byte), else
    the connection is closed; ``body_timeout_s``: the body within this long of
    the headers, else 408. ``idle_timeout_s``: a keep-alive connection with no
    request is closed after this long. ``max_connections``: connections (and
    requests) open at once; beyond it the server answers 503.
    ``max_json_depth``: nesting of arrays and objects in a body (400 beyond).
    ``write_stall_timeout_s``: a client that takes none of its answer for this
    long (the server's writes stay paused on a full buffer) is disconnected;
    its request ends as cancelled and frees its engine slot.
    """

    max_body_bytes: int = Field(default=8 * 2**20, ge=1024)
    max_header_bytes: int = Field(default=16 * 2**10, ge=1024)
    max_header_count: int = Field(default=100, ge=8)
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    idle_timeout_s: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=2048, ge=1)
    max_json_depth: int = Field(default=64, ge=2)
    write_stall_timeout_s: float = Field(default=60.0, gt=0)


class StateConfig(_Model):
    """What the gateway replicas of one deployment share (``state:``; docs/gateway.md).

    ``backend``: ``memory`` (one replica, the default) or ``redis`` (several
    replicas: rate-limit buckets and per-backend in-flight reservations are
    shared exactly, fair-queuing counters and queue lengths every
    ``sync_interval_s``). ``url``: the Redis server (``redis://host:6379/0``,
    ``rediss://`` or ``unix://``), needed by ``redis``. ``namespace``: prefix
    of every key, one per deployment. ``on_unavailable``: with Redis
    unreachable, ``open`` decides on the replica's own state (and counts it in
    ``fairserve_shared_state_local_decisions_total``), ``closed`` answers 503.
    ``timeout_s``: one round trip at most. ``lease_ttl_s``: a reservation of a
    replica that stopped renewing it (it died) expires after this long.
    ``poll_interval_s``: how often a replica asks again for a slot while the
    fleet's slots are taken and no freed slot woke it (a release wakes the
    replicas next in line). ``retry_interval_s``: reconnection attempts while
    Redis is unreachable. ``cluster``: ``url`` is one node of a Redis Cluster
    (the client finds the others); every key of a deployment carries the hash
    tag ``{namespace}``, so each script's keys are in one slot.
    """

    backend: Literal["memory", "redis"] = "memory"
    url: str | None = Field(default=None, pattern=r"^(redis|rediss|unix)://\S+$", repr=False)
    namespace: str = Field(default="fairserve", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    on_unavailable: Literal["open", "closed"] = "open"
    timeout_s: float = Field(default=0.25, gt=0)
    lease_ttl_s: float = Field(default=10.0, gt=0)
    sync_interval_s: float = Field(default=0.05, gt=0)
    poll_interval_s: float = Field(default=0.005, gt=0)
    retry_interval_s: float = Field(default=0.5, gt=0)
    cluster: bool = False

    @model_validator(mode="after")
    def _url_for_redis(self) -> StateConfig:
        if self.backend == "redis" and self.url is None:
            raise ValueError("backend redis needs url (redis://host:port/db)")
        if self.backend == "memory" and (self.url is not None or self.cluster):
            raise ValueError("url and cluster are only used with backend: redis")
        if self.cluster and self.url is not None and self.url.startswith("unix://"):
            raise ValueError("cluster needs a redis:// or rediss:// url of one of its nodes")
        if self.lease_ttl_s < 4 * self.sync_interval_s:
            raise ValueError("lease_ttl_s must be at least 4 x sync_interval_s (leases are renewed "
                             "every sync)")  # fmt: skip
        return self


def _component(value: Any) -> ComponentSpec:
    try:
        return ComponentSpec.of(value)
    except ComponentError as exc:
        raise PydanticCustomError("component", str(exc)) from None


def _checked(registry: Registry[Any]) -> Callable[[ComponentSpec | None], ComponentSpec | None]:
    def check(spec: ComponentSpec | None) -> ComponentSpec | None:
        if spec is None:
            return None
        try:
            return registry.check(spec)
        except ComponentError as exc:  # a plain message: no "Value error, " prefix
            raise PydanticCustomError("component", str(exc)) from None

    return check


#: A component spec in a config: ``name[:key=value,...]`` or ``{name, params}``.
Component = Annotated[
    ComponentSpec, PlainValidator(_component), PlainSerializer(ComponentSpec.to_dict)
]


class GatewayConfig(_Model):
    """The whole gateway: tenants, backends and the scheduling components.

    ``policy_params`` and ``predictor_params`` (older configs) are folded into
    the ``policy`` and ``predictor`` specs' parameters. ``seed`` seeds the
    components that draw random numbers (``p2c``).
    """

    policy: Component = Field(default_factory=lambda: ComponentSpec("fifo"))
    router: Component = Field(default_factory=lambda: ComponentSpec("least-tokens"))
    predictor: Component | None = None
    admission: Component | None = None
    seed: int = 0
    models: list[str] = Field(default_factory=list)
    tenants: dict[str, TenantConfig] = Field(min_length=1)
    backends: list[BackendConfig] = Field(min_length=1)
    dispatch: DispatchConfig = DispatchConfig()
    server: ServerConfig = ServerConfig()
    limits: EdgeLimitsConfig = EdgeLimitsConfig()
    state: StateConfig = StateConfig()

    _policy = field_validator("policy")(_checked(POLICIES))
    _router = field_validator("router")(_checked(ROUTERS))
    _predictor = field_validator("predictor")(_checked(PREDICTORS))
    _admission = field_validator("admission")(_checked(ADMISSION))

    @model_validator(mode="before")
    @classmethod
    def _fold_params(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key, default in (("policy", "fifo"), ("predictor", None)):
            params = data.pop(f"{key}_params", None)
            if not params:
                continue
            if not isinstance(params, dict):
                raise ValueError(f"{key}_params must be a mapping of key: value")
            base = data.get(key, default)
            if base is None:
                raise ValueError(f"{key}_params needs a {key}")
            data[key] = _component(base).with_params(**params)
        return data

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


def parse_config(data: Any, source: str = "config") -> GatewayConfig:
    """Validate a parsed YAML/JSON document; ``ConfigError`` names the key."""
    return validate(data, GatewayConfig, source, "gateway config", ConfigError)


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway YAML file."""
    return load_yaml(path, GatewayConfig, "gateway config", ConfigError)
