"""Fairness live: one tenant floods, the other's latency holds under VTC; the simulator agrees.

Deployment (live and simulated alike): two engines modelling Llama-3.1-8B on
H100-80GB with 8 sequences per step, run at ``TIME_SCALE`` (3 wall seconds per
modelled second, so a loaded 2-core machine keeps to the ~13 ms steps); the
gateway keeps at most one request waiting in each engine (``max_concurrency``
= 8 + 1, the simulator's ``max_engine_waiting`` = 1) and orders the rest with
the policy; least-tokens routing. The simulator runs the same workload with
its arrival times divided by ``TIME_SCALE`` and its latencies are multiplied
back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from fairserve.cli.app import app as fairserve_app
from fairserve.core.policies import POLICIES
from fairserve.engine_server.server import EngineSettings
from fairserve.loadgen.bench import plan, run_bench
from fairserve.metrics.summary import summarize
from fairserve.sim.config import EngineConfig
from fairserve.workload import load
from tests.gateway.helpers import KEY_A, KEY_B, gateway_config, gateway_thread
from tests.gateway.servers import engine_thread
from tests.helpers import wait_until

TIME_SCALE = 3.0
#: The sources' times x this = the modelled workload (light 5 req/s, flood 90 req/s,
#: for 3 s), which the simulator runs; live, its times are stretched by TIME_SCALE.
#: (At 2 wall seconds per modelled second, CI's pure-Python run on a slow machine
#: lagged the model by 12% at the light tenant's median.)
TO_MODELLED = 0.5
MODEL = "Llama-3.1-8B"
SEQS = 8
ENGINE = EngineSettings(model=MODEL, engine=EngineConfig(max_num_seqs=SEQS), time_scale=TIME_SCALE)
DURATION_S = 6.0
LIGHT = {"tenant": "a", "arrival": {"process": "poisson", "rate_per_s": 2.5},
         "prompt": {"dist": "constant", "tokens": 64}, "output": {"dist": "constant", "tokens": 64}}  # fmt: skip
HEAVY = {"tenant": "b", "arrival": {"process": "poisson", "rate_per_s": 45},
         "prompt": {"dist": "constant", "tokens": 128}, "output": {"dist": "constant", "tokens": 32}}  # fmt: skip


def _spec(path: Path, sources: list[dict[str, Any]], time_factor: float = 1.0) -> Path:
    spec: dict[str, Any] = {"seed": 3, "duration_s": DURATION_S, "sources": sources}
    if time_factor != 1.0:
        spec["transforms"] = [{"op": "scale_time", "factor": time_factor}]
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def engines() -> Iterator[list[str]]:
    with engine_thread(ENGINE) as e1, engine_thread(ENGINE) as e2:
        yield [e1.url, e2.url]


def _live(urls: list[str], spec: Path, policy: str) -> dict[str, Any]:
    backends = [{"url": u, "max_concurrency": SEQS + 1, "metrics": "off"} for u in urls]
    config = gateway_config(urls, policy=policy, backends=backends, models=[])
    with gateway_thread(config) as (server, gw):
        requests = plan(load(spec), {"a": KEY_A, "b": KEY_B}, None)
        records, _ = asyncio.run(run_bench(server.url, requests, model=MODEL, max_duration_s=60))
        assert wait_until(lambda: gw.admitted == sum(gw.outcomes.values()))
        assert gw.outcomes["completed"] == gw.admitted
    return summarize(records.to_numpy()).to_dict()


def _simulated(spec: Path, policy: str) -> dict[str, Any]:
    args = ["simulate", "--workload", str(spec), "--model", MODEL, "--gpu", "H100-80GB",
            "--instances", "2", "--max-num-seqs", str(SEQS), "--max-engine-waiting", "1",
            "--router", "least-tokens", "--policy", policy, "--json"]  # fmt: skip
    result = CliRunner().invoke(fairserve_app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def _e2e(summary: dict[str, Any], tenant: str | None = None) -> dict[str, float]:
    part = summary if tenant is None else summary["per_tenant"][tenant]
    return part["e2e_s"]  # type: ignore[no-any-return]


def _problems(engines: list[str], tmp_path: Path) -> list[str]:
    """Run the live scenario once; what (if anything) breaks the acceptance figures."""
    problems = []
    stretch = TO_MODELLED * TIME_SCALE
    alone = _live(engines, _spec(tmp_path / "alone.yaml", [LIGHT], stretch), "vtc")
    mixed_spec = _spec(tmp_path / "mixed.yaml", [LIGHT, HEAVY], stretch)
    mixed = _live(engines, mixed_spec, "vtc")
    light_alone, light_mixed = _e2e(alone, "a"), _e2e(mixed, "a")
    print("light alone", light_alone, "light with flood", light_mixed)
    # With the shipped H100 profile every step pays per running sequence, so the
    # flood's decodes in the batch slow the light tenant's too (simulated, in
    # modelled seconds: p99 0.77 s with the flood, 0.48 s alone, 1.6x; fifo 3.0 s, 6.3x).
    if not light_mixed["p99"] <= 2.0 * light_alone["p99"]:
        problems.append(f"light p99 {light_mixed['p99']:.3f} > 2.0 x {light_alone['p99']:.3f}")
    # the flood itself is served (slowly): it is not starved either
    assert mixed["per_tenant"]["b"]["completed"] == mixed["per_tenant"]["b"]["requests"]

    sim = _simulated(_spec(tmp_path / "sim.yaml", [LIGHT, HEAVY], TO_MODELLED), "vtc")
    assert np.isclose(sim["requests"], mixed["requests"])
    for tenant in (None, "a", "b"):
        live = _e2e(mixed, tenant)
        predicted = {k: v * TIME_SCALE for k, v in _e2e(sim, tenant).items() if v is not None}
        print(tenant or "all", "live", live, "simulated", predicted)
        for q in ("p50", "p99"):
            if abs(predicted[q] - live[q]) > 0.15 * live[q]:
                problems.append(
                    f"{tenant or 'all'} {q}: simulated {predicted[q]:.3f} vs live {live[q]:.3f}"
                )
    # the scenario discriminates: first come, first served would not protect the light tenant
    fifo = _simulated(_spec(tmp_path / "fifo.yaml", [LIGHT, HEAVY], TO_MODELLED), "fifo")
    assert _e2e(fifo, "a")["p99"] * TIME_SCALE > 3.0 * light_alone["p99"]
    return problems


@pytest.mark.skipif("vtc" not in POLICIES.names(), reason="the vtc policy is not registered yet")
def test_vtc_protects_the_light_tenant_and_the_simulator_predicts_it(
    engines: list[str], tmp_path: Path
) -> None:
    # Latencies are wall-clock on a shared machine; p99 of a few dozen requests
    # can catch one scheduling hiccup of the test machine itself. One fresh
    # repeat of the whole live run is allowed; both failing fails the test.
    first = _problems(engines, tmp_path)
    if first:
        print("first live run missed:", first, "- repeating once")
        second = _problems(engines, tmp_path)
        assert not second, (first, second)
