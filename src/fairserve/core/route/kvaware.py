"""A KV-aware router: where the prompt's prefix is cached, and in which tier, against load."""

from __future__ import annotations

from collections.abc import Sequence

from fairserve.core.model import Request
from fairserve.core.route.base import ROUTERS, InstanceView


@ROUTERS.register("kv-aware")
class KVAwareRouter:
    """The instance where the request costs least: its uncached prefill plus its load.

    Each candidate is scored, in prefill-token equivalents, as the prompt tokens
    it would have to compute (those not cached there), plus ``cpu_weight`` per
    token it holds in its CPU tier and ``remote_weight`` per token in a tier
    below (bringing them back costs transfer time, not compute), plus
    ``load_weight`` times its outstanding tokens; the lowest score wins (ties:
    lowest position). A GPU hit costs nothing. The weights are the ratios of a
    token's transfer time to its prefill time; the defaults fit an 8B model on
    an H100 with a PCIe link (about 5 us against 25 us a token, docs/policies.md).
    Instances that cannot report their cache (``PrefixView``: a gateway's
    backends) match nothing, and the router is then least-tokens.
    """

    def __init__(
        self, cpu_weight: float = 0.2, remote_weight: float = 0.4, load_weight: float = 1.0
    ) -> None:
        for name, value in (
            ("cpu_weight", cpu_weight),
            ("remote_weight", remote_weight),
            ("load_weight", load_weight),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        self.cpu_weight = cpu_weight
        self.remote_weight = remote_weight
        self.load_weight = load_weight

    def choose(self, req: Request, candidates: Sequence[InstanceView], now: float) -> int:
        """Position of the candidate with the lowest prefill-plus-load score."""
        hashes = req.prefix_hashes
        best, best_score = 0, 0.0
        for pos, inst in enumerate(candidates):
            score = self.load_weight * inst.outstanding_tokens + req.prompt_tokens
            match = getattr(inst, "prefix_match", None) if hashes else None
            if match is not None:
                gpu, cpu, remote = match(hashes, req.prefix_block_tokens, now)
                # At least one prompt token is computed wherever it goes.
                cached = min(gpu + cpu + remote, req.prompt_tokens - 1)
                score += self.cpu_weight * cpu + self.remote_weight * remote - cached
            if pos == 0 or score < best_score:
                best, best_score = pos, score
        return best
