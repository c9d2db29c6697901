"""The engine-slot script (:data:`fairserve.gateway.shared.lua.ACQUIRE`) on a real redis-server.

Called directly, as two replicas would call it, so the order in which freed
slots go to waiting replicas is checked without any timing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fairserve.gateway.shared import lua
from tests.gateway.redis_server import RedisServer, needs_redis, redis_server

pytestmark = needs_redis

CAP = 4  # the backend's max_concurrency
TTL_MS = 60_000
KEYS = ["t:epoch", "t:settle", "t:seen", "t:leases:b0", "t:waiters:b0"]


@pytest.fixture
def acquire() -> Iterator[Any]:
    import redis

    server: RedisServer
    with redis_server() as server:
        client = redis.Redis(port=server.port, decode_responses=True)
        script = client.register_script(lua.ACQUIRE)
        names = iter(range(10_000))

        def call(replica: str, rank: float, want: int) -> tuple[int, int]:
            """(status, slots granted) for ``replica`` asking ``want`` slots at ``rank``."""
            leases = [f"{replica}:{next(names)}" for _ in range(want)]
            args = [replica, "", TTL_MS, 1000, 5000, repr(rank), "t:wake", 1, CAP, *leases]
            status, _, _, granted = script(keys=KEYS, args=args)
            return int(status), int(granted)

        call.client = client  # type: ignore[attr-defined]
        yield call
        client.close()


def test_a_lone_replica_gets_every_free_slot_it_asks(acquire: Any) -> None:
    assert acquire("r1", 10.0, 3) == (1, 3)
    assert acquire("r1", 11.0, 3) == (1, 1)  # one slot of four left
    assert acquire("r1", 12.0, 1) == (0, 0)


def test_a_replica_ranked_ahead_keeps_the_slot_from_one_asking_first(acquire: Any) -> None:
    assert acquire("r1", 10.0, CAP) == (1, CAP)
    assert acquire("ahead", 1.0, 2) == (0, 0)  # full: it waits, ranked 1.0
    acquire.client.zpopmin(KEYS[3])  # one of r1's requests ends: its slot is free
    assert acquire("r1", 5.0, 2) == (0, 0)  # a better head waits: not r1's turn
    assert acquire("ahead", 1.0, 2) == (1, 1)


def test_with_a_replica_waiting_behind_a_grant_is_one_slot(acquire: Any) -> None:
    # r2 waits (nothing free); slots free up; r1, ranked ahead, asks for four.
    # Its second request may rank after r2's head: one slot, then it asks again.
    assert acquire("r1", 10.0, CAP) == (1, CAP)
    assert acquire("r2", 20.0, 1) == (0, 0)
    acquire.client.delete(KEYS[3])  # every request ends
    assert acquire("r1", 15.0, CAP) == (1, 1)
    assert acquire("r2", 20.0, 1) == (1, 1)
    assert acquire("r1", 25.0, CAP) == (1, 2)  # nobody waits behind it now


def test_a_freed_slot_wakes_the_replica_next_in_line(acquire: Any) -> None:
    client = acquire.client
    pubsub = client.pubsub()
    pubsub.subscribe("t:wake")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    release = client.register_script(lua.RELEASE)
    assert acquire("r1", 10.0, CAP) == (1, CAP)
    assert acquire("r3", 30.0, 1) == (0, 0)
    assert acquire("r2", 20.0, 1) == (0, 0)
    held = [str(m) for m in client.zrange(KEYS[3], 0, -1)]
    # r1 gives back two slots and leaves nothing: the two best-ranked waiters are woken.
    assert release(keys=KEYS[3:], args=["r1", "t:wake", 0, 2, *held[:2]]) == 2
    assert pubsub.get_message(timeout=5)["data"] == "r2 r3"
    # r2 no longer waits: leaving passes its turn (and the slots held for it) to r3.
    assert release(keys=KEYS[3:], args=["r2", "t:wake", 1, 0]) == 1
    assert pubsub.get_message(timeout=5)["data"] == "r3"
    assert acquire("r3", 30.0, 2) == (1, 2)
    pubsub.close()
