"""SLO-driven concurrency from a latency model's predicted TPOT: it holds before overshooting."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fairserve.core.policies import POLICIES
from fairserve.core.predict.latency import E2E_TERMS, TTFT_TERMS, BatchLatencyModel, LatencyModel
from fairserve.core.route import ROUTERS
from fairserve.gateway.backends.state import BackendState
from fairserve.gateway.dispatch import Scheduler, TicketState
from fairserve.gateway.tenants import Tenants
from fairserve.store import save_latency_model
from tests.gateway.helpers import LightBesideFlood, gateway_config

# TPOT = 10 ms + 1 ms per sequence in the batch (and nothing per KV token or prefill).
MODEL = BatchLatencyModel(
    ttft_coef=(1e-5,) + (0.0,) * 6, tpot_coef=(0.01, 0.001, 0.0, 0.0),
    e2e_coef=(1e-5,) + (0.0,) * 10, alone_coef=(1e-5, 0.0, 0.01, 0.0), token_budget=8192,
)  # fmt: skip


def test_predicted_tpot_grows_with_the_batch() -> None:
    cfg = gateway_config(["http://127.0.0.1:1"])
    backend = BackendState(0, cfg.backends[0])
    assert backend.predicted_tpot_s(MODEL, 1) == pytest.approx(0.011)
    assert backend.predicted_tpot_s(MODEL, 5) == pytest.approx(0.015)


def test_the_model_holds_the_batch_before_the_measured_itl_overshoots(tmp_path: Path) -> None:
    path = save_latency_model(MODEL, tmp_path / "latency.json")
    # Objective 20 ms: the model allows batches of up to 10 (10 ms + 10 x 1 ms).
    setup = LightBesideFlood(0.02, {"slo_tpot_model": str(path), "slo_reserve_seqs": 2})
    light, backend = setup.light, setup.backend

    async def run() -> None:
        scheduler, flood = setup.flood()
        # No time per token measured yet (no ITL limit): the model alone holds the
        # flood to 8, leaving the 2 reserved seats of the 10 the objective allows.
        assert backend.tpot_limit is None
        assert [t.state for t in flood].count(TicketState.ASSIGNED) == 8
        ticket = setup.submit(scheduler, 100, light)
        assert ticket.state is TicketState.ASSIGNED and backend.inflight == 9

    asyncio.run(run())


def test_a_version_1_model_is_refused_by_name(tmp_path: Path) -> None:
    old = save_latency_model(
        LatencyModel((1e-3,) * len(TTFT_TERMS), (1e-3,) * len(E2E_TERMS), 8192),
        tmp_path / "v1.json",
    )
    cfg = gateway_config(["http://127.0.0.1:1"], tenants={
        "light": {"api_key": "sk-a", "slo": {"tpot_s": 0.02}}}, dispatch={"slo_tpot_model": str(old)})  # fmt: skip
    with pytest.raises(ValueError, match=r"dispatch\.slo_tpot_model: .*version-1"):
        Scheduler(POLICIES.build("fifo"), ROUTERS.build("least-tokens"), [], lambda: 0.0,
                  tenants=list(Tenants(cfg, 0.0).by_name.values()), config=cfg.dispatch)  # fmt: skip
