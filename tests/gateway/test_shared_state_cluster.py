"""Shared state on a real Redis Cluster (three primaries started by the test).

Every key of a deployment carries the hash tag ``{namespace}``, so each Lua
script's keys share a slot; the namespace here hashes to a node other than
the seed node the replicas are given, so every round trip is routed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from fairserve.gateway.config import ConfigError
from tests.gateway.helpers import KEY_A, KEY_B, gateway_config
from tests.gateway.redis_server import RedisClusterServers, needs_redis
from tests.gateway.servers import ServerThread
from tests.gateway.test_shared_state import (
    Upstream,
    _post,
    books_balance,
    counting_upstream_app,
    metric,
    replica_config,
    replicas,
    spread,
)
from tests.helpers import wait_until


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    app = counting_upstream_app()
    with ServerThread(app) as server:
        yield Upstream(server, app)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(3).start()
    try:
        yield servers
    finally:
        servers.stop()


def _off_seed_namespace(cluster: RedisClusterServers, prefix: str = "team") -> tuple[str, int]:
    """A namespace whose slot is served by a node other than the seed (the first),
    and the index of that node."""
    import redis

    seed = redis.Redis(port=cluster.nodes[0].port, decode_responses=True)
    try:
        ports = [n.port for n in cluster.nodes]
        owner = {(int(a), int(b)): ports.index(int(primary[1]))
                 for a, b, primary, *_ in seed.execute_command("CLUSTER", "SLOTS")}  # fmt: skip
        for i in range(100):
            slot = int(seed.execute_command("CLUSTER", "KEYSLOT", f"{{{prefix}-{i}}}"))
            node = next(n for (a, b), n in owner.items() if a <= slot <= b)
            if node != 0:
                return f"{prefix}-{i}", node
    finally:
        seed.close()
    raise AssertionError("every namespace tried hashes to the seed node")


def test_cluster_config_needs_redis_and_a_tcp_url() -> None:
    with pytest.raises(ConfigError, match=r"state.*cluster are only used with backend: redis"):
        gateway_config(["http://127.0.0.1:9"], state={"cluster": True})
    with pytest.raises(ConfigError, match=r"state.*cluster needs a redis:// or rediss://"):
        gateway_config(["http://127.0.0.1:9"],
                       state={"backend": "redis", "url": "unix:///tmp/r.sock", "cluster": True})  # fmt: skip


@needs_redis
def test_two_replicas_share_limits_and_slots_through_a_cluster(
    cluster: RedisClusterServers, upstream: Upstream
) -> None:
    namespace, _ = _off_seed_namespace(cluster)
    limit = 12
    tenants = {"a": {"api_key": KEY_A, "limits": {"requests_per_min": limit}},
               "b": {"api_key": KEY_B}}  # fmt: skip
    state = {"cluster": True, "namespace": namespace}
    configs = [replica_config(upstream.url, cluster.url, tenants=tenants, state=state)
               for _ in range(2)]  # fmt: skip
    with replicas(configs) as running:
        urls = [s.url for s, _ in running]
        gateways = [gw for _, gw in running]
        # the rate limit is the fleet's: 2N requests against N/min admit N
        codes = [r.status_code for r in spread(urls, 2 * limit)]
        assert limit <= codes.count(200) <= limit + 1, codes
        assert codes.count(200) + codes.count(429) == len(codes)
        # the engine cap (4) is the fleet's: b has no limit
        answers = spread(urls, 20, key=KEY_B)
        assert [r.status_code for r in answers] == [200] * 20
        assert wait_until(lambda: books_balance(gateways))
        assert upstream.counts.peak <= 4, upstream.counts.peak
        for gw in gateways:  # every decision went through the cluster
            assert metric(gw, "fairserve_shared_state_up") == 1
            for kind in ("rate", "slot"):
                assert metric(gw, "fairserve_shared_state_local_decisions_total", kind=kind) == 0
            assert metric(gw, "fairserve_shared_state_round_trip_seconds_count", op="sync") > 0
        # a slot freed on one replica woke the other (pub/sub through the cluster)
        assert sum(metric(gw, "fairserve_shared_state_wakes_total") for gw in gateways) > 0
        # every key of the deployment is in its one slot, on its one node
        import redis

        where = {}
        for node in cluster.nodes:
            client = redis.Redis(port=node.port, decode_responses=True)
            for key in client.scan_iter(match=f"{{{namespace}}}:*"):
                where[key] = node.port
            client.close()
        assert {f"{{{namespace}}}:{k}" for k in ("rate:a", "counters", "epoch")} <= where.keys()
        assert len(set(where.values())) == 1 and cluster.nodes[0].port not in where.values()


@needs_redis
def test_the_namespaces_node_restarted_mid_run_loses_and_doubles_nothing(
    cluster: RedisClusterServers, upstream: Upstream
) -> None:
    namespace, node = _off_seed_namespace(cluster, prefix="restart")
    state = {"cluster": True, "namespace": namespace}
    configs = [replica_config(upstream.url, cluster.url, state=state) for _ in range(2)]
    with replicas(configs) as running:
        urls, gateways = [s.url for s, _ in running], [gw for _, gw in running]

        async def run() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                tasks = [asyncio.ensure_future(_post(client, urls[i % 2], KEY_B))
                         for i in range(40)]  # fmt: skip
                await asyncio.sleep(0.3)
                await asyncio.to_thread(cluster.restart, node)  # an empty node comes back
                return await asyncio.gather(*tasks)

        answers = asyncio.run(run())
        # fail open: every request served once, none lost
        assert [r.status_code for r in answers] == [200] * len(answers)
        assert wait_until(lambda: books_balance(gateways))
        assert sum(gw.outcomes["completed"] for gw in gateways) == len(answers)
        assert wait_until(lambda: all(metric(gw, "fairserve_shared_state_up") == 1
                                      for gw in gateways))  # fmt: skip
        # the cap holds again once the replicas have re-asserted their leases
        upstream.counts.peak = 0
        assert [r.status_code for r in spread(urls, 20, KEY_B)] == [200] * 20
        assert upstream.counts.peak <= 4, upstream.counts.peak
