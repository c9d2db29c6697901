"""Unit tests of the gateway's pieces, from small hand-built inputs."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from typer.testing import CliRunner

from fairserve.cli.app import app as fairserve_app
from fairserve.core.model import Request
from fairserve.core.policies import POLICIES
from fairserve.core.route import ROUTERS
from fairserve.gateway.backends.engine_metrics import EngineFigures, parse_engine_metrics
from fairserve.gateway.backends.state import BackendState, Load
from fairserve.gateway.config import ConfigError, parse_config
from fairserve.gateway.dispatch import NoBackend, QueueTimeout, Scheduler, TicketState
from fairserve.gateway.errors import APIError
from fairserve.gateway.protocol import Endpoint, estimate_tokens, parse_request
from fairserve.gateway.tenants import Tenants, TokenBucket
from fairserve.loadgen.bench import BenchError, check_url, synthetic_prompt
from fairserve.metrics.records import RequestRecords
from fairserve.sim.config import EngineConfig
from fairserve.sim.cost import cost_model
from fairserve.sim.stepper import StepEngine
from tests.gateway.helpers import KEY_A, KEY_B, LightBesideFlood, gateway_config


def test_prompt_estimate_and_parse() -> None:
    assert estimate_tokens("abcd" * 10) == 10 and estimate_tokens("abcde") == 2
    assert estimate_tokens(synthetic_prompt(37, 1)) == 37
    p = parse_request(Endpoint.COMPLETIONS, b'{"model": "m", "prompt": [1, 2, 3], "max_tokens": 5}')
    assert (p.prompt_tokens, p.max_tokens, p.stream) == (3, 5, False)
    chat = {"model": "m", "messages": [{"role": "user", "content": "abcdabcd"}],
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    p = parse_request(Endpoint.CHAT, json.dumps(chat).encode())
    assert p.prompt_tokens == 2 + 3 + 3 and p.include_usage and p.text == "abcdabcd"
    with pytest.raises(APIError) as exc:
        parse_request(Endpoint.CHAT, b'{"model": "m", "messages": [{"role": "x"}]}')
    assert exc.value.status == 400 and exc.value.param == "messages"
    with pytest.raises(APIError):
        parse_request(Endpoint.CHAT, b'{"model": "m", "messages": [], "max_tokens": true}')


def test_auth_is_by_hash_and_limits_charge_buckets() -> None:
    cfg = gateway_config(["http://127.0.0.1:1"], tenants={
        "a": {"api_key": KEY_A, "limits": {"requests_per_min": 60, "max_prompt_tokens": 10}},
        "b": {"api_key_sha256": hashlib.sha256(KEY_B.encode()).hexdigest()},
    })  # fmt: skip
    assert "sk-" not in repr(cfg)
    tenants = Tenants(cfg, 0.0)
    assert tenants.authenticate(f"Bearer {KEY_B}").name == "b"
    assert tenants.authenticate(f"bearer {KEY_A}").name == "a"
    for header in (None, "", "Bearer", "Basic x", "Bearer sk-other"):
        with pytest.raises(APIError) as exc:
            tenants.authenticate(header)
        assert exc.value.status == 401
    a = tenants.by_name["a"]
    with pytest.raises(APIError) as exc:
        tenants.admit(a, 11, 5, 0.0)
    assert exc.value.code == "prompt_too_long"
    for _ in range(60):
        tenants.admit(a, 5, 5, 0.0)
    with pytest.raises(APIError) as exc:
        tenants.admit(a, 5, 5, 0.0)
    assert exc.value.status == 429 and exc.value.headers["Retry-After"] == "1"
    tenants.admit(a, 5, 5, 1.0)  # one request a second comes back


def test_token_bucket_refills_to_capacity() -> None:
    bucket = TokenBucket(120, 0.0)
    bucket.take(120, 0.0)
    assert bucket.wait_s(2, 0.0) == pytest.approx(1.0)
    assert bucket.wait_s(2, 1.0) == 0.0
    assert bucket.wait_s(1000, 1000.0) > 0  # never above one minute's worth


def test_config_errors_name_the_key() -> None:
    base = gateway_config(["http://127.0.0.1:1"]).model_dump(exclude_none=True)
    bad = {**base, "tenants": {"a": {"api_key": "k", "limits": {"requests_per_min": 0}}}}
    with pytest.raises(ConfigError, match=r"tenants\.a\.limits\.requests_per_min"):
        parse_config(bad)
    with pytest.raises(ConfigError, match=r"backends\.0\.url"):
        parse_config({**base, "backends": [{"url": "ftp://x"}]})
    with pytest.raises(ConfigError, match="share an API key"):
        parse_config({**base, "tenants": {"a": {"api_key": "k"}, "b": {"api_key": "k"}}})
    with pytest.raises(ConfigError, match="exactly one of api_key"):
        parse_config({**base, "tenants": {"a": {"weight": 2}}})


def test_engine_metrics_parsing() -> None:
    vllm = ('# HELP x\nvllm:num_requests_running{model_name="m",engine="0"} 3.0\n'
            'vllm:num_requests_running{model_name="m",engine="1"} 2.0\n'
            'vllm:num_requests_waiting{model_name="m"} 7.0\n')  # fmt: skip
    assert parse_engine_metrics(vllm) == EngineFigures(5, 7)
    kv = (
        vllm
        + 'vllm:kv_cache_usage_perc{engine="0"} 0.5\nvllm:kv_cache_usage_perc{engine="1"} 0.7\n'
    )
    assert parse_engine_metrics(kv).kv_usage == pytest.approx(0.6)  # type: ignore[union-attr]
    old = vllm + "vllm:gpu_cache_usage_perc 0.25\n"  # the name before vLLM renamed it
    assert parse_engine_metrics(old).kv_usage == 0.25  # type: ignore[union-attr]
    sglang = "sglang:num_running_reqs 4\nsglang:num_queue_reqs 1\nsglang:token_usage 0.3\n"
    assert parse_engine_metrics(sglang) == EngineFigures(4, 1, 0.3)
    assert parse_engine_metrics("up 1\n") is None
    assert parse_engine_metrics("<html>not metrics</html>\n{{{") is None
    assert parse_engine_metrics(vllm, "sglang") is None


def _scheduler(concurrency: int) -> tuple[Scheduler, list[BackendState], Tenants]:
    cfg = gateway_config(["http://127.0.0.1:1", "http://127.0.0.1:2"], backends=[
        {"url": "http://127.0.0.1:1", "max_concurrency": concurrency, "metrics": "off"},
        {"url": "http://127.0.0.1:2", "max_concurrency": concurrency, "metrics": "off"},
    ])  # fmt: skip
    backends = [BackendState(i, b) for i, b in enumerate(cfg.backends)]
    sched = Scheduler(
        POLICIES.create("fifo"), ROUTERS.create("least-tokens"), backends, lambda: 0.0
    )
    return sched, backends, Tenants(cfg, 0.0)


def test_scheduler_respects_capacity_order_and_expiry() -> None:
    async def run() -> None:
        sched, backends, tenants = _scheduler(1)
        a = tenants.by_name["a"]
        tickets = [sched.submit(Request(i, 0.0, 10, 10, tenant="a"), a, 0.05) for i in range(4)]
        assert [t.state for t in tickets] == [TicketState.ASSIGNED] * 2 + [TicketState.QUEUED] * 2
        assert {t.future.result().index for t in tickets[:2]} == {0, 1}
        assert a.queued == 2 and sched.queued == 2 and sched.queued_prompt_tokens == 20
        sched.release(tickets[0].future.result(), tickets[0])  # capacity frees: FIFO head goes
        assert tickets[2].state is TicketState.ASSIGNED and tickets[3].state is TicketState.QUEUED
        await asyncio.sleep(0.1)  # the last one waits past max_wait
        assert isinstance(tickets[3].future.exception(), QueueTimeout)
        assert a.queued == 0 and sched.queued == 0 and len(sched.policy) == 0
        assert sched.queued_prompt_tokens == 0
        backends[0].healthy = backends[1].healthy = False
        sched.release(tickets[1].future.result(), tickets[1])
        late = sched.submit(Request(9, 0.0, 10, 10, tenant="a"), a, 10)
        # No healthy backend: it fails at once instead of waiting out its 10 s.
        assert late.state is TicketState.DROPPED and isinstance(late.future.exception(), NoBackend)
        assert len(sched.policy) == 0 and a.queued == 0 and sched.queued == 0

    asyncio.run(run())


def test_step_engine_cancel_frees_blocks() -> None:
    cost = cost_model("H100-80GB", "Qwen2.5-1.5B")
    engine = StepEngine(0, cost, EngineConfig(max_num_seqs=2, num_gpu_blocks=40), RequestRecords())
    reqs = [Request(i, 0.0, 100, 50) for i in range(4)]
    for req in reqs:
        engine.add(req, 0.0)
    for _ in range(5):
        engine.advance()
    assert engine.num_running == 2 and engine.pool.free_blocks < 40
    for req in reqs:
        assert engine.cancel(req, engine.now)
    assert not engine.cancel(reqs[0], engine.now)
    assert engine.pool.free_blocks == 40 and engine.outstanding_tokens == 0
    engine.advance()
    assert engine.wake_s is None and len(engine.records) == 4


def test_bench_url_must_be_loopback() -> None:
    assert check_url("http://127.0.0.1:8000/", False) == "http://127.0.0.1:8000"
    with pytest.raises(BenchError, match="allow-remote"):
        check_url("http://example.com", False)
    assert check_url("http://example.com", True) == "http://example.com"


def test_cli_registers_commands_and_fails_clearly() -> None:
    app = fairserve_app
    runner = CliRunner()
    assert runner.invoke(app, ["engine", "--help"]).exit_code == 0
    result = runner.invoke(app, ["engine", "--model", "GPT-9"])
    assert result.exit_code == 2 and "GPT-9" in result.output
    result = runner.invoke(app, ["bench", "--url", "http://127.0.0.1:1"])
    assert result.exit_code == 2 and "--trace or --workload" in result.output


def test_capacity_follows_the_engines_counts() -> None:
    cfg = gateway_config(["http://127.0.0.1:1"], backends=[
        {"url": "http://127.0.0.1:1", "max_concurrency": 100, "max_engine_waiting": 2},
    ])  # fmt: skip
    backend = BackendState(0, cfg.backends[0])
    loads = [Load(Request(i, 0.0, 10, 10)) for i in range(20)]
    for load in loads[:6]:
        backend.take(load)
    assert backend.num_waiting == 0 and backend.num_running == 6  # no figures: all running
    backend.observe_engine(EngineFigures(running=4, waiting=2))  # full at 4
    assert (backend.running_cap, backend.num_running, backend.num_waiting) == (4, 4, 2)
    assert not backend.has_room(20)  # its queue is at max_engine_waiting
    backend.give_back(loads[0])  # one ends: a waiting one moves into the batch
    assert (backend.num_running, backend.num_waiting) == (4, 1) and backend.has_room(20)
    # KV pressure: the engine preempts down to 2 running; the cap shrinks with it.
    backend.observe_engine(EngineFigures(running=2, waiting=3, kv_usage=0.98))
    assert (backend.running_cap, backend.num_waiting, backend.kv_usage) == (2, 3, 0.98)
    assert not backend.has_room(20)
    # The engine's own queue counts, also requests that are not the gateway's.
    for load in loads[1:4]:
        backend.give_back(load)
    backend.observe_engine(EngineFigures(running=2, waiting=0))
    assert backend.num_waiting == 0 and backend.has_room(20)
    backend.observe_engine(EngineFigures(running=6, waiting=0))  # it runs more than before
    assert backend.running_cap == 6
    # Lagging gauges: an engine that reports fewer requests than the gateway has
    # there in flight neither teaches the batch limit nor lowers the estimate.
    for load in loads[6:14]:
        backend.take(load)  # 10 in flight
    backend.observe_engine(EngineFigures(running=1, waiting=1))
    assert backend.engine_stale and backend.running_cap == 6
    assert (backend.num_running, backend.num_waiting) == (6, 4) and not backend.has_room(20)
    backend.observe_engine(EngineFigures(running=0, waiting=0))
    assert backend.num_running + backend.num_waiting == backend.inflight == 10
    backend.observe_engine(EngineFigures(running=8, waiting=2))  # fresh again
    assert not backend.engine_stale and backend.running_cap == 8
    assert (backend.num_running, backend.num_waiting) == (8, 2)
    backend.forget_engine()
    assert backend.running_cap is None and backend.num_running == backend.inflight


def _backend_with_20_in_flight() -> BackendState:
    """A backend capped at 64 with 20 requests (without an objective) sent to it."""
    cfg = gateway_config(["http://127.0.0.1:1"], backends=[
        {"url": "http://127.0.0.1:1", "max_concurrency": 64},
    ])  # fmt: skip
    backend = BackendState(0, cfg.backends[0])
    for i in range(20):
        backend.take(Load(Request(i, 0.0, 10, 10)))
    return backend


def test_the_tpot_batch_limit_follows_the_measured_time_per_token() -> None:
    backend = _backend_with_20_in_flight()
    assert backend.tpot_allows(4, objective=False)  # no objective yet: no limit
    now = 0.0
    backend.observe_itl(0.050, now, objective_s=0.030)  # too slow: down to 0.8 x 20
    assert backend.tpot_limit == 16.0 and not backend.tpot_allows(4, objective=False)
    for k in range(12):  # faster now; within the adjust interval the limit stays
        backend.observe_itl(0.001, now + 0.01 * (k + 1), objective_s=0.030)
    assert backend.tpot_limit == 16.0
    # Fast again, and the limit held a request back (above): one more.
    backend.observe_itl(0.001, now + 1.0, objective_s=0.030)
    assert backend.itl_s is not None and backend.itl_s < 0.024 and backend.tpot_limit == 17.0
    backend.observe_itl(0.001, now + 2.0, objective_s=0.030)  # nothing held since: stays
    assert backend.tpot_limit == 17.0
    assert not backend.tpot_allows(4, objective=False)  # 20 in flight, limit 17: held
    backend.observe_itl(0.001, now + 3.0, objective_s=0.030)
    assert backend.tpot_limit == 18.0
    backend.observe_itl(0.001, now + 4.0, objective_s=None)  # no objective in force
    assert backend.tpot_limit is None and backend.tpot_allows(4, objective=False)


def test_requests_with_an_objective_have_reserved_seats_past_the_limit() -> None:
    """The limit came down below the batch the flood holds: a request with an objective
    still goes, up to ``reserve_seqs`` of them, and without one it waits for the limit."""
    backend = _backend_with_20_in_flight()
    backend.observe_itl(0.050, 0.0, objective_s=0.030)  # limit 16, 20 in flight
    assert not backend.tpot_allows(4, objective=False)
    for i in range(4):
        assert backend.tpot_allows(4, objective=True)
        backend.take(Load(Request(100 + i, 0.0, 10, 10), objective=True))
    assert backend.inflight_objective == 4
    assert not backend.tpot_allows(4, objective=True)  # its seats are taken: the limit again
    backend.give_back(next(load for load in backend.loads if load.objective))
    assert backend.inflight_objective == 3 and backend.tpot_allows(4, objective=True)


def test_a_request_with_an_objective_goes_past_a_head_held_for_its_seats() -> None:
    """fifo puts the flood's requests first; once the TPOT limit holds them back (they
    must leave the reserved seats free), the light tenant's request behind them still
    takes a reserved seat at once, and the flood's go only as the limit allows."""
    setup = LightBesideFlood(tpot_s=0.03)
    light, heavy, backend = setup.light, setup.heavy, setup.backend

    async def run() -> None:
        scheduler, flood = setup.flood()
        assert all(t.state is TicketState.ASSIGNED for t in flood[:12])  # no limit yet
        backend.observe_itl(0.050, 0.0, objective_s=0.03)  # too slow: limit 0.8 x 12
        assert backend.tpot_limit == pytest.approx(9.6)
        held = [setup.submit(scheduler, 100 + i, heavy) for i in range(3)]
        ticket = setup.submit(scheduler, 200, light)
        assert [t.state for t in held] == [TicketState.QUEUED] * 3
        assert ticket.state is TicketState.ASSIGNED and backend.inflight_objective == 1
        assert scheduler.queued == 3 and light.queued == 0 and heavy.queued == 3
        for t in held:
            scheduler.withdraw(t)
        for t in [ticket, *flood]:
            scheduler.release(backend, t)
        assert backend.inflight == 0

    asyncio.run(run())


def test_a_tpot_objective_stays_in_force_while_its_tenant_is_active() -> None:
    cfg = gateway_config(["http://127.0.0.1:1"], tenants={
        "a": {"api_key": "sk-a", "slo": {"tpot_s": 0.05}},
        "b": {"api_key": "sk-b", "slo": {"tpot_s": 0.02}},
        "c": {"api_key": "sk-c"},
    }, dispatch={"slo_hold_s": 10.0})  # fmt: skip
    tenants = Tenants(cfg, 0.0)
    a, b = tenants.by_name["a"], tenants.by_name["b"]
    scheduler = Scheduler(POLICIES.build("fifo"), ROUTERS.build("least-tokens"), [],
                          lambda: 0.0, tenants=list(tenants.by_name.values()),
                          config=cfg.dispatch)  # fmt: skip
    assert scheduler.tpot_objective_s(100.0) is None
    a.active = 1
    assert scheduler.tpot_objective_s(100.0) == 0.05
    b.active, b.last_end_s = 0, 95.0  # ended 5 s ago: still in force
    assert scheduler.tpot_objective_s(100.0) == 0.02
    assert scheduler.tpot_objective_s(106.0) == 0.05
    off = gateway_config(["http://127.0.0.1:1"], dispatch={"slo_concurrency": "off"},
                         tenants={"a": {"api_key": "sk-a", "slo": {"tpot_s": 0.05}}})  # fmt: skip
    quiet = Scheduler(POLICIES.build("fifo"), ROUTERS.build("least-tokens"), [], lambda: 0.0,
                      tenants=list(Tenants(off, 0.0).by_name.values()), config=off.dispatch)  # fmt: skip
    assert quiet.tpot_tenants == []
