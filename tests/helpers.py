"""Helpers shared by the whole test suite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: How often a condition is polled: often enough that a test waits little past it.
POLL_INTERVAL_S = 0.01


def wait_until(
    predicate: Callable[[], bool], timeout_s: float = 5.0, interval_s: float = POLL_INTERVAL_S
) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout_s`` has passed (False).

    For state another thread or process changes a moment later (a server thread
    ends a request just after the client has read its last byte). The predicate
    is checked once more at the deadline, so a slow machine's last chance counts.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


async def wait_until_async(
    predicate: Callable[[], bool], timeout_s: float = 5.0, interval_s: float = POLL_INTERVAL_S
) -> bool:
    """:func:`wait_until` inside an event loop: sleeps with ``asyncio.sleep`` so tasks run."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval_s)
    return bool(predicate())
