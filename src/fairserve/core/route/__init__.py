"""Routers and admission behind one protocol each, one registry each."""

from fairserve.core.route import balance as _balance  # noqa: F401  (registers the routers)
from fairserve.core.route import basic as _basic  # noqa: F401
from fairserve.core.route import kvaware as _kvaware  # noqa: F401
from fairserve.core.route import latency as _latency  # noqa: F401
from fairserve.core.route.admission import ADMISSION, Admission
from fairserve.core.route.base import ROUTERS, InstanceView, PrefixView, Router

__all__ = ["ADMISSION", "ROUTERS", "Admission", "InstanceView", "PrefixView", "Router"]
