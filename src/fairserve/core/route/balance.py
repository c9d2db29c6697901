"""Load- and cache-aware routers: power of two choices, prefix affinity, predicted load."""

from __future__ import annotations

import random
from collections.abc import Sequence

from fairserve.core.model import Request
from fairserve.core.route.base import ROUTERS, InstanceView


def _least(candidates: Sequence[InstanceView], positions: Sequence[int], predicted: bool) -> int:
    """Position (among ``positions``) of the least-loaded candidate; ties: lowest position."""
    best = positions[0]
    best_load = _load(candidates[best], predicted)
    for pos in positions[1:]:
        load = _load(candidates[pos], predicted)
        if load < best_load:
            best, best_load = pos, load
    return best


def _load(inst: InstanceView, predicted: bool) -> int:
    return inst.predicted_tokens if predicted else inst.outstanding_tokens


@ROUTERS.register("p2c")
class PowerOfTwoRouter:
    """Power of two choices: sample two instances at random, take the less loaded.

    Nearly as balanced as least-loaded with a fraction of the state reads, and
    it avoids herding onto one instance when load figures are stale (as they
    are for a gateway polling engines). ``seed`` makes it reproducible.
    """

    def __init__(self, seed: int = 0, predicted: bool = False) -> None:
        self._rng = random.Random(seed)
        self._predicted = predicted

    def choose(self, req: Request, candidates: Sequence[InstanceView], now: float) -> int:
        """The less loaded of two distinct random candidates."""
        n = len(candidates)
        if n == 1:
            return 0
        first, second = self._rng.sample(range(n), 2)
        return _least(candidates, (first, second), self._predicted)


@ROUTERS.register("predicted-load")
class PredictedLoadRouter:
    """The instance with the least predicted remaining work.

    Work is prompt tokens plus predicted output tokens of the requests it holds
    (``Request.predicted_output_tokens``, set by the configured predictor), so a
    long predicted answer counts for what it will cost, not for one request.
    """

    def choose(self, req: Request, candidates: Sequence[InstanceView], now: float) -> int:
        """Position of the candidate with the least predicted work."""
        return _least(candidates, range(len(candidates)), True)


def _score(key: int, index: int) -> int:
    # A 64-bit mix (splitmix64 finaliser) of the prefix key and the instance:
    # stable across runs and processes, unlike hash() of a str.
    x = (key * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


@ROUTERS.register("prefix-affinity")
class PrefixAffinityRouter:
    """Cache affinity with a load guard (DualMap, Preble, SGLang's router).

    The prompt's first ``prefix_blocks`` prefix hashes name its prefix; two
    candidate instances are picked from it by rendezvous hashing (the two
    highest scores of ``hash(prefix, instance)``), so requests sharing a prefix
    meet on the same two instances and find their KV blocks cached, while
    instances joining or leaving move only their own share. Of the two, the less
    loaded wins. The guard: when even that one holds more than ``imbalance``
    times the least-loaded candidate's work plus ``slack_tokens``, the request
    goes to the least-loaded candidate instead. Requests without prefix hashes
    go to the least-loaded candidate.
    """

    def __init__(
        self, prefix_blocks: int = 4, imbalance: float = 2.0, slack_tokens: int = 8192
    ) -> None:
        if prefix_blocks < 1:
            raise ValueError(f"prefix_blocks must be >= 1, got {prefix_blocks}")
        if imbalance < 1:
            raise ValueError(f"imbalance must be >= 1, got {imbalance}")
        self.prefix_blocks = prefix_blocks
        self.imbalance = imbalance
        self.slack_tokens = slack_tokens

    def choose(self, req: Request, candidates: Sequence[InstanceView], now: float) -> int:
        """One of the prefix's two home instances, unless they are overloaded."""
        n = len(candidates)
        least = _least(candidates, range(n), False)
        hashes = req.prefix_hashes
        if not hashes or n == 1:
            return least
        key = hash(hashes[: self.prefix_blocks]) & 0xFFFFFFFFFFFFFFFF
        ranked = sorted(range(n), key=lambda pos: _score(key, candidates[pos].index), reverse=True)
        home = _least(candidates, ranked[:2], False)
        limit = self.imbalance * candidates[least].outstanding_tokens + self.slack_tokens
        return home if candidates[home].outstanding_tokens <= limit else least
