"""Benchmark: microseconds per push, pop and service report for every policy.

For each registered policy and each queue size N (10,000 and 100,000 by
default): fill a fresh policy with N requests from 8 tenants (weights 1-4,
priorities 0-3, SLOs on half of them, random prompt/output/predicted
lengths), then time a batch of K pushes (N -> N+K) and a batch of K pops
(N+K -> N), and, for policies that take charges, K ``on_served`` reports.
Each figure is the batch time / K, median over the runs. If a pop scanned
the queue, its cost would grow tenfold from N=10,000 to N=100,000.

    python benchmarks/policy_overhead.py                # all policies, 5 runs
    python benchmarks/policy_overhead.py --runs 3 --sizes 10000 --no-write
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from fairserve.core.model import SLO, Request, Tenant
from fairserve.core.policies import POLICIES, Policy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "policy_overhead.json"
TENANTS = {
    f"t{i}": Tenant(
        f"t{i}",
        weight=1.0 + i % 4,
        priority=i % 4,
        slo=SLO(f"s{i}", e2e_s=5.0 + i) if i % 2 else SLO(),
    )
    for i in range(8)
}


def requests(count: int, start_id: int, start_s: float, rng: random.Random) -> list[Request]:
    """``count`` requests arriving 10 ms apart from ``start_s``."""
    names = list(TENANTS)
    return [
        Request(
            start_id + i,
            start_s + 0.01 * i,
            rng.randint(16, 2048),
            rng.randint(1, 1024),
            tenant=rng.choice(names),
            predicted_output_tokens=rng.randint(1, 1024),
            priority=rng.randint(0, 3),
        )
        for i in range(count)
    ]


def one_run(name: str, size: int, batch: int, seed: int) -> dict[str, float]:
    """Fill a fresh policy to ``size``, then time ``batch`` pushes, pops and reports."""
    rng = random.Random(seed)
    policy: Policy = POLICIES.build(name, tenants=TENANTS)
    for r in requests(size, 0, 0.0, rng):
        policy.push(r, r.arrival_s)
    extra = requests(batch, size, 0.01 * size, rng)
    now = 0.01 * (size + batch)
    t0 = time.perf_counter()
    for r in extra:
        policy.push(r, now)
    t1 = time.perf_counter()
    popped = [policy.pop(now) for _ in range(batch)]
    t2 = time.perf_counter()
    assert len(policy) == size and all(r is not None for r in popped)
    row = {"push_us": (t1 - t0) / batch * 1e6, "pop_us": (t2 - t1) / batch * 1e6}
    if policy.charges:
        tenants = [r.tenant for r in popped if r is not None]
        t3 = time.perf_counter()
        for tenant in tenants:
            policy.on_served(tenant, 64, 16, now)
        row["on_served_us"] = (time.perf_counter() - t3) / batch * 1e6
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="queue sizes, comma-separated")
    parser.add_argument("--batch", type=int, default=2000, help="operations timed per batch")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--policies", default="", help="comma-separated (default: all)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    names = args.policies.split(",") if args.policies else POLICIES.names()

    results: dict[str, dict[str, dict[str, float]]] = {}
    header = f"{'policy':<12}" + "".join(
        f"{'push@' + str(n):>14}{'pop@' + str(n):>14}" for n in sizes
    )
    print(header + f"{'on_served':>12}")
    for name in names:
        results[name] = {}
        line = f"{name:<12}"
        served = ""
        for size in sizes:
            rows = [one_run(name, size, args.batch, seed) for seed in range(args.runs)]
            median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
            results[name][str(size)] = median
            line += f"{median['push_us']:>14.2f}{median['pop_us']:>14.2f}"
            if "on_served_us" in median:
                served = f"{median['on_served_us']:>12.2f}"
        print(line + served, flush=True)

    if not args.no_write:
        report = {
            "command": "python benchmarks/policy_overhead.py",
            "date": datetime.now(UTC).date().isoformat(),
            "machine": f"{platform.machine()}, Python {platform.python_version()}, one process",
            "unit": "microseconds per operation, median of runs",
            "sizes": sizes,
            "batch": args.batch,
            "runs": args.runs,
            "tenants": len(TENANTS),
            "results": results,
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
