"""The shared test helpers."""

from __future__ import annotations

import asyncio
import threading
import time

from tests.helpers import wait_until, wait_until_async


def test_wait_until_sees_a_change_made_by_another_thread() -> None:
    done = threading.Event()
    threading.Timer(0.05, done.set).start()
    assert wait_until(done.is_set, timeout_s=5.0)


def test_wait_until_gives_up_after_its_timeout() -> None:
    started = time.monotonic()
    assert not wait_until(lambda: False, timeout_s=0.05)
    assert 0.05 <= time.monotonic() - started < 1.0


def test_wait_until_async_lets_other_tasks_run() -> None:
    async def main() -> bool:
        flag = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, flag.set)
        return await wait_until_async(flag.is_set, timeout_s=5.0)

    assert asyncio.run(main())
    assert not asyncio.run(wait_until_async(lambda: False, timeout_s=0.02))
