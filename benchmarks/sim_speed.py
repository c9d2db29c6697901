"""Simulator speed: simulated requests per wall-clock second, and peak memory.

Workload: request lengths drawn (with replacement) from the Azure LLM
conversation trace (../shared/traces/azure-llm-2023), Poisson arrivals at
``--load`` (default 80%) of the sustainable throughput measured first by
saturating the same deployment, and a shared system-prompt prefix (one of
``--prefix-families`` hash chains of up to 256 tokens) so the prefix cache
does real work. Every engine feature is on: chunked prefill, paged KV cache
with preemption, prefix caching, the global queue and the router.

Each measured run is a fresh subprocess (so peak RSS is that run's own);
figures are medians over ``--repeats`` runs. Results go to
benchmarks/results/sim_speed.json, which BENCHMARKS.md quotes.

    .venv/bin/python benchmarks/sim_speed.py                 # 1M requests, 1 and 4 instances
    .venv/bin/python benchmarks/sim_speed.py --requests 100000 --repeats 1   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fairserve.core.model import Request
from fairserve.sim.run import InstanceSpec, SimConfig, simulate
from fairserve.workload import load_trace

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "traces" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
RESULTS = ROOT / "benchmarks" / "results" / "sim_speed.json"


def lengths() -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output lengths of the Azure conversation trace."""
    if not TRACE.is_file():
        sys.exit(f"the Azure conversation trace is missing: {TRACE}")
    wl = load_trace(TRACE)
    return np.asarray(wl.prompt_tokens), np.asarray(wl.output_tokens)


def requests(n: int, rate_per_s: float, families: int, seed: int) -> Iterator[Request]:
    """A lazy stream of ``n`` requests (never all in memory at once)."""
    prompt_pool, output_pool = lengths()
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(prompt_pool), n)
    prompts = prompt_pool[rows].tolist()
    outputs = output_pool[rows].tolist()
    arrivals = np.cumsum(rng.exponential(1.0 / rate_per_s, n)).tolist() if rate_per_s else [0.0] * n
    family = rng.integers(0, max(families, 1), n).tolist()
    # A system prompt of up to 16 blocks of 16 tokens per family.
    chains = [tuple(hash((f, j)) for j in range(16)) for f in range(max(families, 1))]
    for i in range(n):
        prompt = prompts[i]
        hashes = chains[family[i]][: min(16, prompt // 16)] if families else None
        yield Request(i, arrivals[i], prompt, outputs[i], prefix_hashes=hashes or None)


def machine() -> str:
    """CPU model, cores and Python version of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, one process"


def config(instances: int) -> SimConfig:
    spec = InstanceSpec(gpu="H100-80GB", model="Llama-3.1-8B", count=instances)
    return SimConfig(instances=(spec,), router="least-tokens")


def sustainable_rate(instances: int, families: int) -> float:
    """Completed requests per simulated second when every request is there at t=0."""
    n = 20_000 * instances
    result = simulate(requests(n, 0.0, families, seed=1), config(instances))
    done = result.records.completed
    return float(done.sum() / (result.records.finish_s[done].max()))


def one_run(n: int, rate: float, instances: int, families: int, seed: int) -> dict[str, float]:
    """One measured run (in its own process)."""
    start = time.perf_counter()
    result = simulate(requests(n, rate, families, seed), config(instances))
    summary = result.summary()
    total = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "requests": n,
        "completed": summary.completed,
        "loop_wall_s": result.wall_time_s,
        "total_wall_s": total,
        "sim_requests_per_wall_s": n / result.wall_time_s,
        "end_to_end_requests_per_wall_s": n / total,
        "peak_rss_mb": peak_mb,
        "sim_time_s": summary.sim_time_s,
        "preemptions": summary.preemptions,
        "engine_steps": result.steps,
        "prefix_cache_hit_rate": summary.prefix_cache_hit_rate,
        "kv_util_mean": summary.kv_util_mean,
        "ttft_p50_s": summary.ttft_s.p50,
        "e2e_p99_s": summary.e2e_s.p99,
    }


def pure_python_tree() -> Path:
    """A copy of the package without the compiled modules (to run it interpreted)."""
    tmp = Path(tempfile.mkdtemp(prefix="fairserve-pure-"))
    shutil.copytree(
        ROOT / "src" / "fairserve", tmp / "fairserve", ignore=shutil.ignore_patterns("*.so")
    )
    return tmp


def run_child(
    args: argparse.Namespace, rate: float, instances: int, seed: int, pythonpath: Path | None = None
) -> dict[str, float]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    cmd = [
        sys.executable, __file__, "--child",
        "--requests", str(args.requests), "--rate", repr(rate), "--instances", str(instances),
        "--prefix-families", str(args.prefix_families), "--seed", str(seed),
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--load", type=float, default=0.8)
    parser.add_argument("--prefix-families", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="Do not write the results file.")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="Results file (default: %(default)s)."
    )
    parser.add_argument(
        "--compare-pure-python",
        action="store_true",
        help="Also run each configuration interpreted (no mypyc), alternating with compiled runs.",
    )
    args = parser.parse_args()
    if args.child:
        row = one_run(args.requests, args.rate, args.instances[0], args.prefix_families, args.seed)
        print(json.dumps(row))
        return
    report: dict[str, object] = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "workload": "Azure conv lengths, Poisson arrivals, 20 shared system-prompt prefixes",
        "runs": {},
    }
    for instances in args.instances:
        capacity = sustainable_rate(instances, args.prefix_families)
        rate = args.load * capacity
        rows, pure_rows = [], []
        pure = pure_python_tree() if args.compare_pure_python else None
        for r in range(args.repeats):
            rows.append(run_child(args, rate, instances, args.seed + r))
            if pure is not None:
                pure_rows.append(run_child(args, rate, instances, args.seed + r, pure))
        med = {k: statistics.median(float(r[k]) for r in rows) for k in rows[0]}
        entry: dict[str, object] = {
            "instances": instances,
            "sustainable_req_per_s": capacity,
            "arrival_rate_per_s": rate,
            "median": med,
            "all": rows,
        }
        if pure is not None:
            pmed = {k: statistics.median(float(r[k]) for r in pure_rows) for k in pure_rows[0]}
            ratios = [
                c["sim_requests_per_wall_s"] / p["sim_requests_per_wall_s"]
                for c, p in zip(rows, pure_rows, strict=True)
            ]
            entry["pure_python_median"] = pmed
            entry["compiled_over_pure_python"] = statistics.median(ratios)
            print(
                f"  interpreted: {pmed['sim_requests_per_wall_s']:,.0f} requests/wall-s; "
                f"compiled/interpreted = {statistics.median(ratios):.2f}x (median of paired runs)"
            )
            shutil.rmtree(pure)
        report["runs"][f"{instances}x"] = entry  # type: ignore[index]
        print(
            f"{instances} x Llama-3.1-8B/H100: {args.requests:,} requests at {rate:.1f}/s "
            f"({100 * args.load:.0f}% of {capacity:.1f}/s sustainable): "
            f"{med['sim_requests_per_wall_s']:,.0f} simulated requests/wall-s (loop), "
            f"{med['end_to_end_requests_per_wall_s']:,.0f} end to end, "
            f"peak RSS {med['peak_rss_mb']:,.0f} MB, median of {args.repeats}"
        )
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
