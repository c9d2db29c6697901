"""The Admission protocol: refuse a request at arrival, before it queues.

Admission runs before the policy sees a request: a request refused here gets
an immediate answer (a 429 at the gateway) instead of a long wait. One
registry, :data:`ADMISSION`, keyed like the others (``slo`` is
:class:`fairserve.core.route.latency.SloAdmission`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fairserve.core.model import Request
from fairserve.core.registry import Registry
from fairserve.core.route.base import InstanceView


class Admission(Protocol):
    """Decides at arrival whether a request may queue."""

    #: Requests refused so far.
    rejected: int

    def reason(
        self, req: Request, instances: Sequence[InstanceView], queued_prompt_tokens: int
    ) -> str | None:
        """Why ``req`` is refused (one line for the client), or None to admit it."""


ADMISSION: Registry[Admission] = Registry("admission")
