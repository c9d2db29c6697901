"""Load-balancing routers: round-robin and least outstanding tokens."""

from __future__ import annotations

from collections.abc import Sequence

from fairserve.core.model import Request
from fairserve.core.route.base import ROUTERS, InstanceView


@ROUTERS.register("round-robin")
class RoundRobinRouter:
    """Cycle through instances in index order, skipping those without room."""

    def __init__(self) -> None:
        self._last = -1

    def choose(self, req: Request, candidates: Sequence[InstanceView], now: float) -> int:
        """The first candidate after the last instance chosen, cyclically."""
        best = 0
        best_key: int | None = None
        for pos, inst in enumerate(candidates):
            # Distance forward from the last chosen index; smallest positive wins.
            key = (inst.index - self._last - 1) % (1 << 30)
            if best_key is None or key < best_key:
                best, best_key = pos, key
        self._last = candidates[best].index
        return best


@ROUTERS.register("least-tokens")
class LeastTokensRouter:
    """The instance with the fewest outstanding tokens (ties: lowest index)."""

    def choose(self, req: Request, candidates: Sequence[InstanceView], now: float) -> int:
        """Position of the least-loaded candidate."""
        best = 0
        best_load = candidates[0].outstanding_tokens
        for pos in range(1, len(candidates)):
            load = candidates[pos].outstanding_tokens
            if load < best_load:
                best, best_load = pos, load
        return best
