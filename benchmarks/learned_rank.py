"""Does a ranking policy trained in the simulator beat SJF with the best predictor, held out?

For each trace (Azure conversation and code 2023, Mooncake, ShareGPT lengths)
the requests are split by time: the first half trains, the second half tests
(ShareGPT has no timestamps: file order). On the training half, fairserve
trains the ``learned`` output-length predictor (prompt-length features) and
then the ``learned-rank`` policy (``fairserve.experiments.rank_train``:
pairwise imitation of clairvoyant orders, then a search on simulated E2E
averaged over ``--train-seeds`` arrival seeds), both on workloads drawn from
the training half only. The test half is run
as in benchmarks/sjf_gap.py (``SjfGap``: Gamma arrivals, CV 2, at 95% of the
saturated throughput of one Llama-3.1-8B/H100 engine with max_num_seqs 64,
the policy as the engine's own queue), over several arrival seeds:

- fifo, oracle-srpt, and the lower bound (each request alone);
- sjf with the history and the learned predictor, prompt_weight 0 and 1,
  with its 30 s wait cap and without (``max_wait_s=null``): "SJF + the best
  predictor" is the best of these eight on the test half itself, which
  favours the baseline;
- learned-rank trained on the trace's own training half ("own"), and the
  ranker trained on Azure conversation applied to the other traces with their
  own predictor ("from azure-conv": a held-out trace, not only a held-out half).

Prints mean and p99 E2E and the share of the FIFO -> lower-bound gap closed;
writes benchmarks/results/learned_rank.json.

    FAIRSERVE_PURE_PYTHON=1 .venv/bin/python benchmarks/learned_rank.py [--requests N] [--seeds K]
        [--train-seeds K]    (defaults 2500, 3, 3: about 100-270 s on 2 shared cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fairserve.core.model import Request
from fairserve.core.policies.learned_rank import RankModel
from fairserve.core.predict.learned import train
from fairserve.core.registry import ComponentSpec
from fairserve.experiments.rank_train import gap_setup, run_e2e, train_ranker
from fairserve.experiments.studies import SjfGap, gap_closed
from fairserve.workload import load_trace

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "traces"
SOURCES = {
    "azure-conv": TRACES / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv",
    "azure-code": TRACES / "azure-llm-2023" / "AzureLLMInferenceTrace_code.csv",
    "mooncake": TRACES / "mooncake-synthetic" / "synthetic_trace.jsonl",
    "sharegpt": TRACES / "sharegpt-lengths" / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
}
TRAIN_SEED = 101  # the training workloads' arrivals (101, 102, ...): never a test seed


def lengths(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(prompt, output) tokens of a trace, in arrival (or file) order."""
    path = SOURCES[name]
    if name == "sharegpt":  # token counts only, no timestamps
        table = np.genfromtxt(path, delimiter=",", names=True)
        return (table["num_prefill_tokens"].astype(np.int64),
                table["num_decode_tokens"].astype(np.int64))  # fmt: skip
    wl = load_trace(path).drop_failed()
    return np.asarray(wl.prompt_tokens), np.asarray(wl.output_tokens)


def _keep(prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
    return (prompt >= 1) & (output >= 1)


def learned_predictor(prompt: np.ndarray, output: np.ndarray) -> ComponentSpec:
    """The learned predictor fitted on the training half (prompt-length features)."""
    reqs = [
        Request(i, 0.0, int(p), int(o)) for i, (p, o) in enumerate(zip(prompt, output, strict=True))
    ]
    return ComponentSpec("learned", {"model": train(reqs, quantile=None)})


def figures(gap: SjfGap, predictor: ComponentSpec | None, policy: Any) -> dict[str, float]:
    """Mean and p99 E2E of one run of the test workload."""
    workload, config = gap_setup(gap, predictor)
    e2e = run_e2e(workload, config, policy)
    return {"mean_e2e_s": e2e.mean_s, "p99_e2e_s": e2e.p99_s}


def candidates(
    learned: ComponentSpec, own: RankModel, transfer: RankModel | None
) -> dict[str, tuple[ComponentSpec | None, Any]]:
    """label -> (predictor, policy) of every run on the test half."""
    runs: dict[str, tuple[ComponentSpec | None, Any]] = {
        "fifo": (None, "fifo"),
        "oracle-srpt": (None, "oracle-srpt"),
    }
    for weight in (0, 1):
        for cap in (30.0, None):
            sjf = ComponentSpec("sjf", {"prompt_weight": weight, "max_wait_s": cap})
            label = (
                f"sjf[prompt_weight={weight},max_wait_s={'null' if cap is None else f'{cap:g}'}]"
            )
            runs[f"{label} + history"] = (ComponentSpec("history"), sjf)
            runs[f"{label} + learned"] = (learned, sjf)
    runs["learned-rank (own) + learned"] = (learned, ComponentSpec("learned-rank", {"model": own}))
    if transfer is not None:
        spec = ComponentSpec("learned-rank", {"model": transfer})
        runs["learned-rank (from azure-conv) + learned"] = (learned, spec)
    return runs


def study(
    name: str, requests: int, seeds: int, train_seeds: int, transfer: RankModel | None
) -> dict[str, Any]:
    """Train on the first half of trace ``name``, test on the second; all figures."""
    prompt, output = lengths(name)
    keep = _keep(prompt, output)
    prompt, output = prompt[keep], output[keep]
    half = len(prompt) // 2
    learned = learned_predictor(prompt[:half], output[:half])
    start = time.perf_counter()
    setups = [gap_setup(SjfGap(prompt[:half], output[:half], requests=requests,
                               seed=TRAIN_SEED + k), learned) for k in range(train_seeds)]  # fmt: skip
    own = train_ranker([wl for wl, _ in setups], setups[0][1])
    train_s = time.perf_counter() - start
    runs = candidates(learned, own, transfer)
    per_seed: dict[str, list[dict[str, float]]] = {label: [] for label in runs}
    bounds = []
    for seed in range(1, seeds + 1):
        gap = SjfGap(prompt[half:], output[half:], requests=requests, seed=seed)
        bounds.append(gap.bound_mean_e2e_s())
        for label, (predictor, policy) in runs.items():
            per_seed[label].append(figures(gap, predictor, policy))
    return summarise(name, own, train_s, per_seed, bounds)


def summarise(
    name: str,
    own: RankModel,
    train_s: float,
    per_seed: dict[str, list[dict[str, float]]],
    bounds: list[float],
) -> dict[str, Any]:
    """Means over seeds, gap closed, and the best SJF against the ranker."""
    bound = float(np.mean(bounds))
    mean = {k: float(np.mean([r["mean_e2e_s"] for r in v])) for k, v in per_seed.items()}
    p99 = {k: float(np.mean([r["p99_e2e_s"] for r in v])) for k, v in per_seed.items()}
    closed = {k: gap_closed(mean["fifo"], bound, v) for k, v in mean.items()}
    sjf_labels = [k for k in mean if k.startswith("sjf")]
    best_sjf = min(sjf_labels, key=mean.__getitem__)
    rank = "learned-rank (own) + learned"
    diffs = [
        a["mean_e2e_s"] - b["mean_e2e_s"]
        for a, b in zip(per_seed[rank], per_seed[best_sjf], strict=True)
    ]
    return {
        "trace": name,
        "ranker_weights": dict(own.weights),
        "ranker_train_s": round(train_s, 2),
        "lower_bound_mean_e2e_s": bound,
        "mean_e2e_s": mean,
        "p99_e2e_s": p99,
        "gap_closed": closed,
        "best_sjf": best_sjf,
        "rank_minus_best_sjf_mean_e2e_s_per_seed": diffs,
    }


def show(result: dict[str, Any]) -> None:
    """One table per trace."""
    print(f"\n{result['trace']}: lower bound {result['lower_bound_mean_e2e_s']:.3f} s; "
          f"ranker weights {result['ranker_weights']}")  # fmt: skip
    for label, mean in result["mean_e2e_s"].items():
        p99, closed = result["p99_e2e_s"][label], result["gap_closed"][label]
        mark = "  <- best sjf" if label == result["best_sjf"] else ""
        print(
            f"  {label:58} mean {mean:7.3f} s  p99 {p99:8.3f} s  gap closed {100 * closed:5.1f}%{mark}"
        )
    diffs = ", ".join(f"{d:+.3f}" for d in result["rank_minus_best_sjf_mean_e2e_s_per_seed"])
    print(f"  learned-rank (own) minus best sjf, mean E2E per seed: {diffs} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2500, help="requests per workload")
    parser.add_argument("--seeds", type=int, default=3, help="test arrival seeds per trace")
    parser.add_argument("--train-seeds", type=int, default=3, help="training arrival seeds")
    args = parser.parse_args()
    start = time.perf_counter()
    results = []
    transfer = None
    for name in SOURCES:
        if not SOURCES[name].is_file():
            print(f"{name}: {SOURCES[name]} is absent, skipped")
            continue
        result = study(name, args.requests, args.seeds, args.train_seeds, transfer)
        if name == "azure-conv":
            transfer = RankModel(result["ranker_weights"])
        results.append(result)
        show(result)
    wall_s = time.perf_counter() - start
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "command": f"python benchmarks/learned_rank.py --requests {args.requests} "
        f"--seeds {args.seeds} --train-seeds {args.train_seeds}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "wall_s": round(wall_s, 1),
        "setup": {
            "load": SjfGap.load,
            "cv": SjfGap.cv,
            "max_num_seqs": SjfGap.max_num_seqs,
            "requests": args.requests,
            "test_seeds": args.seeds,
            "train_seeds": args.train_seeds,
            "split": "first half trains, second half tests",
        },
        "traces": results,
    }
    out = ROOT / "benchmarks" / "results" / "learned_rank.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{wall_s:.0f} s; results written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
