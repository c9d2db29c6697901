"""``fairserve demo``: a built-in multi-tenant scenario, every policy side by side.

The tenants' request lengths are log-normal fits of the public Azure LLM
inference traces (2023): the conversation service for ``chat`` (prompt mean
1,155 tokens, log-sigma 0.985; output mean 211, log-sigma 0.859) and the
coding service for ``code`` (prompt mean 2,048, log-sigma 1.36; output mean
28, log-sigma 0.847), recomputed with ``fairserve trace stats``. ``batch`` is
an offline job that floods the cluster with long generations. Two
Llama-3.1-8B engines on H100-80GB GPUs serve them.
"""

from __future__ import annotations

from typing import Any

from fairserve.core.model import Tenant
from fairserve.core.registry import ComponentSpec
from fairserve.sim.run import InstanceSpec, SimConfig
from fairserve.workload import Workload
from fairserve.workload.spec import build, parse_spec

POLICIES = ("fifo", "priority", "sjf", "vtc", "uwfq", "oracle-srpt")
DURATION_S = 300.0


def _lengths(mean: float, sigma: float, cap: int) -> dict[str, Any]:
    return {"dist": "lognormal", "mean_tokens": mean, "sigma": sigma, "max_tokens": cap}


SPEC: dict[str, Any] = {
    "seed": 11,
    "duration_s": DURATION_S,
    "sources": [
        {
            "tenant": "chat",
            "priority": 0,
            "slo": {"name": "interactive", "ttft_s": 1.0, "tpot_s": 0.1},
            "arrival": {"process": "gamma", "rate_per_s": 8.0, "cv": 1.5},
            "prompt": _lengths(1155, 0.985, 14050),
            "output": _lengths(211, 0.859, 1000),
        },
        {
            "tenant": "code",
            "priority": 0,
            "slo": {"name": "completion", "ttft_s": 2.0},
            "arrival": {"process": "gamma", "rate_per_s": 4.0, "cv": 1.5},
            "prompt": _lengths(2048, 1.36, 7437),
            "output": _lengths(28, 0.847, 1899),
        },
        {
            "tenant": "batch",
            "priority": 2,
            "slo": {"name": "offline", "e2e_s": 3600.0},
            "arrival": {"process": "poisson", "rate_per_s": 60.0},
            "prompt": _lengths(600, 0.5, 4096),
            "output": _lengths(400, 0.5, 2048),
        },
    ],
}


def workload() -> Workload:
    """The demo's requests (seeded: the same every run)."""
    return build(parse_spec(SPEC, "fairserve demo"))


def configs(wl: Workload) -> list[tuple[str, str | None, str, SimConfig]]:
    """(policy, predictor, router, config) for each policy of the demo."""
    tenants: tuple[Tenant, ...] = tuple(wl.tenant_config(n) for n in wl.tenant_names())
    out: list[tuple[str, str | None, str, SimConfig]] = []
    for policy in POLICIES:
        # SJF orders by predicted total work (prompt + predicted output); the
        # per-tenant history predictor feeds it, as it would in production.
        params = {"prompt_weight": 1.0} if policy == "sjf" else {}
        config = SimConfig(
            instances=(InstanceSpec(count=2),),
            policy=ComponentSpec(policy, params),
            router="least-tokens",
            predictor="history",
            tenants=tenants,
            max_engine_waiting=2,
        )
        out.append((policy, "history", "least-tokens", config))
    return out
