"""Several gateway replicas, one fair system: shared state on a real redis-server.

Replicas are gateways served in this process (one uvicorn thread and event
loop each) in front of the same upstream; Redis is Debian's redis-server on a
free loopback port (:mod:`tests.gateway.redis_server`). Assertions count
requests and slots, not times, so a loaded machine slows them without
breaking them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest

from fairserve.core.model import Request
from fairserve.core.policies.uwfq import VIRTUAL_CLOCK
from fairserve.gateway.app import Gateway
from fairserve.gateway.config import ConfigError, GatewayConfig
from tests.gateway.helpers import KEY_A, KEY_B, MODEL, gateway_config, gateway_thread
from tests.gateway.redis_server import RedisServer, needs_redis, redis_server
from tests.gateway.servers import ServerThread
from tests.helpers import wait_until

HOLD_S = 0.15  # how long the counting upstream keeps each request open


# ------------------------------------------------------------------ parts
def counting_upstream_app(hold_s: float = HOLD_S) -> Any:
    """An OpenAI-compatible upstream that holds each request ``hold_s`` and counts them.

    ``state.active`` / ``state.peak``: requests open now / at most at once;
    ``state.served``: requests answered.
    """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def generate(request: Request) -> StreamingResponse:
        await request.json()
        app.state.active += 1
        app.state.peak = max(app.state.peak, app.state.active)

        async def events() -> Any:
            try:
                head = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": MODEL}
                for word in ("one", " two"):
                    await asyncio.sleep(hold_s / 2)
                    chunk = {**head, "choices": [{"index": 0, "delta": {"content": word},
                                                  "finish_reason": None}]}  # fmt: skip
                    yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
                usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
                yield b"data: " + json.dumps({**head, "choices": [], "usage": usage}).encode()
                yield b"\n\ndata: [DONE]\n\n"
                app.state.served += 1
            finally:
                app.state.active -= 1

        return StreamingResponse(events(), media_type="text/event-stream")

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/v1/chat/completions", generate, methods=["POST"]),
                            Route("/health", health)])  # fmt: skip
    app.state.active = app.state.peak = app.state.served = 0
    return app


def replica_config(upstream: str, redis_url: str | None, **overrides: Any) -> GatewayConfig:
    """Two tenants in front of one upstream capped at 4; shared state on ``redis_url``."""
    state: dict[str, Any] = {"backend": "memory"}
    if redis_url is not None:
        # timeout_s: a round trip slower than this counts as an outage (the replica then
        # decides alone); 1 s keeps a loaded test machine's stalls from looking like one
        state = {"backend": "redis", "url": redis_url, "retry_interval_s": 0.1,
                 "sync_interval_s": 0.02, "lease_ttl_s": 2.0, "timeout_s": 1.0}  # fmt: skip
    state.update(overrides.pop("state", {}))
    backends = [{"url": upstream, "max_concurrency": 4, "metrics": "off"}]
    return gateway_config([upstream], backends=backends, state=state, **overrides)


@contextlib.contextmanager
def replicas(configs: Sequence[GatewayConfig]) -> Iterator[list[tuple[ServerThread, Gateway]]]:
    """One gateway per config, served at once."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(gateway_thread(c)) for c in configs]


async def _post(client: httpx.AsyncClient, url: str, key: str) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return await client.post(url + "/v1/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {key}"})  # fmt: skip


def spread(urls: Sequence[str], count: int, key: str = KEY_A) -> list[httpx.Response]:
    """``count`` requests at once, round robin over ``urls``."""

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(_post(client, urls[i % len(urls)], key) for i in range(count))
            )

    return asyncio.run(run())


def books_balance(gateways: Sequence[Gateway]) -> bool:
    """Every admitted request ended, on every replica."""
    return all(gw.admitted == sum(gw.outcomes.values()) for gw in gateways)


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    """One sample of a replica's metrics registry (0 when absent)."""
    value = gateway.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


class Upstream:
    """The counting upstream, served: its ``url`` and its counts (``peak``, ``served``)."""

    def __init__(self, server: ServerThread, app: Any) -> None:
        self.url = server.url
        self.counts = app.state


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    app = counting_upstream_app()
    with ServerThread(app) as server:
        yield Upstream(server, app)


# ------------------------------------------------------------------ config
def test_state_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"state.*backend redis needs url"):
        gateway_config(["http://127.0.0.1:9"], state={"backend": "redis"})
    with pytest.raises(ConfigError, match=r"state\.backend.*'memory' or 'redis'"):
        gateway_config(["http://127.0.0.1:9"], state={"backend": "etcd"})
    with pytest.raises(ConfigError, match=r"state\.on_unavailable.*'open' or 'closed'"):
        gateway_config(["http://127.0.0.1:9"], state={"on_unavailable": "maybe"})


# ------------------------------------------------------------------ rate limits
@needs_redis
@pytest.mark.parametrize("count", [2, 3])
def test_rate_limit_holds_fleet_wide(redis: RedisServer, upstream: Upstream, count: int) -> None:
    limit = 12
    tenants = {"a": {"api_key": KEY_A, "limits": {"requests_per_min": limit}},
               "b": {"api_key": KEY_B}}  # fmt: skip
    configs = [replica_config(upstream.url, redis.url, tenants=tenants) for _ in range(count)]
    with replicas(configs) as running:
        answers = spread([s.url for s, _ in running], 2 * limit)
        codes = [r.status_code for r in answers]
        # 2N requests over the replicas, an N/min limit: N accepted (the bucket
        # refills one request per 5 s; the burst takes well under that)
        assert limit <= codes.count(200) <= limit + 1, codes
        assert codes.count(200) + codes.count(429) == len(codes)
        for _, gw in running:  # every decision was the fleet's (no outage on the way)
            assert metric(gw, "fairserve_shared_state_local_decisions_total", kind="rate") == 0
        refused = next(r for r in answers if r.status_code == 429)
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert wait_until(lambda: books_balance([gw for _, gw in running]))


@needs_redis
def test_memory_state_gives_each_replica_its_own_limit(upstream: Upstream) -> None:
    # the contrast the shared state removes: three replicas, three limits
    limit = 6
    tenants = {"a": {"api_key": KEY_A, "limits": {"requests_per_min": limit}},
               "b": {"api_key": KEY_B}}  # fmt: skip
    configs = [replica_config(upstream.url, None, tenants=tenants) for _ in range(3)]
    with replicas(configs) as running:
        codes = [r.status_code for r in spread([s.url for s, _ in running], 3 * limit)]
        assert codes.count(200) == 3 * limit


# ------------------------------------------------------------------ engine slots
@needs_redis
@pytest.mark.parametrize("count", [2, 3])
def test_engine_concurrency_never_above_the_cap(
    redis: RedisServer, upstream: Upstream, count: int
) -> None:
    configs = [replica_config(upstream.url, redis.url) for _ in range(count)]
    with replicas(configs) as running:
        answers = spread([s.url for s, _ in running], 10 * count)
        assert [r.status_code for r in answers] == [200] * len(answers)
        gateways = [gw for _, gw in running]
        assert wait_until(lambda: books_balance(gateways))
        # the cap (4) holds for the fleet, not 4 per replica
        assert upstream.counts.peak <= 4, upstream.counts.peak
        assert upstream.counts.served == len(answers)
        # every lease was given back
        leases = f"{{fairserve}}:leases:{upstream.url}"
        assert wait_until(lambda: redis.client().zcard(leases) == 0)


@needs_redis
def test_memory_state_fills_the_engine_once_per_replica(upstream: Upstream) -> None:
    configs = [replica_config(upstream.url, None) for _ in range(3)]
    with replicas(configs) as running:
        spread([s.url for s, _ in running], 30)
        assert upstream.counts.peak > 4  # each replica fills the engine to its own cap


@needs_redis
def test_a_dead_replicas_slots_come_back_after_the_lease_ttl(
    redis: RedisServer, upstream: Upstream
) -> None:
    # A replica that died holding all four slots (leases it will never renew).
    seconds, micros = redis.client().time()
    expiry_ms = seconds * 1000 + micros // 1000 + 1000
    redis.client().zadd(f"{{fairserve}}:leases:{upstream.url}",
                        {f"dead:{i}": expiry_ms for i in range(4)})  # fmt: skip
    with replicas([replica_config(upstream.url, redis.url)]) as running:
        start = time.monotonic()
        answers = spread([running[0][0].url], 6)
        assert [r.status_code for r in answers] == [200] * 6
        assert time.monotonic() - start >= 0.9  # nothing was sent before the leases expired
        assert upstream.counts.peak <= 4


# ------------------------------------------------------------------ failure
@needs_redis
def test_redis_restart_mid_run_loses_and_doubles_nothing(
    redis: RedisServer, upstream: Upstream
) -> None:
    limit = 10
    tenants = {"a": {"api_key": KEY_A, "limits": {"requests_per_min": limit}},
               "b": {"api_key": KEY_B}}  # fmt: skip
    configs = [replica_config(upstream.url, redis.url, tenants=tenants) for _ in range(2)]
    with replicas(configs) as running:
        urls, gateways = [s.url for s, _ in running], [gw for _, gw in running]
        # tenant a spends its whole minute's budget before the restart
        assert [r.status_code for r in spread(urls, limit)] == [200] * limit

        async def run() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                load = [_post(client, urls[i % 2], KEY_B) for i in range(40)]
                tasks = [asyncio.ensure_future(c) for c in load]
                await asyncio.sleep(0.3)
                await asyncio.to_thread(redis.restart)  # mid-run: an empty Redis comes back
                return await asyncio.gather(*tasks)

        answers = asyncio.run(run())
        # fail open: every request of the run is served once; none lost
        assert [r.status_code for r in answers] == [200] * len(answers)
        assert wait_until(lambda: books_balance(gateways))
        assert sum(gw.outcomes["completed"] for gw in gateways) == limit + len(answers)
        # both replicas reconnected without a restart of their own
        assert wait_until(lambda: all(metric(gw, "fairserve_shared_state_up") == 1
                                      for gw in gateways))  # fmt: skip
        # while Redis was away each replica kept its own cap: at most the sum
        assert upstream.counts.peak <= 4 * len(gateways)
        # the restarted Redis was seeded from the replicas' last view of tenant
        # a's bucket, not refilled: at most the one request the staler view allows
        later = [r.status_code for r in spread(urls, 4)]
        assert later.count(200) <= 1, later
        # the cap holds again once the replicas have re-asserted their leases
        upstream.counts.peak = 0
        assert [r.status_code for r in spread(urls, 20, KEY_B)] == [200] * 20
        assert upstream.counts.peak <= 4, upstream.counts.peak


@needs_redis
def test_unavailable_open_decides_locally_closed_answers_503(
    redis: RedisServer, upstream: Upstream
) -> None:
    tenants = {"a": {"api_key": KEY_A, "limits": {"requests_per_min": 100}},
               "b": {"api_key": KEY_B}}  # fmt: skip
    configs = [replica_config(upstream.url, redis.url, tenants=tenants,
                              state={"on_unavailable": mode}) for mode in ("open", "closed")]  # fmt: skip
    with replicas(configs) as running:
        (open_url, open_gw), (closed_url, closed_gw) = [(s.url, gw) for s, gw in running]
        assert [r.status_code for r in spread([open_url, closed_url], 4)] == [200] * 4
        redis.stop()
        opened = spread([open_url], 3)
        closed = spread([closed_url], 3)
        assert [r.status_code for r in opened] == [200] * 3
        assert metric(open_gw, "fairserve_shared_state_local_decisions_total", kind="rate") >= 1
        assert metric(open_gw, "fairserve_shared_state_up") == 0
        assert [r.status_code for r in closed] == [503] * 3
        assert closed[0].json()["error"]["code"] == "shared_state_unavailable"
        assert closed[0].headers["retry-after"] == "1"
        redis.start()
        assert wait_until(lambda: metric(closed_gw, "fairserve_shared_state_up") == 1)
        assert [r.status_code for r in spread([closed_url], 3)] == [200] * 3
        assert wait_until(lambda: books_balance([open_gw, closed_gw]))


# ------------------------------------------------------------------ counters
@needs_redis
def test_fair_counters_agree_after_two_syncs(redis: RedisServer) -> None:
    """Approximate sharing, with its bound: a charge on one replica is in every replica's
    counters once each has synced after it (two ``sync_interval_s`` from the charge)."""

    async def run() -> None:
        states, policies = [], []
        for _ in range(2):
            config = replica_config("http://127.0.0.1:9", redis.url, policy="vtc",
                                    state={"sync_interval_s": 30.0, "lease_ttl_s": 120.0})  # fmt: skip
            gw = Gateway(config)
            await gw.state.start()  # the periodic merge is 30 s away: merges are explicit here
            states.append(gw.state)
            policies.append(gw.policy)
        first, second = policies
        first.on_served("a", 100, 10, 0.0)  # 100 + 2 x 10 weighted tokens
        second.on_served("b", 40, 0, 0.0)
        for state in [*states, *states]:  # each merges twice: the bound
            await state.sync()  # type: ignore[attr-defined]
        for policy in policies:
            assert policy.counter("a") == pytest.approx(120.0)  # type: ignore[attr-defined]
            assert policy.counter("b") == pytest.approx(40.0)  # type: ignore[attr-defined]
        # with a backlogged, both replicas lift b (returning from idle, 40) to a's
        # 120 before either merges: the fleet lifts it once (a max), not twice
        for i, policy in enumerate(policies):
            queued = [Request(10 + i, 0.0, 10, 8, tenant=t) for t in ("a", "b")]
            for req in queued:
                policy.push(req, 0.0)
            assert policy.counter("b") == pytest.approx(120.0)  # type: ignore[attr-defined]
            for req in queued:  # (pushed past the dispatcher: out again before it looks)
                policy.remove(req)
        first.on_served("a", 0, 50, 0.0)  # charges still add up: a 120 + 100
        for state in [*states, *states]:
            await state.sync()  # type: ignore[attr-defined]
        for policy in policies:
            assert policy.counter("a") == pytest.approx(220.0)  # type: ignore[attr-defined]
            assert policy.counter("b") == pytest.approx(120.0)  # type: ignore[attr-defined]
        # a replica joining later starts from the fleet's counters, not from zero
        late = Gateway(replica_config("http://127.0.0.1:9", redis.url, policy="vtc"))
        await late.state.start()
        await late.state.sync()  # type: ignore[attr-defined]
        assert late.policy.counter("a") == pytest.approx(220.0)  # type: ignore[attr-defined]
        for state in [*states, late.state]:
            await state.close()

    asyncio.run(run())


@needs_redis
def test_uwfq_virtual_system_is_the_fleets(redis: RedisServer) -> None:
    """uwfq's virtual clock and finish times merge too: a flood queued on one replica
    pushes its tenant's tags on every replica, and service anywhere moves the clock."""

    async def run() -> None:
        states, policies = [], []
        for _ in range(2):
            config = replica_config("http://127.0.0.1:9", redis.url, policy="uwfq:output_weight=1",
                                    state={"sync_interval_s": 30.0, "lease_ttl_s": 120.0})  # fmt: skip
            gw = Gateway(config)
            await gw.state.start()
            states.append(gw.state)
            policies.append(gw.policy)
        first, second = policies
        flood = [Request(i, 0.0, 1, 9, tenant="a", predicted_output_tokens=9) for i in range(5)]
        for req in flood:
            first.push(req, 0.0)  # tags 10, 20, ..., 50
        assert first.pop(0.0) is flood[0]
        first.on_served("a", 1, 9, 0.5)  # the clock moves 10 (a alone is active)
        for req in flood[1:]:  # (pushed past the dispatcher: out before it looks;
            first.remove(req)  # a's finish time stays where they put it)
        for state in [*states, *states]:
            await state.sync()  # type: ignore[attr-defined]
        for name in ("a", VIRTUAL_CLOCK):
            assert second.counter(name) == pytest.approx(first.counter(name))  # type: ignore[attr-defined]
        assert second.counter("a") == pytest.approx(50.0)  # type: ignore[attr-defined]
        assert second.counter(VIRTUAL_CLOCK) == pytest.approx(10.0)  # type: ignore[attr-defined]
        # On the second replica, a's next request queues behind the first's flood,
        # and b starts at the fleet's clock: b's head ranks before a's queued ones.
        late_a = Request(10, 1.0, 1, 9, tenant="a", predicted_output_tokens=9)
        b = Request(11, 1.0, 1, 4, tenant="b", predicted_output_tokens=4)
        second.push(late_a, 1.0)
        second.push(b, 1.0)
        ranks = [second.fleet_rank(r) for r in (late_a, b)]  # type: ignore[attr-defined]
        assert ranks == pytest.approx([60.0, 15.0])
        for req in (late_a, b):
            second.remove(req)
        for state in states:
            await state.close()

    asyncio.run(run())


# ------------------------------------------------------------------ predictor
def _observed(gateway: Gateway, tenant: str) -> int:
    """How many output lengths of ``tenant`` the replica's history predictor has learned."""
    ring = gateway.predictor.classes.get(tenant)  # type: ignore[union-attr]
    return 0 if ring is None else int(ring.count)


@needs_redis
def test_replicas_learn_from_each_others_requests(redis: RedisServer, upstream: Upstream) -> None:
    # Every request goes through the first replica; the second one's predictor
    # learns their lengths (2 tokens each) at its next merge, the first learns
    # each once (its own updates come back from the stream and are skipped).
    configs = [replica_config(upstream.url, redis.url, predictor="history") for _ in range(2)]
    with replicas(configs) as running:
        (first_server, first), (_, second) = running
        answers = spread([first_server.url], 6)
        assert [r.status_code for r in answers] == [200] * 6
        assert wait_until(lambda: _observed(second, "a") == 6)
        assert _observed(first, "a") == 6
        req = Request(99, 0.0, 5, 2, tenant="a")
        assert second.predictor.predict(req).mean_tokens == pytest.approx(2.0)  # type: ignore[union-attr]
        assert (
            metric(first, "fairserve_shared_state_predictor_updates_total", direction="sent") == 6
        )
        assert metric(second, "fairserve_shared_state_predictor_updates_total",
                      direction="applied") == 6  # fmt: skip
        # a replica that starts later learns the fleet's recent updates too
        with replicas([replica_config(upstream.url, redis.url, predictor="history")]) as late:
            assert wait_until(lambda: _observed(late[0][1], "a") == 6)
        assert _observed(first, "a") == _observed(second, "a") == 6


@needs_redis
def test_memory_state_learns_only_its_own_requests(upstream: Upstream) -> None:
    configs = [replica_config(upstream.url, None, predictor="history") for _ in range(2)]
    with replicas(configs) as running:
        (first_server, first), (_, second) = running
        spread([first_server.url], 3)
        assert wait_until(lambda: _observed(first, "a") == 3)
        assert _observed(second, "a") == 0


@needs_redis
def test_a_stopping_replica_sends_its_last_updates(redis: RedisServer) -> None:
    # Merges are 30 s apart: what the first replica learned reaches the second
    # only because it sends its held updates when it stops.
    def config() -> GatewayConfig:
        return replica_config("http://127.0.0.1:9", redis.url, predictor="history",
                              state={"sync_interval_s": 30.0, "lease_ttl_s": 120.0})  # fmt: skip

    async def run() -> None:
        first, second = Gateway(config()), Gateway(config())
        for gw in (first, second):
            await gw.state.start()
        for tokens in (10, 30):
            first.state.learned("a", float(tokens))
        await first.state.close()
        await second.state.exchange_learned()  # type: ignore[attr-defined]
        assert _observed(second, "a") == 2
        assert second.predictor.classes["a"].window().tolist() == [10.0, 30.0]  # type: ignore[union-attr]
        await second.state.close()

    asyncio.run(run())
