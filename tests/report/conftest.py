"""Small simulated run directories shared by the report tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairserve.core.model import SLO
from fairserve.report.run_dir import RunData, run_data_from_result, write_run_dir
from fairserve.sim.run import SimConfig, simulate
from fairserve.workload import Workload
from fairserve.workload.generate import TenantMix, synthetic

WEIGHTS = {"chat": 2.0, "batch": 1.0}


def small_workload() -> Workload:
    """Two tenants, 2:1 weights, 400 requests at a rate that builds a queue on one engine."""
    tenants = [
        TenantMix("chat", 0.5, weight=2.0, slo=SLO("interactive", ttft_s=1.0)),
        TenantMix("batch", 0.5, weight=1.0),
    ]
    return synthetic(400, 40.0, tenants=tenants, seed=3)


def slos_of(wl: Workload) -> dict[str, SLO]:
    """The workload's tenants' SLOs."""
    return {n: wl.tenant_config(n).slo for n in wl.tenant_names()}


def run_of(wl: Workload, label: str, policy: str, predictor: str | None = None) -> RunData:
    """Simulate ``wl`` under ``policy`` and package it for a run directory."""
    config = SimConfig(
        policy=policy,
        predictor=predictor,
        tenants=tuple(wl.tenant_config(n) for n in wl.tenant_names()),
    )
    components = {"policy": policy, "predictor": predictor, "router": "round-robin"}
    return run_data_from_result(
        label, simulate(wl.requests(), config), WEIGHTS, slos_of(wl), components
    )


@pytest.fixture(scope="session")
def simulate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``simulate`` run directory: fifo, no predictor."""
    wl = small_workload()
    out = tmp_path_factory.mktemp("simulate_run")
    runs = [run_of(wl, "fifo", "fifo")]
    return write_run_dir(
        out, "simulate", {"policy": "fifo"}, runs, weights=WEIGHTS, slos=slos_of(wl)
    )


@pytest.fixture(scope="session")
def compare_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``compare`` run directory: fifo and vtc, both with the driftsched predictor."""
    wl = small_workload()
    runs = [run_of(wl, p, p, "driftsched") for p in ("fifo", "vtc")]
    out = tmp_path_factory.mktemp("compare_run")
    config = {"policies": ["fifo", "vtc"]}
    return write_run_dir(out, "compare", config, runs, weights=WEIGHTS, slos=slos_of(wl))
