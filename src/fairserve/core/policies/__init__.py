"""Scheduling policies behind one protocol, one registry."""

# Importing a policy module registers its names in POLICIES.
from fairserve.core.policies import fair as _fair  # noqa: F401  (wrr, vtc, fair-sjf)
from fairserve.core.policies import fifo as _fifo  # noqa: F401  (fifo)
from fairserve.core.policies import learned_rank as _learned_rank  # noqa: F401  (learned-rank)
from fairserve.core.policies import ordered as _ordered  # noqa: F401  (priority, aging, sjf, edf, oracles)
from fairserve.core.policies import uwfq as _uwfq  # noqa: F401  (uwfq)
from fairserve.core.policies.base import POLICIES, FleetCounters, Policy

__all__ = ["POLICIES", "FleetCounters", "Policy"]
