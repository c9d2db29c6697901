"""SLO-aware routing and admission with the latency predictor.

Both take a fitted model (:class:`BatchLatencyModel`, version 2, or the older
:class:`LatencyModel`) or a saved one's path, which the ``load`` function of
the build context opens (see :mod:`fairserve.core.predict.saved`). They read
its predictions for the batch a request would join: TTFT, TPOT, E2E and
slowdown (:class:`LatencyPrediction`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fairserve.core.model import SLO, Request, Tenant
from fairserve.core.predict.latency import (
    BatchLatencyModel,
    BatchState,
    LatencyModel,
    LatencyPrediction,
)
from fairserve.core.predict.saved import Loader
from fairserve.core.route.admission import ADMISSION
from fairserve.core.route.base import ROUTERS, BatchView, InstanceView


def remaining_output_tokens(inst: InstanceView) -> int:
    """Output tokens the requests at ``inst`` are predicted to still produce.

    From the public view alone: their predicted totals (prompt + predicted
    output) less the KV their decodes already hold and the prefill still to
    compute. A decode past its estimate makes the sum smaller, never negative.
    """
    if not isinstance(inst, BatchView):
        return 0
    held = inst.decode_context_tokens + inst.queued_prefill_tokens
    return max(0, inst.predicted_tokens - held)


#: A fitted latency model of either version.
AnyLatencyModel = BatchLatencyModel | LatencyModel


def batch_state(req: Request, inst: InstanceView, extra_prefill_tokens: int = 0) -> BatchState:
    """The state ``req`` would meet if dispatched to ``inst`` now (its predicted output,
    else ``max_tokens``), ``extra_prefill_tokens`` queued ahead besides the instance's.

    The extra prompts (a global queue's share) also count as requests waiting
    ahead, of the size of those queued at the instance (or of ``req``'s prompt):
    each needs a seat before ``req``.
    """
    if not isinstance(inst, BatchView):
        raise TypeError(
            f"instance {inst.index} does not expose its batch composition "
            "(num_decodes, decode_context_tokens, queued_prefill_tokens), which "
            "SLO-aware routing and admission need"
        )
    waiting, queued = inst.num_waiting, inst.queued_prefill_tokens
    if extra_prefill_tokens:
        typical = queued / waiting if waiting else req.prompt_tokens
        waiting += round(extra_prefill_tokens / max(typical, 1.0))
    return BatchState(
        inst.num_decodes,
        inst.decode_context_tokens,
        queued + extra_prefill_tokens,
        req.prompt_tokens,
        max(1, req.predicted_output_tokens or req.max_tokens or 1),
        num_waiting=waiting,
        batch_remaining_tokens=remaining_output_tokens(inst),
    )


def predict(
    model: AnyLatencyModel, req: Request, inst: InstanceView, extra_prefill_tokens: int = 0
) -> LatencyPrediction:
    """TTFT, TPOT, E2E and slowdown ``req`` would get if dispatched to ``inst`` now."""
    return model.predict_state(batch_state(req, inst, extra_prefill_tokens))


def predicted_latency(
    model: AnyLatencyModel, req: Request, inst: InstanceView, extra_prefill_tokens: int = 0
) -> tuple[float, float]:
    """``(ttft_s, e2e_s)`` the request would get if dispatched to ``inst`` now."""
    p = predict(model, req, inst, extra_prefill_tokens)
    return p.ttft_s, p.e2e_s


def _model(model: object, path: object, load: Loader | None, what: str) -> AnyLatencyModel:
    if (model is None) == (path is None):
        raise ValueError(
            f"{what}: pass exactly one of model= or path= (a model written by "
            "`fairserve predictor latency --out PATH`)"
        )
    value = model if model is not None else path
    if isinstance(value, BatchLatencyModel | LatencyModel):
        return value
    if load is None:
        raise ValueError(
            f"{what}: {value!r} is not a latency model; to open a saved model, build the "
            "component with load=fairserve.store.load_model (Registry.build context)"
        )
    opened = load(value)
    if not isinstance(opened, BatchLatencyModel | LatencyModel):
        raise ValueError(f"{what}: {value!s} holds a {type(opened).__name__}, not a latency model")
    return opened


#: What the ``slo-aware`` router may minimise.
OBJECTIVES = ("ttft", "e2e", "tpot", "slowdown")


@ROUTERS.register("slo-aware")
class SloAwareRouter:
    """The instance where the latency predictor expects the lowest TTFT (or TPOT, E2E,
    slowdown).

    The prediction reads each instance's batch composition (decoding requests,
    their KV context, prefill tokens queued ahead, requests waiting, the output
    its requests are predicted to still produce) and the request's prompt and
    predicted output (HyGen-style batch-latency prediction), so a short request
    avoids an instance about to prefill a long prompt even when request counts
    are equal. ``objective``: one of ``OBJECTIVES`` (``ttft``). ``model`` is a
    latency model or a saved model's path (``path`` is the same as a path); a
    path is opened with ``load``.
    """

    def __init__(
        self,
        model: AnyLatencyModel | object | None = None,
        path: object | None = None,
        objective: str = "ttft",
        load: Loader | None = None,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(
                f"slo-aware: objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}"
            )
        self.model = _model(model, path, load, "slo-aware")
        self._field = objective if objective == "slowdown" else f"{objective}_s"

    def choose(self, req: Request, candidates: Sequence[InstanceView], now: float) -> int:
        """Position of the candidate with the lowest predicted latency."""
        best, best_s = 0, float("inf")
        for pos, inst in enumerate(candidates):
            latency = getattr(predict(self.model, req, inst), self._field)
            if latency < best_s:
                best, best_s = pos, latency
        return best


class SloAdmission:
    """Reject a request at arrival when no instance is predicted to meet its SLO.

    A request whose tenant has a TTFT objective is refused when even the best
    instance's predicted TTFT, counting the prompts already waiting in the
    global queue (spread evenly over the instances), exceeds ``slack`` times the
    objective; with a version-2 model (which predicts TPOT from the batch), a
    tenant's TPOT objective is checked the same way on the best instance's
    predicted TPOT. Refusing early (a 429 at the gateway) lets the client retry
    elsewhere and keeps the capacity for requests that can still meet theirs.
    """

    def __init__(self, model: AnyLatencyModel, slos: dict[str, SLO], slack: float = 1.0) -> None:
        if not slack > 0:
            raise ValueError(f"admission slack must be > 0, got {slack!r}")
        self.model = model
        self.slos = slos
        self.slack = slack
        self.rejected = 0
        # A version-1 model's TPOT is only its E2E spread over the output: not used.
        self._tpot = isinstance(model, BatchLatencyModel)

    def reason(
        self, req: Request, instances: Sequence[InstanceView], queued_prompt_tokens: int
    ) -> str | None:
        """Why ``req`` is refused, or None to admit it."""
        slo = self.slos.get(req.tenant)
        tpot_s = slo.tpot_s if slo is not None and self._tpot else None
        if slo is None or (slo.ttft_s is None and tpot_s is None) or not instances:
            return None
        share = queued_prompt_tokens // len(instances)
        preds = [predict(self.model, req, i, share) for i in instances]
        why = None
        if slo.ttft_s is not None:
            best = min(p.ttft_s for p in preds)
            if best > self.slack * slo.ttft_s:
                why = f"predicted TTFT {best:.2f} s exceeds {self.slack:g} x the {slo.name!r} objective of {slo.ttft_s:g} s"
        if why is None and tpot_s is not None:
            best = min(p.tpot_s for p in preds)
            if best > self.slack * tpot_s:
                why = f"predicted TPOT {best * 1000:.1f} ms exceeds {self.slack:g} x the {slo.name!r} objective of {tpot_s * 1000:g} ms"
        if why is None:
            return None
        self.rejected += 1
        return f"rejected at admission: {why}"


@ADMISSION.register("slo")
def slo_admission(
    model: AnyLatencyModel | object,
    slack: float = 1.0,
    tenants: Mapping[str, Tenant] | None = None,
    load: Loader | None = None,
) -> SloAdmission:
    """:class:`SloAdmission` with the objectives of ``tenants`` (context).

    ``model``: a latency model or a saved model's path (opened with ``load``).
    """
    slos = {name: tenant.slo for name, tenant in (tenants or {}).items()}
    return SloAdmission(_model(model, None, load, "slo admission"), slos, slack)
