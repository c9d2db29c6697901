"""One tenant floods through every replica; the light tenant fares as well as with one replica.

The deployment of ``test_fairness`` (two simulated engines, 8 sequences per
step, at most one request waiting in each engine, VTC, least-tokens), now
behind one gateway (its own memory state, the default) or two replicas sharing
a real Redis. Both tenants' requests are dealt round robin over the replicas,
so each replica sees half of the flood and half of the light tenant, and only
the shared engine slots keep the engines from taking twice their share.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fairserve.engine_server.server import EngineSettings
from fairserve.loadgen.bench import plan, run_bench
from fairserve.sim.config import EngineConfig
from fairserve.workload import load
from tests.gateway.helpers import KEY_A, KEY_B, gateway_config
from tests.gateway.redis_server import RedisServer, needs_redis, redis_server
from tests.gateway.servers import engine_thread
from tests.gateway.test_fairness import MODEL, SEQS, _spec
from tests.gateway.test_shared_state import books_balance, replicas
from tests.helpers import wait_until

BOUND = 1.2  # the issue's: light p99 with two replicas <= 1.2 x with one
# Four wall seconds per modelled second (test_fairness runs at two): the same
# engine steps cost half the CPU per wall second, so three gateways' worth of
# event loops in this process do not stretch them.
ENGINE = EngineSettings(model=MODEL, engine=EngineConfig(max_num_seqs=SEQS), time_scale=4.0)
LIGHT = {"tenant": "a", "arrival": {"process": "poisson", "rate_per_s": 4},
         "prompt": {"dist": "constant", "tokens": 64}, "output": {"dist": "constant", "tokens": 32}}  # fmt: skip
HEAVY = {"tenant": "b", "arrival": {"process": "poisson", "rate_per_s": 20},
         "prompt": {"dist": "constant", "tokens": 128}, "output": {"dist": "constant", "tokens": 32}}  # fmt: skip


@pytest.fixture(scope="module")
def engines() -> Iterator[list[str]]:
    with engine_thread(ENGINE) as e1, engine_thread(ENGINE) as e2:
        yield [e1.url, e2.url]


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def _light_e2e(engines: list[str], spec: Path, redis_url: str | None, count: int) -> np.ndarray:
    """The light tenant's E2E latencies (s) through ``count`` replicas; every request completes."""
    backends = [{"url": u, "max_concurrency": SEQS + 1, "metrics": "off"} for u in engines]
    state: dict[str, Any] = {"backend": "memory"}
    if redis_url is not None:
        state = {"backend": "redis", "url": redis_url}
    configs = [gateway_config(engines, policy="vtc", backends=backends, models=[], state=state)
               for _ in range(count)]  # fmt: skip
    with replicas(configs) as running:
        requests = plan(load(spec), {"a": KEY_A, "b": KEY_B}, None)

        async def run() -> list[Any]:
            return await asyncio.gather(*(
                run_bench(server.url, requests[i::count], model=MODEL, max_duration_s=60)
                for i, (server, _) in enumerate(running)
            ))  # fmt: skip

        results = asyncio.run(run())
        gateways = [gw for _, gw in running]
        assert wait_until(lambda: books_balance(gateways))
        assert sum(gw.outcomes["completed"] for gw in gateways) == len(requests)
    e2e = []
    for records, _ in results:
        arrays = records.to_numpy()
        light = arrays.tenant == arrays.tenant_names.index("a")
        e2e.append(arrays.e2e_s[light & arrays.completed])
    return np.concatenate(e2e)


def _problem(engines: list[str], redis: RedisServer, tmp_path: Path) -> str | None:
    """Both deployments three times, alternately (drift in the machine's load hits both
    alike); the p99 of each one's pooled light-tenant latencies (about 80 requests).

    One replica replays the plan the same way each time; two do not (which engine a
    request lands on, and so how long it waits there, varies run to run), so the p99
    of one run of two replicas is close to its worst request: pooling runs measures
    the deployment, not one draw of it."""
    spec = _spec(tmp_path / "mixed.yaml", [LIGHT, HEAVY])
    runs: dict[int, list[np.ndarray]] = {1: [], 2: []}
    for _ in range(3):
        runs[1].append(_light_e2e(engines, spec, None, 1))
        runs[2].append(_light_e2e(engines, spec, redis.url, 2))
    one, two = (float(np.percentile(np.concatenate(runs[n]), 99)) for n in (1, 2))
    print(f"light p99: one replica {one:.3f} s, two replicas sharing Redis {two:.3f} s")
    return None if two <= BOUND * one else f"two replicas {two:.3f} > {BOUND} x {one:.3f}"


@needs_redis
@pytest.mark.slow
def test_light_tenant_p99_with_two_replicas_within_1_2x_of_one(
    engines: list[str], redis: RedisServer, tmp_path: Path
) -> None:
    # Wall-clock latencies on a shared machine: one fresh repeat of the pair is
    # allowed (as in test_fairness); both missing fails the test.
    # Every part runs in this one process, which holds the objects of the tests
    # that ran before (real replicas and engines each have their own small heap):
    # frozen, the garbage collector does not rescan them during the runs. (Those
    # pauses cost two replicas far more than one: a 3M-object heap took one run
    # of two replicas to 2.9 s, against 2.0-2.2 s frozen; one replica 1.91 s both.)
    gc.collect()
    gc.freeze()
    try:
        first = _problem(engines, redis, tmp_path)
        if first:
            print("first run missed:", first, "- repeating once")
            second = _problem(engines, redis, tmp_path)
            assert second is None, (first, second)
    finally:
        gc.unfreeze()
