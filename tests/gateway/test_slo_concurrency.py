"""SLO-driven concurrency in the gateway: a TPOT objective holds the engine's batch down.

A simulated engine (Qwen2.5-1.5B on an H100 profile, where every running
sequence adds to the decode step) runs four times slower than real time. A
heavy tenant keeps 32 streams open, which fills the engine's batch of 32
(modelled step 12 ms, 49 ms on the wall clock); the light tenant's objective
is 30 ms per output token. Held to the objective, the dispatcher keeps the
batch small enough for it and the rest of the flood waits at the gateway.
With a tighter objective (14 ms, 1.5x its time per token alone), the light
tenant's E2E p99 beside the flood stays within 1.5x of its p99 alone.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from typing import Any

import httpx
import numpy as np
import pytest

from fairserve.engine_server.server import EngineSettings
from fairserve.gateway.app import Gateway
from fairserve.sim.config import EngineConfig
from tests.gateway.helpers import KEY_A, KEY_B, MODEL, gateway_config, gateway_thread
from tests.gateway.servers import engine_thread
from tests.helpers import wait_until

SEQS = 32
LIGHT_STREAMS = 2  # the light tenant's concurrent streams (a few % of the batch)
WARMUP_S = 3.0
OBJECTIVE_S = 0.030
# The tight objective, as a multiple of the light tenant's time per token alone
# measured in the same run (~9 ms on the wall clock here): set from the machine's
# own speed, since a fixed figure sits at 1.5x on one machine and 1.6x on a slower
# or busier one, which the E2E bound of 1.5x cannot absorb.
TIGHT_OF_ALONE = 1.3
ENGINE = EngineSettings(model=MODEL, engine=EngineConfig(max_num_seqs=SEQS), time_scale=4.0)


async def _stream(
    client: httpx.AsyncClient, url: str, key: str, tokens: int
) -> tuple[float, list[float]]:
    """One streamed completion: its E2E latency and the wall-clock gaps between its tokens."""
    body = {"model": MODEL, "prompt": "hello", "max_tokens": tokens, "ignore_eos": True,
            "stream": True}  # fmt: skip
    stamps: list[float] = []
    sent = time.perf_counter()
    async with client.stream("POST", url + "/v1/completions", json=body,
                             headers={"Authorization": f"Bearer {key}"}) as reply:  # fmt: skip
        assert reply.status_code == 200
        async for line in reply.aiter_lines():
            if line.startswith("data: {"):
                stamps.append(time.perf_counter())
    return stamps[-1] - sent, [b - a for a, b in itertools.pairwise(stamps)]


async def _scenario(url: str, duration_s: float, flood: bool) -> dict[str, Any]:
    stop = time.perf_counter() + duration_s
    light_itl: list[float] = []
    light_e2e: list[float] = []

    async def heavy_loop(client: httpx.AsyncClient) -> int:
        done = 0
        while time.perf_counter() < stop:
            await _stream(client, url, KEY_B, 40)
            done += 1
        return done

    async def light_loop(client: httpx.AsyncClient) -> int:
        # Steady state only: the light tenant is always there, but its requests of
        # the first WARMUP_S are not counted (the batch limit comes down from the
        # flood's full batch in 20% steps, and running requests are not preempted).
        warm = time.perf_counter() + WARMUP_S
        while time.perf_counter() < stop:
            sent = time.perf_counter()
            e2e, gaps = await _stream(client, url, KEY_A, 20)
            if sent >= warm:
                light_e2e.append(e2e)
                light_itl.extend(gaps)
        return 0

    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        heavy = [heavy_loop(client) for _ in range(SEQS if flood else 0)]
        done = await asyncio.gather(*heavy, *(light_loop(client) for _ in range(LIGHT_STREAMS)))
    return {"light_itl_s": statistics.median(light_itl), "heavy_done": sum(done),
            "light_e2e_p99_s": float(np.percentile(light_e2e, 99)),
            "light_requests": len(light_e2e)}  # fmt: skip


def _run(
    slo_concurrency: str, flood: bool = True, objective_s: float = OBJECTIVE_S
) -> tuple[dict[str, Any], Gateway]:
    with engine_thread(ENGINE) as engine:
        config = gateway_config(
            [engine.url], policy="vtc",
            tenants={"a": {"api_key": KEY_A, "slo": {"tpot_s": objective_s}},
                     "b": {"api_key": KEY_B}},
            backends=[{"url": engine.url, "max_concurrency": 64, "max_engine_waiting": 64,
                       "metrics": "off"}],
            dispatch={"slo_concurrency": slo_concurrency, "health_interval_s": 1.0},
        )  # fmt: skip
        with gateway_thread(config) as (server, gw):
            result = asyncio.run(_scenario(server.url, 10.0, flood))
            assert wait_until(lambda: gw.admitted == sum(gw.outcomes.values()), timeout_s=30)
            assert gw.outcomes["completed"] == gw.admitted
            result["limit"] = gw.backends[0].tpot_limit
            return result, gw


@pytest.fixture(scope="module")
def runs() -> dict[str, Any]:
    """The flood with the objective ignored (off) and held (on), and the light tenant alone."""
    alone = _run("auto", flood=False)[0]
    tight_s = TIGHT_OF_ALONE * alone["light_itl_s"]
    return {"off": _run("off")[0], "on": _run("auto")[0],  # on: tenant a has a TPOT objective
            "alone": alone, "tight_s": tight_s,
            "tight": _run("auto", objective_s=tight_s)[0]}  # fmt: skip


def test_a_tpot_objective_holds_the_engines_batch_to_meet_it(
    runs: dict[str, Any],
) -> None:
    off, on = runs["off"], runs["on"]
    print("off", off, "on", on)
    # The flood alone makes the light tenant's tokens come far slower than its objective.
    assert off["light_itl_s"] > 1.3 * OBJECTIVE_S
    # Held to it: the batch limit came down, the light tenant's tokens come about as
    # fast as promised, and the flood is still served.
    assert on["limit"] is not None and on["limit"] < SEQS
    assert on["light_itl_s"] < 0.75 * off["light_itl_s"]
    assert on["light_itl_s"] < 1.2 * OBJECTIVE_S
    assert on["heavy_done"] > 0.3 * off["heavy_done"]


def test_the_light_tenants_e2e_p99_beside_the_flood_within_1_5x_of_alone(
    runs: dict[str, Any],
) -> None:
    """Held to a TPOT objective that a full batch misses and a smaller one meets (1.3x
    its time per token alone), the light tenant's E2E p99 beside the flood stays within
    1.5x of its p99 alone under vtc, while the flood still gets the rest of the engine.

    Wall-clock latencies on a shared machine: one fresh repeat of the flooded run is
    allowed (as in test_fairness); both missing fails the test."""
    alone, tight, off = runs["alone"], runs["tight"], runs["off"]
    tight_s = runs["tight_s"]
    bound = 1.5 * alone["light_e2e_p99_s"]
    print("alone", alone, "tight", tight)
    assert alone["light_itl_s"] < tight_s < off["light_itl_s"]  # a full batch misses it
    assert off["light_e2e_p99_s"] > bound  # what the objective fixes
    if tight["light_e2e_p99_s"] > bound:
        tight = _run("auto", objective_s=tight_s)[0]
        print("repeat", tight)
    assert tight["light_requests"] >= 20
    assert tight["light_e2e_p99_s"] <= bound
    assert tight["heavy_done"] > 0.3 * off["heavy_done"]
