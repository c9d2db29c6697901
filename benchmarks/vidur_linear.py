"""The cost model's GEMM term against Vidur's per-operator A100 measurements.

Reads ../shared/measurements/vidur-linear-a100.csv: the time of every
non-attention operator of a layer (projections, MLP, norms, rotary, residual
adds), summed over the layers, for four Llama shapes at tp 1/2/4/8 and 1 to
32k tokens on one A100-80GB. The cost model prices those operators as its
GEMM term over the body parameters, ``max(compute, weight reads)``. This
benchmark scores that term, with the shipped A100 factors and refitted, and
two structural variants a later cost model may take:

- ``sum``: ``compute + weight reads`` (no overlap) instead of their maximum;
- ``+act``: a per-token term the tp ranks do not share, ``layers x hidden x
  dtype x k / hbm_bw`` (norms and residual adds run on the whole hidden state
  on every rank), with ``k`` fitted.

Fits minimise the soft-L1 log-error (as ``fairserve calibrate``); the error is
the mean absolute percentage error per (model, tp) over rows of >= 256 tokens
(prefill-sized) and over all rows. Writes benchmarks/results/vidur_linear.json.

    .venv/bin/python benchmarks/vidur_linear.py
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from fairserve.sim.cost import default_efficiency, gpu_spec, model_spec

DATA = Path(__file__).resolve().parents[2] / "shared/measurements/vidur-linear-a100.csv"
VARIANTS = ("max", "max+act", "sum", "sum+act")


def read(path: Path) -> dict[str, np.ndarray]:
    """The rows as arrays, with each row's model shape."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    specs = {name: model_spec(name) for name in {r["fairserve_shape"] for r in rows}}
    shape = [specs[r["fairserve_shape"]] for r in rows]
    return {
        "model": np.asarray([r["fairserve_shape"] for r in rows]),
        "tp": np.asarray([int(r["tp"]) for r in rows], dtype=np.float64),
        "tokens": np.asarray([int(r["num_tokens"]) for r in rows], dtype=np.float64),
        "time_s": np.asarray([float(r["measured_linear_s"]) for r in rows]),
        "params": np.asarray([m.body_params for m in shape], dtype=np.float64),
        "layers": np.asarray([m.num_layers for m in shape], dtype=np.float64),
        "hidden": np.asarray([m.hidden_size for m in shape], dtype=np.float64),
    }


def predict(d: dict[str, np.ndarray], variant: str, mfu: float, mbu: float, k: float) -> np.ndarray:
    """The GEMM term of every row (dtype: 2 bytes)."""
    gpu = gpu_spec("A100-80GB")
    peak, hbm = gpu.peak_bf16_tflops * 1e12, gpu.hbm_bandwidth_gb_s * 1e9
    compute = 2 * d["params"] * d["tokens"] / (d["tp"] * peak * mfu)
    weights = 2 * d["params"] / (d["tp"] * hbm * mbu)
    gemm = compute + weights if variant.startswith("sum") else np.maximum(compute, weights)
    if variant.endswith("+act"):
        gemm = gemm + d["layers"] * d["hidden"] * 2 * k * d["tokens"] / hbm
    return np.asarray(gemm)


def fit(d: dict[str, np.ndarray], variant: str) -> tuple[float, float, float]:
    """(mfu, mbu, k) minimising the soft-L1 log-error."""
    act = variant.endswith("+act")

    def residuals(x: np.ndarray) -> np.ndarray:
        mfu, mbu = np.exp(x[:2])
        k = float(np.exp(x[2])) if act else 0.0
        return np.log(predict(d, variant, mfu, mbu, k) / d["time_s"])

    x0 = np.log([0.6, 0.7, 10.0] if act else [0.6, 0.7])
    hi = np.log([1.0, 1.0, 100.0] if act else [1.0, 1.0])
    lo = np.log([0.05, 0.05, 0.01] if act else [0.05, 0.05])
    x = least_squares(residuals, x0, bounds=(lo, hi), loss="soft_l1", f_scale=0.05).x
    return float(np.exp(x[0])), float(np.exp(x[1])), float(np.exp(x[2])) if act else 0.0


def scores(d: dict[str, np.ndarray], pred: np.ndarray) -> dict[str, object]:
    """MAPE overall, over rows of >= 256 tokens, and per (model, tp) over those."""
    pct = 100 * np.abs(pred / d["time_s"] - 1)
    big = d["tokens"] >= 256
    cells = {
        f"{m} tp{int(tp)}": round(float(pct[(d["model"] == m) & (d["tp"] == tp) & big].mean()), 1)
        for m in sorted(set(d["model"].tolist()))
        for tp in sorted(set(d["tp"].tolist()))
    }
    return {
        "mape_all": round(float(pct.mean()), 1),
        "mape_ge256": round(float(pct[big].mean()), 1),
        "worst_cell_ge256": max(cells.values()),
        "by_model_tp_ge256": cells,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/vidur_linear.json"))
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"no measurements at {args.data}", file=sys.stderr)
        return 2
    d = read(args.data)
    shipped = default_efficiency("A100-80GB")
    result: dict[str, object] = {
        "data": args.data.name,
        "rows": len(d["time_s"]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "shipped A100 factors (max)": scores(d, predict(d, "max", shipped.mfu, shipped.mbu, 0.0)),
    }
    for variant in VARIANTS:
        mfu, mbu, k = fit(d, variant)
        result[f"fitted {variant}"] = {
            "mfu": round(mfu, 3),
            "mbu": round(mbu, 3),
            "k": round(k, 2),
            **scores(d, predict(d, variant, mfu, mbu, k)),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'GEMM term':28} {'all':>6} {'>=256':>6} {'worst cell':>10}  factors")
    for name, row in result.items():
        if isinstance(row, dict):
            factors = ", ".join(f"{k}={row[k]}" for k in ("mfu", "mbu", "k") if k in row)
            print(
                f"{name:28} {row['mape_all']:>5}% {row['mape_ge256']:>5}% "
                f"{row['worst_cell_ge256']:>9}%  {factors}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
