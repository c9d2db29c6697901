"""Shared gateway state: in memory (one replica) or on Redis (several); see :mod:`.base`."""

from __future__ import annotations

from fairserve.gateway.config import StateConfig
from fairserve.gateway.shared.base import SharedState, StateUnavailable
from fairserve.gateway.shared.memory import MemoryState

__all__ = ["MemoryState", "SharedState", "StateUnavailable", "build_state"]


def build_state(config: StateConfig) -> SharedState:
    """The state ``config.backend`` names (Redis is imported only when asked for)."""
    if config.backend == "memory":
        return MemoryState()
    from fairserve.gateway.shared.redis_state import RedisState

    return RedisState(config)
