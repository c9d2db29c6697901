"""Routers behind one protocol, one registry."""

from fairserve.core.route import balance as _balance  # noqa: F401  (registers the routers)
from fairserve.core.route import basic as _basic  # noqa: F401
from fairserve.core.route import latency as _latency  # noqa: F401
from fairserve.core.route.base import ROUTERS, InstanceView, Router

__all__ = ["ROUTERS", "InstanceView", "Router"]
