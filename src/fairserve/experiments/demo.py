"""``fairserve demo``: a built-in multi-tenant scenario, every policy side by side.

The scenario is the choice a platform engineer faces, not an overload: two
Llama-3.1-8B engines on H100-80GB GPUs are offered 12,800 tokens/s on
average, 0.54 of the 23,900 tokens/s they process when saturated, just below
the knee (``examples/sweeps/demo_knee.yaml`` measures both: TTFT p99 passes
twice its low-load value at 0.7 of capacity), and a flooding tenant's bursts
push them past capacity for tens of seconds at a time, so queues build and
drain again (docs/reports.md, "The demo's knee").

- ``chat`` and ``code`` are interactive; their request lengths are log-normal
  fits of the public Azure LLM inference traces (2023): the conversation
  service for ``chat`` (prompt mean 1,155 tokens, log-sigma 0.985; output mean
  211, log-sigma 0.859) and the coding service for ``code`` (prompt mean 2,048,
  log-sigma 1.36; output mean 28, log-sigma 0.847), recomputed with
  ``fairserve trace stats``. Their arrivals are bursty (Gamma gaps, cv 2).
  SLOs: TTFT 1 s for both, and a reading-speed TPOT of 150 ms for chat.
- ``batch`` is an offline job that floods in bursts (15 requests/s while on,
  on 20 s and off 40 s on average): about half of all tokens. SLO: each
  request done within 5 minutes.

The same spec is in ``examples/workloads/demo.yaml`` (a test keeps the two equal).
"""

from __future__ import annotations

from typing import Any

from fairserve.core.model import Tenant
from fairserve.core.registry import ComponentSpec
from fairserve.sim.run import InstanceSpec, SimConfig
from fairserve.workload import Workload
from fairserve.workload.spec import build, parse_spec

POLICIES = ("fifo", "priority", "sjf", "vtc", "uwfq", "oracle-srpt")
DURATION_S = 600.0
INSTANCES = 2
ROUTER = "least-tokens"
PREDICTOR = "history"
MAX_ENGINE_WAITING = 2


def _lengths(mean: float, sigma: float, cap: int) -> dict[str, Any]:
    return {"dist": "lognormal", "mean_tokens": mean, "sigma": sigma, "max_tokens": cap}


SPEC: dict[str, Any] = {
    "seed": 11,
    "duration_s": DURATION_S,
    "sources": [
        {
            "tenant": "chat",
            "priority": 0,
            "slo": {"name": "interactive", "ttft_s": 1.0, "tpot_s": 0.15},
            "arrival": {"process": "gamma", "rate_per_s": 3.0, "cv": 2.0},
            "prompt": _lengths(1155, 0.985, 14050),
            "output": _lengths(211, 0.859, 1000),
        },
        {
            "tenant": "code",
            "priority": 0,
            "slo": {"name": "completion", "ttft_s": 1.0},
            "arrival": {"process": "gamma", "rate_per_s": 1.5, "cv": 2.0},
            "prompt": _lengths(2048, 1.36, 7437),
            "output": _lengths(28, 0.847, 1899),
        },
        {
            "tenant": "batch",
            "priority": 2,
            "slo": {"name": "offline", "e2e_s": 300.0},
            "arrival": {
                "process": "onoff",
                "rate_on_per_s": 15.0,
                "mean_on_s": 20.0,
                "mean_off_s": 40.0,
            },
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
            instances=(InstanceSpec(count=INSTANCES),),
            policy=ComponentSpec(policy, params),
            router=ROUTER,
            predictor=PREDICTOR,
            tenants=tenants,
            max_engine_waiting=MAX_ENGINE_WAITING,
        )
        out.append((policy, PREDICTOR, ROUTER, config))
    return out
