"""``fairserve demo --live``: the demo's tenants through the real gateway, beside the simulator.

Two ``fairserve engine`` processes (simulated Llama-3.1-8B on H100-80GB,
``max_num_seqs`` 16, running ``TIME_SCALE`` times slower than modelled so that
a small machine keeps up with the modelled step times) and one ``fairserve
serve`` gateway (VTC, least-tokens routing, one request waiting per engine)
start on free loopback ports. ``fairserve bench``'s load generator replays a
short slice of the demo's three tenants through the gateway; ``fairserve
simulate`` runs the same slice on the same modelled deployment. Latencies of
the live run are divided by ``TIME_SCALE`` so the two read in modelled
seconds. :func:`write_live_dir` writes both as one run directory whose report
is drawn against the gateway's own tenants, weights, SLOs and policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from fairserve.loadgen.bench import plan, run_bench
from fairserve.metrics.records import RecordArrays
from fairserve.metrics.summary import Summary
from fairserve.sim.config import EngineConfig
from fairserve.sim.run import InstanceSpec, SimConfig, SimResult, simulate
from fairserve.workload import Workload
from fairserve.workload.spec import build, parse_spec

TIME_SCALE = 2.0
MODEL = "Llama-3.1-8B"
MAX_NUM_SEQS = 16
DURATION_S = 12.0
POLICY = "vtc"
KEYS = {"chat": "sk-demo-chat", "code": "sk-demo-code", "batch": "sk-demo-batch"}
# The demo's objectives (modelled seconds); the gateway, TIME_SCALE times slower, gets them scaled.
SLOS: dict[str, dict[str, float]] = {
    "chat": {"ttft_s": 1.0, "tpot_s": 0.15},
    "code": {"ttft_s": 1.0},
    "batch": {"e2e_s": 300.0},
}


def _source(tenant: str, rate: float, prompt: float, output: float) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "arrival": {"process": "poisson", "rate_per_s": rate},
        "prompt": {"dist": "lognormal", "mean_tokens": prompt, "sigma": 0.6, "max_tokens": 4096},
        "output": {"dist": "lognormal", "mean_tokens": output, "sigma": 0.6, "max_tokens": 512},
    }


def slice_workload(time_factor: float = 1.0) -> Workload:
    """A short slice with the demo's three tenants (lengths scaled down to stay live-sized)."""
    spec: dict[str, Any] = {
        "seed": 5,
        "duration_s": DURATION_S,
        "sources": [
            _source("chat", 3.0, 500, 100),
            _source("code", 2.0, 800, 20),
            _source("batch", 25.0, 300, 150),
        ],
    }
    if time_factor != 1.0:
        spec["transforms"] = [{"op": "scale_time", "factor": time_factor}]
    return build(parse_spec(spec, "demo --live"))


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready within {timeout_s:g} s")


@contextlib.contextmanager
def _process(args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "fairserve", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _gateway_config(engine_urls: list[str], port: int) -> dict[str, Any]:
    return {
        "policy": POLICY,
        "router": "least-tokens",
        "models": [MODEL],
        "tenants": {
            name: {
                "api_key": key,
                "weight": 1,
                "priority": 2 if name == "batch" else 0,
                "slo": {k: v * TIME_SCALE for k, v in SLOS[name].items()},
            }
            for name, key in KEYS.items()
        },
        # One request waiting per engine, the rest ordered by the policy.
        "backends": [
            {"url": u, "max_concurrency": MAX_NUM_SEQS + 1, "metrics": "off"} for u in engine_urls
        ],
        "server": {"host": "127.0.0.1", "port": port, "drain_grace_s": 5},
    }


@dataclasses.dataclass(frozen=True)
class LiveRun:
    """What the live slice left: its records (modelled seconds) and the gateway's config."""

    records: RecordArrays
    gateway: dict[str, Any]


def run_live() -> LiveRun:
    """Bring up two engines and the gateway, replay the slice, return its records."""
    ports = [_free_port() for _ in range(3)]
    engine_args = ["--model", MODEL, "--max-num-seqs", str(MAX_NUM_SEQS),
                   "--time-scale", str(TIME_SCALE)]  # fmt: skip
    urls = [f"http://127.0.0.1:{p}" for p in ports[:2]]
    gateway = _gateway_config(urls, ports[2])
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(gateway))
        with (
            _process(["engine", "--port", str(ports[0]), *engine_args]),
            _process(["engine", "--port", str(ports[1]), *engine_args]),
            _process(["serve", "--config", str(config_path), "--port", str(ports[2])]),
        ):
            for url in urls:
                _wait_ready(f"{url}/health")
            base = f"http://127.0.0.1:{ports[2]}"
            _wait_ready(f"{base}/readyz")
            requests = plan(slice_workload(TIME_SCALE), KEYS, None)
            records, _ = asyncio.run(run_bench(base, requests, model=MODEL, max_duration_s=120))
    arrays = records.to_numpy()
    scaled = arrays.select(np.ones(len(arrays), dtype=bool))  # a copy
    for name in ("arrival_s", "first_scheduled_s", "first_token_s", "finish_s"):
        getattr(scaled, name)[:] = getattr(arrays, name) / TIME_SCALE
    return LiveRun(scaled, gateway)


def write_live_dir(out: Path, live: LiveRun, sim: SimResult) -> tuple[Path, Summary, Summary]:
    """The live and the simulated slice as one run directory and its report.

    Tenants, weights, SLOs and policy are the gateway's (its config, the SLOs
    brought back to modelled seconds). Returns the report's path and the two
    summaries (live, simulated) with goodput against those SLOs.
    """
    from fairserve.gateway.config import parse_config
    from fairserve.metrics.fairness import fairness
    from fairserve.metrics.summary import summarize
    from fairserve.report.html import write_report
    from fairserve.report.live import gateway_view
    from fairserve.report.run_dir import RunData, write_run_dir

    view = gateway_view(parse_config(live.gateway), "fairserve serve --config", TIME_SCALE)
    summaries = (summarize(live.records, slos=view.slos), sim.summary(slos=view.slos))
    runs = [
        RunData(label, records, summary.to_dict(), fairness(records, view.weights).to_dict())
        for label, records, summary in (
            ("live gateway", live.records, summaries[0]),
            ("simulator", sim.records, summaries[1]),
        )
    ]
    config = {**view.config, "time_scale": TIME_SCALE, "slice_duration_s": DURATION_S}
    write_run_dir(out, "compare", config, runs, weights=view.weights, slos=view.slos)
    return write_report(out), summaries[0], summaries[1]


def print_side_by_side(live: Summary, sim: Summary, console: Any) -> None:
    """Per tenant: live (through the gateway) and simulated TTFT and E2E, p50 and p99."""
    from rich.table import Table

    table = Table(title=f"live gateway vs simulator ({POLICY}, modelled seconds)")
    table.add_column("tenant")
    for col in ("TTFT p50", "TTFT p99", "E2E p50", "E2E p99"):
        table.add_column(f"{col} live", justify="right")
        table.add_column(f"{col} sim", justify="right")
    for name in sorted(live.per_tenant):
        lt, st = live.per_tenant[name], sim.per_tenant.get(name)
        cells = [name]
        for metric in ("ttft_s", "e2e_s"):
            for q in ("p50", "p99"):
                cells.append(f"{getattr(getattr(lt, metric), q):.2f}")
                cells.append("-" if st is None else f"{getattr(getattr(st, metric), q):.2f}")
        table.add_row(*cells)
    console.print(table)
    console.print(
        f"live: {live.completed}/{live.requests} completed through the gateway; "
        f"simulated: {sim.completed}/{sim.requests}"
    )


def run_simulated() -> SimResult:
    """The same slice on the same modelled deployment."""
    wl = slice_workload()
    engine = EngineConfig(max_num_seqs=MAX_NUM_SEQS, enable_prefix_caching=False)
    config = SimConfig(
        instances=(InstanceSpec(model=MODEL, count=2, engine=engine),),
        policy=POLICY,
        router="least-tokens",
        max_engine_waiting=1,
        tenants=tuple(wl.tenant_config(n) for n in wl.tenant_names()),
    )
    return simulate(wl.requests(), config)
