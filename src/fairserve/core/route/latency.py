"""SLO-aware routing and admission with the latency predictor."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fairserve.core.model import SLO, Request
from fairserve.core.predict.latency import LatencyModel
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


def _load(model: LatencyModel | None, path: str | Path | None) -> LatencyModel:
    if (model is None) == (path is None):
        raise ValueError(
            "slo-aware: pass exactly one of model= or path= (a model written by "
            "`fairserve predictor latency --out PATH`)"
        )
    return model if model is not None else LatencyModel.load(Path(str(path)))


@ROUTERS.register("slo-aware")
class SloAwareRouter:
    """The instance where the latency predictor expects the lowest TTFT (or E2E).

    The prediction reads each instance's batch composition (decoding requests,
    their KV context, prefill tokens queued ahead) and the request's prompt and
    predicted output (HyGen-style batch-latency prediction), so a short request
    avoids an instance about to prefill a long prompt even when request counts
    are equal. ``objective``: ``ttft`` or ``e2e``.
    """

    def __init__(
        self,
        model: LatencyModel | None = None,
        path: str | Path | None = None,
        objective: str = "ttft",
    ) -> None:
        if objective not in ("ttft", "e2e"):
            raise ValueError(f"slo-aware: objective must be ttft or e2e, got {objective!r}")
        self.model = _load(model, path)
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
