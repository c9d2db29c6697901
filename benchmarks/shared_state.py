"""What sharing the gateway's state through Redis costs: per request, and in top rate.

Three deployments in front of the fake upstream of ``gateway_overhead.py``
(100 one-token chunks per answer, written at once), measured with its lean
open-loop client:

- ``memory-1``: one ``fairserve serve`` with the default in-memory state;
- ``redis-1``: one replica with ``state: {backend: redis}`` (a local
  redis-server on loopback): every request pays the shared rate limit's round
  trip (the tenant has a ``requests_per_min`` too high to bite) and the engine
  slot's (a ``max_concurrency`` too high to bite), its slot's return in the
  background;
- ``redis-2``: two such replicas sharing the Redis, the client sending half
  the rate to each (as a round-robin load balancer would).

Figures: p50/p99 E2E at fixed rates and the latency Redis adds
(``redis-1`` minus ``memory-1`` at the same rate, same repeat); the max
sustained rate of each deployment (gateway_overhead's ladder and rule: >= 99%
completed within the run plus one second and p99 < 250 ms); and one script's
round trip measured from a plain redis-py client (the RATE and ACQUIRE
scripts, 2,000 calls each). Medians over ``--repeats``; the deployments'
order is rotated per repeat. Everything shares the machine's cores (client,
upstream, Redis, the replicas): on a two-core machine two replicas cannot
have a core each.

Usage: ``python benchmarks/shared_state.py [--duration-s 3] [--repeats 3] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_overhead as go  # the fake upstream, the client, the ladder

RATES_RPS = (100, 400)
DEPLOYMENTS = ("memory-1", "redis-1", "redis-2")


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = go.free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)  # fmt: skip
    import redis

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port).ping():
                return proc, port
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def start_replica(upstream_port: int, redis_port: int | None, tmp: Path) -> tuple[Any, int]:
    port = go.free_port()
    cfg: dict[str, Any] = {
        "policy": "fifo",
        "models": [go.MODEL],
        "tenants": {"bench": {"api_key": go.KEY, "limits": {"requests_per_min": 1e9}}},
        "backends": [{"url": f"http://127.0.0.1:{upstream_port}", "max_concurrency": 100000,
                      "metrics": "off"}],
        "dispatch": {"health_path": "/health", "health_interval_s": 5},
        "server": {"port": port},
    }  # fmt: skip
    if redis_port is not None:
        cfg["state"] = {"backend": "redis", "url": f"redis://127.0.0.1:{redis_port}/0"}
    path = tmp / f"gateway-{port}.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "fairserve.cli.gateway", "serve", "--config",
                             str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    go.wait_http(port, "/healthz")
    return proc, port


def measure(ports: list[int], rate: float, duration_s: float) -> dict[str, Any]:
    """``rate`` split evenly over ``ports``; sustained only if every part was."""

    async def run() -> list[dict[str, Any]]:
        share = rate / len(ports)
        return await asyncio.gather(*(go.run_rate(p, "/v1", share, duration_s) for p in ports))

    parts = asyncio.run(run())
    p99s = [p["p99_ms"] for p in parts]
    return {
        "rate_rps": rate,
        "sent": sum(p["sent"] for p in parts),
        "completed": sum(p["completed"] for p in parts),
        "p50_ms": float(np.median([p["p50_ms"] for p in parts if p["p50_ms"] is not None])),
        "p99_ms": None if None in p99s else max(p99s),  # the worse replica's
    }


def sustained(ports: list[int], duration_s: float) -> float:
    best = 0.0
    for rate in go.LADDER_RPS:
        r = measure(ports, rate, duration_s)
        if r["completed"] < 0.99 * r["sent"] or r["p99_ms"] is None or not r["p99_ms"] < 250:
            break
        best = rate
    return best


def one_deployment(name: str, up_port: int, redis_port: int, tmp: Path,
                   duration_s: float) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {}
    count = int(name.split("-")[1])
    for rate in (*RATES_RPS, None):
        procs: list[Any] = []
        try:
            for _ in range(count):
                procs.append(start_replica(up_port, None if name == "memory-1" else redis_port,
                                           tmp))  # fmt: skip
            ports = [port for _, port in procs]
            for port in ports:
                go.warm_up(port, "/v1")
            if rate is None:
                out["max_rps"] = sustained(ports, duration_s)
            else:
                out[f"at_{rate}_rps"] = measure(ports, rate, duration_s)
        finally:
            for proc, _ in procs:
                go.stop(proc)
        time.sleep(1.0)
    return out


def script_round_trips(redis_port: int, calls: int = 2000) -> dict[str, float]:
    """p50/p99 (ms) of one RATE and one ACQUIRE (+ the ZREM of its return) from redis-py."""
    import redis

    from fairserve.gateway.shared import lua

    client = redis.Redis(port=redis_port, decode_responses=True)
    rate, acquire = client.register_script(lua.RATE), client.register_script(lua.ACQUIRE)
    keys = ["bench:epoch", "bench:settle", "bench:seen", "bench:leases:x", "bench:waiters:x"]
    out: dict[str, float] = {}
    for op in ("rate", "acquire"):
        times = []
        for i in range(calls):
            start = time.perf_counter()
            if op == "rate":
                rate(keys=["bench:rate:t"], args=[1e9, 0, 100, 1e9, 0, 180])
            else:
                acquire(
                    keys=keys,
                    args=["r", "", 10000, 1000, 300, 0, "bench:wake", 1, 100000, f"r:{i}"],
                )
            times.append(time.perf_counter() - start)
            if op == "acquire":
                client.zrem("bench:leases:x", f"r:{i}")
        out[f"{op}_p50_ms"] = round(float(np.percentile(times, 50)) * 1e3, 4)
        out[f"{op}_p99_ms"] = round(float(np.percentile(times, 99)) * 1e3, 4)
    client.close()
    return out


def _median(values: list[Any]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return round(float(np.median(values)), 3)


def summarize(repeats: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in DEPLOYMENTS:
        out[f"{name}_max_rps"] = _median([r[name]["max_rps"] for r in repeats])
        for rate in RATES_RPS:
            for q in ("p50", "p99"):
                key = f"at_{rate}_rps"
                out[f"{name}_{q}_ms_at_{rate}_rps"] = _median([r[name][key][f"{q}_ms"]
                                                                for r in repeats])  # fmt: skip
    for rate in RATES_RPS:
        for q in ("p50", "p99"):
            added = [r["redis-1"][f"at_{rate}_rps"][f"{q}_ms"]
                     - r["memory-1"][f"at_{rate}_rps"][f"{q}_ms"] for r in repeats]  # fmt: skip
            out[f"redis_{q}_added_ms_at_{rate}_rps"] = _median(added)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=3.0, help="seconds per rate")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the whole set (median)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="shared-state-"))
    up_port = go.free_port()
    upstream = subprocess.Popen([sys.executable, "-c", go.FAKE_SERVER, str(up_port),
                                 str(go.TOKENS)])  # fmt: skip
    redis_proc, redis_port = start_redis()
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python " + " ".join(sys.argv),
        "duration_s_per_rate": args.duration_s,
        "repeats": args.repeats,
    }  # fmt: skip
    try:
        go.wait_http(up_port, "/health")
        result["script_round_trip"] = script_round_trips(redis_port)
        repeats = []
        for i in range(args.repeats):
            order = DEPLOYMENTS[i % 3 :] + DEPLOYMENTS[: i % 3]
            repeats.append({name: one_deployment(name, up_port, redis_port, tmp, args.duration_s)
                            for name in order})  # fmt: skip
            print(f"repeat {i + 1}/{args.repeats} done", file=sys.stderr)
        result["repeat_runs"] = repeats
        result.update(summarize(repeats))
    finally:
        go.stop(upstream)
        go.stop(redis_proc)
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
