"""How much of the FIFO -> lower-bound gap in mean E2E does SJF close, per predictor?

The lower bound is each request's E2E alone on an empty engine (``sim.bound``):
no policy beats it, so the share closed lies in [0, 1].

Workload (fairserve.experiments.SjfGap): (prompt, output) pairs of the Azure
LLM conversation trace, Gamma arrivals (CV 2) at 95% of the saturated
throughput of one Llama-3.1-8B/H100 engine with max_num_seqs 64, the policy
ordering the engine's own queue. The trace is split in half at random: the
learned predictor trains on one half (prompt-length features: the trace has no
text), the workload samples the other. oracle-srpt orders by true remaining
work, prompt + output tokens; SJF runs twice: on the predicted output alone
(``prompt_weight=0``) and on the predicted total work, prompt + predicted
output (``prompt_weight=1``, the oracle's own size measure). Prints mean E2E and
the share of the gap closed for the real predictors and for the noisy oracle
over a range of sigma; writes benchmarks/results/sjf_gap.json and
docs/img/sjf_gap.png.

    .venv/bin/python benchmarks/sjf_gap.py
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fairserve.core.model import Request
from fairserve.core.predict.learned import train
from fairserve.experiments.studies import SjfGap, gap_closed
from fairserve.workload import load_trace

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "traces" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
SIGMAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def main() -> None:
    wl = load_trace(TRACE)
    prompt, output = np.asarray(wl.prompt_tokens), np.asarray(wl.output_tokens)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(prompt))
    fit, held = perm[: len(perm) // 2], perm[len(perm) // 2 :]
    model = train(
        [Request(int(i), 0.0, int(prompt[i]), int(output[i])) for i in fit], quantile=None
    )
    gap = SjfGap(prompt[held], output[held])
    fifo, oracle = gap.mean_e2e_s("fifo"), gap.mean_e2e_s("oracle-srpt")
    # The lower bound (each request alone on an empty engine), not the oracle: the
    # queue-level oracle is beaten by SJF on output, so a gap to it leaves [0, 1].
    bound = gap.bound_mean_e2e_s()
    print(f"mean E2E: fifo {fifo:.2f} s, oracle-srpt {oracle:.2f} s, lower bound {bound:.2f} s")
    real_predictors = {
        "history": ("history", {}),
        "driftsched": ("driftsched", {}),
        "learned (prompt features)": ("learned", {"model": model}),
    }
    report: dict[str, object] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": "python benchmarks/sjf_gap.py",
        "setup": {
            "load": gap.load,
            "cv": gap.cv,
            "requests": gap.requests,
            "max_num_seqs": gap.max_num_seqs,
        },
        "learned_holdout_metrics": model.metrics,
        "mean_e2e_s": {"fifo": fifo, "oracle-srpt": oracle, "lower bound (alone)": bound},
        "gap_closed": {"oracle-srpt": gap_closed(fifo, bound, oracle)},
    }
    curves: dict[float, dict[float, float]] = {}
    lines: dict[str, float] = {}
    for weight in (0.0, 1.0):
        size = "output" if weight == 0 else "prompt + output"
        params = {"prompt_weight": weight}
        print(f"\nSJF on predicted {size} (prompt_weight={weight:g})")
        closed_noisy: dict[float, float] = {}
        for name, (pred, pp) in real_predictors.items():
            v = gap.mean_e2e_s("sjf", pred, pp, params)
            c = gap_closed(fifo, bound, v)
            label = f"sjf[prompt_weight={weight:g}] + {name}"
            report["mean_e2e_s"][label] = v  # type: ignore[index]
            report["gap_closed"][label] = c  # type: ignore[index]
            lines[f"{size}: {name}"] = c
            print(f"  + {name:28} mean E2E {v:6.3f} s  gap closed {100 * c:6.1f}%")
        for sigma in SIGMAS:
            v = gap.mean_e2e_s("sjf", "noisy-oracle", {"sigma": sigma}, params)
            c = closed_noisy[sigma] = gap_closed(fifo, bound, v)
            label = f"sjf[prompt_weight={weight:g}] + noisy-oracle sigma={sigma}"
            report["mean_e2e_s"][label] = v  # type: ignore[index]
            report["gap_closed"][label] = c  # type: ignore[index]
            print(
                f"  + noisy-oracle sigma={sigma:<5}       mean E2E {v:6.3f} s  gap closed {100 * c:6.1f}%"
            )
        curves[weight] = closed_noisy
    (ROOT / "benchmarks" / "results" / "sjf_gap.json").write_text(
        json.dumps(report, indent=2) + "\n"
    )
    oracle_closed = gap_closed(fifo, bound, oracle)
    plot(curves, lines, oracle_closed, ROOT / "docs" / "img" / "sjf_gap.png")
    print("results written to benchmarks/results/sjf_gap.json and docs/img/sjf_gap.png")


def plot(
    curves: dict[float, dict[float, float]],
    lines: dict[str, float],
    oracle_closed: float,
    path: Path,
) -> None:
    """Gap closed against the noisy oracle's sigma, for both SJF sizes; real predictors as marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    for weight, noisy in curves.items():
        size = "output" if weight == 0 else "prompt + output"
        xs = sorted(noisy)
        ax.plot(xs, [100 * noisy[s] for s in xs], marker="o", label=f"sjf on {size}, noisy oracle")
    styles = ("--", ":", "-.")
    for i, (name, value) in enumerate(lines.items()):
        color = "tab:blue" if name.startswith("output") else "tab:orange"
        ax.axhline(100 * value, linestyle=styles[i % 3], color=color, linewidth=1,
                   label=f"sjf on {name}")  # fmt: skip
    ax.axhline(100 * oracle_closed, color="black", linewidth=0.8, label="oracle-srpt")
    ax.set_xlabel("noisy-oracle sigma (log-normal noise on the true output length)")
    ax.set_ylabel("FIFO -> lower-bound gap in mean E2E closed (%)")
    ax.set_title("SJF on Azure conversation lengths, 95% load")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
