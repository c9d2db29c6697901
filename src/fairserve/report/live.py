"""What a live run's report takes from the gateway: its tenants, weights, SLOs and policy.

A bench run measures a gateway; the workload spec that generated the load has
its own tenants and weights, which need not be the gateway's. The report of a
live run is drawn against the gateway's own (its config file), and says where
they came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fairserve.core.model import SLO

__all__ = ["LiveView", "gateway_view", "workload_view"]


@dataclass(frozen=True)
class LiveView:
    """Weights, SLOs and the run-directory config entries of a live run's report."""

    weights: Mapping[str, float]
    slos: Mapping[str, SLO]
    config: Mapping[str, Any]  # policy, router, predictor, tenants_from

    @property
    def label(self) -> str:
        """The run's label in the report: the policy, when known."""
        return str(self.config.get("policy") or "bench")


def gateway_view(cfg: Any, source: str, time_scale: float = 1.0) -> LiveView:
    """The view of a ``GatewayConfig`` (``source`` names it in the report).

    ``time_scale``: the records were divided by it (a gateway run slower than
    modelled), so the SLOs, in the gateway's wall seconds, are divided too.
    """
    tenants = cfg.core_tenants()
    slos = {
        name: SLO(
            t.slo.name,
            *(
                None if v is None else v / time_scale
                for v in (t.slo.ttft_s, t.slo.tpot_s, t.slo.e2e_s)
            ),
        )
        for name, t in tenants.items()
    }
    config = {
        "policy": str(cfg.policy),
        "router": str(cfg.router),
        "predictor": None if cfg.predictor is None else str(cfg.predictor),
        "tenants_from": f"the gateway's config ({source})",
    }
    return LiveView({n: t.weight for n, t in tenants.items()}, slos, config)


def workload_view(workload: Any) -> LiveView:
    """The fallback without the gateway's config: the workload spec's tenants, policy unknown."""
    names = workload.tenant_names()
    return LiveView(
        {n: workload.tenant_config(n).weight for n in names},
        {n: workload.tenant_config(n).slo for n in names},
        {
            "tenants_from": "the workload spec (not the gateway's: pass --keys-from "
            "GATEWAY_YAML for its tenants, weights, SLOs and policy)"
        },
    )
