"""The Router protocol: pick the instance a request goes to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from fairserve.core.model import Request
from fairserve.core.registry import Registry


class InstanceView(Protocol):
    """What a router may read of an instance."""

    @property
    def index(self) -> int:
        """The instance's position in the cluster."""

    @property
    def num_waiting(self) -> int:
        """Requests queued at the instance."""

    @property
    def num_running(self) -> int:
        """Requests in the instance's batch."""

    @property
    def outstanding_tokens(self) -> int:
        """Prompt tokens plus ``max_tokens`` (0 when unset) of the requests assigned and not finished."""

    @property
    def predicted_tokens(self) -> int:
        """Prompt plus predicted output tokens of the requests assigned and not finished."""


@runtime_checkable
class BatchView(Protocol):
    """An instance that also exposes its batch composition (the simulator's engines do)."""

    @property
    def num_decodes(self) -> int:
        """Requests in the batch past their prefill."""

    @property
    def decode_context_tokens(self) -> int:
        """KV tokens the decoding requests read per step."""

    @property
    def queued_prefill_tokens(self) -> int:
        """Prefill tokens still to compute at the instance (queued and in progress)."""


class PrefixView(Protocol):
    """An instance that can say how much of a prompt's prefix it holds, by KV tier (the
    simulator's engines can; a gateway's backends need not, and cache-aware routers then
    see no match)."""

    def prefix_match(
        self, hashes: tuple[int, ...], block_tokens: int, now: float
    ) -> tuple[int, int, int]:
        """Prompt tokens of the prefix ``hashes`` names (``block_tokens`` a hash) held
        on the GPU, in the CPU tier and in the tiers below, as of ``now``."""


class Router(Protocol):
    """Chooses one of ``candidates`` (all have room) for ``req``; returns its position there."""

    def choose(self, req: Request, candidates: Sequence[InstanceView], now: float) -> int:
        """Position in ``candidates`` of the chosen instance."""


ROUTERS: Registry[Router] = Registry("router")
