"""SLO-aware routing and admission with the latency predictor.

Both take the fitted :class:`LatencyModel` or a saved one's path, which the
``load`` function of the build context opens (see :mod:`fairserve.core.predict.saved`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fairserve.core.model import SLO, Request, Tenant
from fairserve.core.predict.latency import LatencyModel
from fairserve.core.predict.saved import Loader, resolve_model
from fairserve.core.route.admission import ADMISSION
from fairserve.core.route.base import ROUTERS, BatchView, InstanceView


def predicted_latency(
    model: LatencyModel, req: Request, inst: InstanceView, extra_prefill_tokens: int = 0
) -> tuple[float, float]:
    """``(ttft_s, e2e_s)`` the request would get if dispatched to ``inst`` now."""
    if not isinstance(inst, BatchView):
        raise TypeError(
            f"instance {inst.index} does not expose its batch composition "
            "(num_decodes, decode_context_tokens, queued_prefill_tokens), which "
            "SLO-aware routing and admission need"
        )
    output = req.predicted_output_tokens or req.max_tokens or 1
    return model.predict_view(
        inst.num_decodes,
        inst.decode_context_tokens,
        inst.queued_prefill_tokens + extra_prefill_tokens,
        req.prompt_tokens,
        output,
    )


def _model(model: object, path: object, load: Loader | None, what: str) -> LatencyModel:
    if (model is None) == (path is None):
        raise ValueError(
            f"{what}: pass exactly one of model= or path= (a model written by "
            "`fairserve predictor latency --out PATH`)"
        )
    return resolve_model(model if model is not None else path, LatencyModel, load, what)


@ROUTERS.register("slo-aware")
class SloAwareRouter:
    """The instance where the latency predictor expects the lowest TTFT (or E2E).

    The prediction reads each instance's batch composition (decoding requests,
    their KV context, prefill tokens queued ahead) and the request's prompt and
    predicted output (HyGen-style batch-latency prediction), so a short request
    avoids an instance about to prefill a long prompt even when request counts
    are equal. ``objective``: ``ttft`` or ``e2e``. ``model`` is a
    :class:`LatencyModel` or a saved model's path (``path`` is the same as a
    path); a path is opened with ``load``.
    """

    def __init__(
        self,
        model: LatencyModel | object | None = None,
        path: object | None = None,
        objective: str = "ttft",
        load: Loader | None = None,
    ) -> None:
        if objective not in ("ttft", "e2e"):
            raise ValueError(f"slo-aware: objective must be ttft or e2e, got {objective!r}")
        self.model = _model(model, path, load, "slo-aware")
        self._index = 0 if objective == "ttft" else 1

    def choose(self, req: Request, candidates: Sequence[InstanceView], now: float) -> int:
        """Position of the candidate with the lowest predicted latency."""
        best, best_s = 0, float("inf")
        for pos, inst in enumerate(candidates):
            latency = predicted_latency(self.model, req, inst)[self._index]
            if latency < best_s:
                best, best_s = pos, latency
        return best


class SloAdmission:
    """Reject a request at arrival when no instance is predicted to meet its TTFT SLO.

    A request whose tenant has a TTFT objective is refused when even the best
    instance's predicted TTFT, counting the prompts already waiting in the
    global queue (spread evenly over the instances), exceeds ``slack`` times the
    objective. Refusing early (a 429 at the gateway) lets the client retry
    elsewhere and keeps the capacity for requests that can still meet theirs.
    """

    def __init__(self, model: LatencyModel, slos: dict[str, SLO], slack: float = 1.0) -> None:
        if not slack > 0:
            raise ValueError(f"admission slack must be > 0, got {slack!r}")
        self.model = model
        self.slos = slos
        self.slack = slack
        self.rejected = 0

    def reason(
        self, req: Request, instances: Sequence[InstanceView], queued_prompt_tokens: int
    ) -> str | None:
        """Why ``req`` is refused, or None to admit it."""
        slo = self.slos.get(req.tenant)
        if slo is None or slo.ttft_s is None or not instances:
            return None
        share = queued_prompt_tokens // len(instances)
        best = min(predicted_latency(self.model, req, i, share)[0] for i in instances)
        limit = self.slack * slo.ttft_s
        if best <= limit:
            return None
        self.rejected += 1
        return (
            f"rejected at admission: predicted TTFT {best:.2f} s exceeds "
            f"{self.slack:g} x the {slo.name!r} objective of {slo.ttft_s:g} s"
        )


@ADMISSION.register("slo")
def slo_admission(
    model: LatencyModel | object,
    slack: float = 1.0,
    tenants: Mapping[str, Tenant] | None = None,
    load: Loader | None = None,
) -> SloAdmission:
    """:class:`SloAdmission` with the TTFT objectives of ``tenants`` (context).

    ``model``: a :class:`LatencyModel` or a saved model's path (opened with ``load``).
    """
    slos = {name: tenant.slo for name, tenant in (tenants or {}).items()}
    return SloAdmission(_model(model, None, load, "slo admission"), slos, slack)
