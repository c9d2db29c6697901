"""Small builders for simulator tests."""

from __future__ import annotations

from collections.abc import Sequence

from fairserve.core.model import Request
from fairserve.sim.config import EngineConfig
from fairserve.sim.run import InstanceSpec, SimConfig, SimResult, simulate


def req(
    rid: int,
    arrival_s: float,
    prompt: int,
    output: int,
    tenant: str = "default",
    hashes: Sequence[int] | None = None,
    block_tokens: int = 16,
) -> Request:
    """One request; ``hashes`` are its prefix block hashes."""
    return Request(
        rid,
        arrival_s,
        prompt,
        output,
        tenant=tenant,
        prefix_hashes=tuple(hashes) if hashes is not None else None,
        prefix_block_tokens=block_tokens,
    )


def config(
    instances: int = 1,
    reference: bool = False,
    max_engine_waiting: int = 8,
    router: str = "round-robin",
    **engine: int | bool,
) -> SimConfig:
    """A Llama-3.1-8B/H100 deployment with engine limits overridden."""
    spec = InstanceSpec(count=instances, engine=EngineConfig(**engine))  # type: ignore[arg-type]
    return SimConfig(
        instances=(spec,),
        reference=reference,
        max_engine_waiting=max_engine_waiting,
        router=router,
    )


def run(requests: Sequence[Request], cfg: SimConfig) -> SimResult:
    """Simulate and return the result."""
    return simulate(list(requests), cfg)


def by_id(result: SimResult, column: str) -> dict[int, float]:
    """A record column keyed by request id."""
    values = getattr(result.records, column)
    return dict(zip(result.records.request_id.tolist(), values.tolist(), strict=True))
