"""The scheduling components of a gateway config, built by their registries.

The same path as the simulator's: ``REGISTRY.build(spec, **context)`` with
the context ``seed`` (the config's), ``tenants`` (the core's view of the
configured tenants: weights, priorities, SLOs), ``predictor`` (built first)
and ``load`` (opens saved models, e.g. the latency model of ``slo-aware`` or
``slo`` admission), so a spec that runs in the simulator runs here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fairserve.core.policies import POLICIES
from fairserve.core.policies.base import Policy
from fairserve.core.predict import PREDICTORS, Predictor
from fairserve.core.registry import ComponentError
from fairserve.core.route import ADMISSION, ROUTERS, Admission, Router
from fairserve.gateway.config import GatewayConfig
from fairserve.store import load_model


class GatewayError(ValueError):
    """The gateway cannot start with this configuration (e.g. a bad component parameter)."""


@dataclass(frozen=True, slots=True)
class Components:
    """The policy, router, predictor and admission a gateway runs."""

    policy: Policy
    router: Router
    predictor: Predictor | None
    admission: Admission | None


def build_components(config: GatewayConfig) -> Components:
    """Build the config's components; :class:`GatewayError` (one line) if one cannot be built."""
    context: dict[str, Any] = {
        "seed": config.seed,
        "tenants": config.core_tenants(),
        "load": load_model,
    }
    try:
        predictor = PREDICTORS.build(config.predictor, **context) if config.predictor else None
        context["predictor"] = predictor
        admission = ADMISSION.build(config.admission, **context) if config.admission else None
        return Components(
            policy=POLICIES.build(config.policy, **context),
            router=ROUTERS.build(config.router, **context),
            predictor=predictor,
            admission=admission,
        )
    except ComponentError as exc:
        raise GatewayError(str(exc)) from None
