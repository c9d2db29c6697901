"""The latency predictor on held-out workloads, with estimated output lengths.

Fits the version-2 latency model (TTFT, TPOT, E2E, slowdown) on simulator
telemetry of the swinging four-tenant load of ``fairserve predictor latency``
(0.5 to 8 req/s, one Llama-3.1-8B/H100 engine, lengths estimated by the
``history`` predictor), then scores it on workloads that differ from training:
another run of the same load, the same load at twice the rate, two Azure
production traces, the Mooncake synthetic trace and three example workload
specs. Beside each: the same model fitted and scored with the true output
length (``none``), which separates the latency model's own error from the
length estimate's, and the version-1 model (fitted on true lengths) fed the
estimates, as it was used before. Writes benchmarks/results/latency_predictor.json.

    FAIRSERVE_PURE_PYTHON=1 .venv/bin/python benchmarks/latency_predictor.py
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fairserve.core.predict.latency import fit, fit_batch_model, mae_percent, score
from fairserve.sim.telemetry import Telemetry, dispatch_telemetry, swinging_load
from fairserve.workload import load

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT.parent / "shared" / "traces"
N_REQUESTS = 4000
TRAIN = (0.5, 8.0)
HELD_OUT = {
    "azure-conv": TRACES / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv",
    "azure-code": TRACES / "azure-llm-2023" / "AzureLLMInferenceTrace_code.csv",
    "mooncake": TRACES / "mooncake-synthetic" / "synthetic_trace.jsonl",
    "multi_tenant.yaml": ROOT / "examples" / "workloads" / "multi_tenant.yaml",
    "servegen_mid.yaml": ROOT / "examples" / "workloads" / "servegen_mid.yaml",
    "burstgpt_like.yaml": ROOT / "examples" / "workloads" / "burstgpt_like.yaml",
}
LIMIT = 6000  # requests of each trace (its first ones)


def swing(seed: int, scale: float = 1.0) -> list:
    return swinging_load(N_REQUESTS, seed, TRAIN[0] * scale, TRAIN[1] * scale, 120.0, tenants=4)


def workloads() -> dict[str, list]:
    out = {"same load, seed 1": swing(1), "2x the load": swing(2, 2.0)}
    for name, path in HELD_OUT.items():
        if path.exists():
            out[name] = list(load(path).drop_failed().requests())[:LIMIT]
        else:
            print(f"skipped {name}: {path} is absent")
    return out


def e2e_floor_pct(tel: Telemetry, tenant_of: dict[int, str], groups: int = 10) -> float:
    """The E2E MAE no length estimate from the tenant and prompt length can beat, in %.

    Each request's E2E is written as its true TTFT plus (L - 1) of its true
    TPOT; L is then one constant per (tenant, prompt-length decile), the one
    that minimises the group's E2E MAE (the TPOT/E2E-weighted median of its
    true lengths, chosen on this very workload). Perfect latency terms, the
    best possible length per group: a floor, not a predictor.
    """
    assert tel.request_ids is not None
    tpot = np.nan_to_num(tel.tpot_s, nan=0.0)
    prompt = np.asarray([s.prompt_tokens for s in tel.states], dtype=float)
    edges = np.quantile(prompt, np.linspace(0, 1, groups + 1)[1:-1])
    names = sorted(set(tenant_of.values()))
    tenant = np.asarray([names.index(tenant_of[int(i)]) for i in tel.request_ids])
    group = tenant * (groups + 1) + np.searchsorted(edges, prompt, side="right")
    weight = tpot / tel.e2e_s
    length = tel.output_tokens.astype(float)
    best = np.empty_like(length)
    for g in np.unique(group):
        mask = group == g
        order = np.argsort(length[mask])
        cum = np.cumsum(weight[mask][order])
        pick = int(np.searchsorted(cum, cum[-1] / 2)) if cum[-1] > 0 else len(cum) // 2
        best[mask] = length[mask][order][min(pick, len(cum) - 1)]
    predicted = tel.ttft_s + np.maximum(best - 1, 0) * tpot
    return mae_percent(predicted, tel.e2e_s)


def v1_e2e_mae(train: Telemetry, tel: Telemetry) -> float:
    """The version-1 model, fitted on true lengths, fed the estimates (as it was used)."""
    old = fit(train.with_true_lengths(), train.ttft_s, train.e2e_s, train.token_budget)
    return mae_percent(old.predict_many(tel.states)[1], tel.e2e_s)


def main() -> None:
    start = time.perf_counter()
    fitted = {}
    trains = {}
    for lengths in ("history", "none"):
        train = dispatch_telemetry(swing(0), lengths)
        trains[lengths] = train
        fitted[lengths] = fit_batch_model(
            train.samples(), train.token_budget, lengths, max_num_seqs=train.max_num_seqs
        )
    rows = []
    for name, reqs in workloads().items():
        row: dict[str, object] = {"workload": name}
        for lengths in ("history", "none"):
            tel = dispatch_telemetry(reqs, lengths)
            scores = score(fitted[lengths], tel.samples())
            tag = "estimated" if lengths == "history" else "true_lengths"
            row[tag] = {k: round(v, 1) for k, v in scores.items() if k.endswith("mae_pct")}
            if lengths == "history":
                row["rows"] = len(tel.states)
                est = np.asarray([s.predicted_output_tokens for s in tel.states], dtype=float)
                row["length_mae_pct"] = round(mae_percent(est, tel.output_tokens), 1)
                row["v1_e2e_mae_pct_estimated"] = round(v1_e2e_mae(trains["none"], tel), 1)
                tenant_of = {r.id: r.tenant for r in reqs}
                row["e2e_floor_mae_pct"] = round(e2e_floor_pct(tel, tenant_of), 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "command": "python benchmarks/latency_predictor.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "wall_s": round(time.perf_counter() - start, 1),
        "train": {"load": f"swinging {TRAIN[0]}-{TRAIN[1]} req/s, 4 tenants", "rows": N_REQUESTS,
                  "length_predictor": "history", "gpu": "H100-80GB", "model": "Llama-3.1-8B"},
        "coefficients": fitted["history"].as_dict(),
        "rows": rows,
    }  # fmt: skip
    out = Path(__file__).parent / "results" / "latency_predictor.json"
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
