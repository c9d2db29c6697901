"""How much of the FIFO -> oracle gap in mean E2E does SJF close, per predictor?

Workload (fairserve.experiments.SjfGap): (prompt, output) pairs of the Azure
LLM conversation trace, Gamma arrivals (CV 2) at 95% of the saturated
throughput of one Llama-3.1-8B/H100 engine with max_num_seqs 64, the policy
ordering the engine's own queue. The trace is split in half at random: the
learned predictor trains on one half (prompt-length features: the trace has no
text), the workload samples the other. Prints mean E2E and the share of the
gap closed for the real predictors and for the noisy oracle over a range of
sigma; writes benchmarks/results/sjf_gap.json and docs/img/sjf_gap.png.

    .venv/bin/python benchmarks/sjf_gap.py
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fairserve.core.model import Request
from fairserve.core.predict.learned import train
from fairserve.experiments import SjfGap, gap_closed
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
    print(f"mean E2E: fifo {fifo:.2f} s, oracle-srpt {oracle:.2f} s")
    real = {
        "history": gap.mean_e2e_s("sjf", "history"),
        "driftsched": gap.mean_e2e_s("sjf", "driftsched"),
        "learned (prompt features)": gap.mean_e2e_s("sjf", "learned", {"model": model}),
    }
    noisy = {s: gap.mean_e2e_s("sjf", "noisy-oracle", {"sigma": s, "seed": 0}) for s in SIGMAS}
    closed_real = {k: gap_closed(fifo, oracle, v) for k, v in real.items()}
    closed_noisy = {s: gap_closed(fifo, oracle, v) for s, v in noisy.items()}
    for name, v in real.items():
        print(f"sjf + {name:28} mean E2E {v:6.2f} s  gap closed {100 * closed_real[name]:6.1f}%")
    for s, v in noisy.items():
        print(
            f"sjf + noisy-oracle sigma={s:<5} mean E2E {v:6.2f} s  gap closed {100 * closed_noisy[s]:6.1f}%"
        )
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": "python benchmarks/sjf_gap.py",
        "setup": {
            "load": gap.load,
            "cv": gap.cv,
            "requests": gap.requests,
            "max_num_seqs": gap.max_num_seqs,
        },
        "learned_holdout_metrics": model.metrics,
        "mean_e2e_s": {
            "fifo": fifo,
            "oracle-srpt": oracle,
            **real,
            **{f"noisy-oracle sigma={s}": v for s, v in noisy.items()},
        },
        "gap_closed": {
            **closed_real,
            **{f"noisy-oracle sigma={s}": v for s, v in closed_noisy.items()},
        },
    }
    (ROOT / "benchmarks" / "results" / "sjf_gap.json").write_text(
        json.dumps(report, indent=2) + "\n"
    )
    plot(closed_noisy, closed_real, ROOT / "docs" / "img" / "sjf_gap.png")
    print("results written to benchmarks/results/sjf_gap.json and docs/img/sjf_gap.png")


def plot(noisy: dict[float, float], real: dict[str, float], path: Path) -> None:
    """Gap closed against the noisy oracle's sigma, real predictors as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    xs = sorted(noisy)
    ax.plot(xs, [100 * noisy[s] for s in xs], marker="o", label="sjf + noisy oracle")
    for (name, value), style in zip(real.items(), ("--", ":", "-."), strict=False):
        ax.axhline(100 * value, linestyle=style, color="gray", label=f"sjf + {name}")
    ax.axhline(60, color="red", linewidth=0.8, label="target: 60%")
    ax.set_xlabel("noisy-oracle sigma (log-normal noise on the true length)")
    ax.set_ylabel("FIFO -> oracle gap in mean E2E closed (%)")
    ax.set_title("SJF on Azure conversation lengths, 95% load")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
