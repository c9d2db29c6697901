"""Components in the gateway config: specs with parameters, clear errors, slo-aware routing
and SLO admission on the live path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from fairserve.cli.gateway import register
from fairserve.core.model import Request
from fairserve.core.predict.latency import E2E_TERMS, TTFT_TERMS, LatencyModel
from fairserve.core.route import ROUTERS
from fairserve.core.route.base import BatchView
from fairserve.gateway.backends.state import BackendState, Load
from fairserve.gateway.config import ConfigError, parse_config
from fairserve.store import save_latency_model
from tests.gateway.helpers import KEY_A, KEY_B, MODEL, gateway_config, gateway_thread
from tests.gateway.servers import ServerThread, engine_thread
from tests.helpers import wait_until

# TTFT = 1 ms per prefill token (queued ahead + the prompt); E2E adds 10 ms per output token.
MS_PER_PREFILL_TOKEN = (1e-3,) + (0.0,) * (len(TTFT_TERMS) - 1)
E2E = (1e-3,) + (0.0,) * (len(TTFT_TERMS) - 1) + (0.01,) + (0.0,) * (len(E2E_TERMS) - 5)
LATENCY = LatencyModel(MS_PER_PREFILL_TOKEN, E2E, token_budget=2048)


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[ServerThread, ServerThread]]:
    with engine_thread() as e1, engine_thread() as e2:
        yield e1, e2


@pytest.fixture()
def latency_path(tmp_path: Path) -> Path:
    return save_latency_model(LATENCY, tmp_path / "latency.json")


def _chat(url: str, key: str, content: str) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4}
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_specs_in_yaml_forms_and_old_params_keys() -> None:
    urls = ["http://127.0.0.1:1"]
    cfg = gateway_config(urls, router="prefix-affinity:imbalance=2")
    assert cfg.router.name == "prefix-affinity" and cfg.router.params == {"imbalance": 2}
    cfg = gateway_config(urls, router={"name": "prefix-affinity", "params": {"imbalance": 3}})
    assert cfg.router.params == {"imbalance": 3}
    cfg = gateway_config(urls, policy="vtc", policy_params={"charge": "admission"})
    assert str(cfg.policy) == "vtc:charge=admission"
    assert parse_config(cfg.model_dump(exclude_none=True)).policy == cfg.policy  # round trip


def test_bad_component_is_one_line_naming_key_and_allowed() -> None:
    with pytest.raises(ConfigError) as exc:
        gateway_config(["http://127.0.0.1:1"], policy="vtc:bogus=1")
    line = str(exc.value).splitlines()[-1]
    assert line.startswith("config: policy: policy 'vtc': unknown parameter 'bogus'; allowed: ")
    assert "charge" in line
    with pytest.raises(ConfigError, match=r"router: unknown router 'nope'; known: .*slo-aware"):
        gateway_config(["http://127.0.0.1:1"], router="nope")


def test_serve_reports_bad_component_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "policy: vtc:bogus=1\ntenants: {a: {api_key: k}}\nbackends: [{url: 'http://127.0.0.1:1'}]\n"
    )
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["serve", "--config", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{path}: policy: policy 'vtc': unknown parameter 'bogus'; allowed:" in result.output
    path.write_text(
        path.read_text().replace("vtc:bogus=1", "vtc\nrouter: prefix-affinity:imbalance=0.5")
    )
    result = CliRunner().invoke(app, ["serve", "--config", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "imbalance must be >= 1" in result.output


def test_parameterised_router_serves(engines: tuple[ServerThread, ServerThread]) -> None:
    config = gateway_config([e.url for e in engines], router="prefix-affinity:imbalance=2")
    with gateway_thread(config) as (server, gw):
        assert gw.router.imbalance == 2  # type: ignore[attr-defined]
        for i in range(6):
            assert _chat(server.url, KEY_A if i % 2 else KEY_B, f"hello {i}").status_code == 200
        assert wait_until(lambda: gw.outcomes["completed"] == gw.admitted == 6)


def test_batch_view_estimates_from_streams() -> None:
    cfg = gateway_config(["http://127.0.0.1:1"])
    backend = BackendState(0, cfg.backends[0])
    assert isinstance(backend, BatchView)
    waiting, decoding = Load(Request(0, 0.0, 100, 10)), Load(Request(1, 0.0, 50, 10))
    backend.take(waiting)
    backend.take(decoding)
    decoding.output_tokens = 3
    assert (backend.num_decodes, backend.decode_context_tokens) == (1, 53)
    assert backend.queued_prefill_tokens == 100
    backend.give_back(waiting)
    backend.give_back(decoding)
    assert backend.num_decodes == backend.queued_prefill_tokens == backend.inflight == 0


def test_slo_aware_router_avoids_queued_prefill() -> None:
    cfg = gateway_config(["http://127.0.0.1:1", "http://127.0.0.1:2"])
    busy, idle = (BackendState(i, b) for i, b in enumerate(cfg.backends))
    busy.take(Load(Request(0, 0.0, 4000, 10)))
    router = ROUTERS.build("slo-aware", load=None, model=LATENCY)
    assert router.choose(Request(1, 0.0, 10, 10), [busy, idle], 0.0) == 1


def test_slo_aware_router_and_slo_admission_live(
    engines: tuple[ServerThread, ServerThread], latency_path: Path
) -> None:
    config = gateway_config(
        [e.url for e in engines],
        router=f"slo-aware:model={latency_path}",
        admission={"name": "slo", "params": {"model": str(latency_path), "slack": 1.0}},
        tenants={
            "a": {"api_key": KEY_A, "slo": {"ttft_s": 1.0}, "limits": {"requests_per_min": 4}},
            "b": {"api_key": KEY_B},
        },
    )
    long_prompt = "word " * 1800  # ~2250 tokens: a predicted TTFT of ~2.3 s
    with gateway_thread(config) as (server, gw):
        for _ in range(3):
            assert _chat(server.url, KEY_A, "short question").status_code == 200
        refused = _chat(server.url, KEY_A, long_prompt)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "slo_unattainable"
        assert "predicted TTFT" in refused.json()["error"]["message"]
        assert _chat(server.url, KEY_B, long_prompt).status_code == 200  # no TTFT objective
        assert wait_until(lambda: gw.outcomes["completed"] == gw.admitted == 4)
        requests_left = gw.tenants.by_name["a"].requests
        assert requests_left is not None and requests_left.level >= 1  # the refusal cost nothing
