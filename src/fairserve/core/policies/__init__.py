"""Scheduling policies behind one protocol, one registry."""

from fairserve.core.policies import fifo as _fifo  # noqa: F401  (registers "fifo")
from fairserve.core.policies.base import POLICIES, Policy

__all__ = ["POLICIES", "Policy"]
