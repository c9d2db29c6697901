"""Run directories: what ``simulate``, ``compare`` and ``bench`` leave for ``fairserve report``.

A run directory holds one or more *runs* (one for ``simulate`` and ``bench``,
one per configuration for ``compare``) of the same workload::

    RUN_DIR/
      config.json          format version, kind, labels, tenant weights and SLOs, the config
      summary.json         per run: label, summary (Summary.to_dict()), fairness, extra
      records.parquet      one row per ended request, every run (column ``run``)
      predictions.parquet  predicted and actual output tokens (only if a run has any)
      report.html          written by ``fairserve report`` (default path)
      plots/*.png          the report's figures as PNG files

``records.parquet`` has the columns of
:class:`~fairserve.metrics.records.RecordArrays` with the tenant as its name
(``tenant``, a string) and the outcome as its name (``completed``,
``cancelled``, ``failed``); times are seconds, NaN where a moment never came.
Everything is plain data, so a bench run (wall-clock records from the gateway)
writes the same files as a simulated one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fairserve.core.model import SLO
from fairserve.metrics.records import OUTCOME_CODES, RecordArrays

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "RunData",
    "RunDir",
    "RunDirError",
    "read_run_dir",
    "run_data_from_result",
    "slo_to_dict",
    "write_run_dir",
]

FORMAT_VERSION = 1
KINDS = ("simulate", "compare", "bench")
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
RECORDS_FILE = "records.parquet"
PREDICTIONS_FILE = "predictions.parquet"

# Record columns stored as they are (the tenant and outcome are stored as names).
_NUMERIC_COLUMNS = (
    "request_id",
    "instance",
    "arrival_s",
    "first_scheduled_s",
    "first_token_s",
    "finish_s",
    "prompt_tokens",
    "output_tokens",
    "cached_prompt_tokens",
    "preemptions",
)
_OUTCOME_NAMES = tuple(o.value for o in OUTCOME_CODES)


class RunDirError(ValueError):
    """A run directory is missing, incomplete or of an unknown format; the message says which."""


@dataclass(frozen=True)
class RunData:
    """One run's data for a run directory.

    ``summary`` is ``Summary.to_dict()``; ``fairness`` is ``Fairness.to_dict()``
    (or ``None``); ``predicted_tokens``/``actual_tokens`` are the output-length
    predictions of completed requests, equal length, or ``None`` without a
    predictor. ``extra`` holds any other JSON-able figures (wall time, ...).
    """

    label: str
    records: RecordArrays
    summary: Mapping[str, Any]
    fairness: Mapping[str, Any] | None = None
    predicted_tokens: np.ndarray | None = None
    actual_tokens: np.ndarray | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pred, actual = self.predicted_tokens, self.actual_tokens
        if (pred is None) != (actual is None):
            raise ValueError(f"run {self.label!r}: give both predicted and actual tokens, or none")
        if pred is not None and actual is not None and len(pred) != len(actual):
            raise ValueError(
                f"run {self.label!r}: {len(pred)} predicted vs {len(actual)} actual token counts"
            )

    @property
    def has_predictions(self) -> bool:
        """Whether the run made any output-length predictions."""
        return self.predicted_tokens is not None and len(self.predicted_tokens) > 0


# (label, records, summary, fairness, (predicted, actual) or None)
RunTuple = tuple[
    str,
    RecordArrays,
    Mapping[str, Any],
    Mapping[str, Any] | None,
    tuple[np.ndarray, np.ndarray] | None,
]


def _as_run(run: RunData | RunTuple) -> RunData:
    if isinstance(run, RunData):
        return run
    label, records, summary, fair, predictions = run
    pred, actual = predictions if predictions is not None else (None, None)
    return RunData(label, records, summary, fair, pred, actual)


def run_data_from_result(
    label: str,
    result: Any,
    weights: Mapping[str, float] | None = None,
    slos: Mapping[str, Any] | None = None,
    components: Mapping[str, str | None] | None = None,
) -> RunData:
    """A :class:`RunData` from a ``SimResult`` (summary, fairness and predictions computed).

    ``weights`` (tenant -> weight) are used for the fairness figures; ``slos``
    (tenant -> ``SLO``) for goodput; ``components`` (``policy``, ``predictor``,
    ``router`` -> name) are kept in ``extra`` so the report can tell which runs
    share a predictor.
    """
    from fairserve.metrics.fairness import fairness

    return RunData(
        label=label,
        records=result.records,
        summary=result.summary(slos=slos).to_dict(),
        fairness=fairness(result.records, weights).to_dict(),
        predicted_tokens=result.predicted_tokens,
        actual_tokens=result.actual_tokens,
        extra={"wall_time_s": result.wall_time_s, "engine_steps": result.steps}
        | dict(components or {}),
    )


def _json_safe(value: Any) -> Any:
    """NaN and infinities become ``None``; numpy scalars become Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def records_frame(label: str, records: RecordArrays) -> pl.DataFrame:
    """The records of one run as a polars frame (tenant and outcome as names)."""
    names = np.asarray(records.tenant_names, dtype=object)
    outcomes = np.asarray(_OUTCOME_NAMES, dtype=object)
    columns: dict[str, Any] = {"run": pl.Series("run", [label] * len(records), dtype=pl.String)}
    columns["tenant"] = pl.Series(
        "tenant", names[records.tenant] if len(names) else [], dtype=pl.String
    )
    columns["outcome"] = pl.Series("outcome", outcomes[records.outcome], dtype=pl.String)
    for name in _NUMERIC_COLUMNS:
        columns[name] = getattr(records, name)
    return pl.DataFrame(columns)


def slo_to_dict(slo: SLO) -> dict[str, Any]:
    """An SLO as the run directory stores it (objectives left unset stored as null)."""
    return {"name": slo.name, "ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s, "e2e_s": slo.e2e_s}


def _has_objective(slo: SLO) -> bool:
    return any(v is not None for v in (slo.ttft_s, slo.tpot_s, slo.e2e_s))


def write_run_dir(
    path: str | Path,
    kind: str,
    config: Mapping[str, Any],
    runs: Sequence[RunData | RunTuple],
    *,
    weights: Mapping[str, float] | None = None,
    slos: Mapping[str, SLO] | None = None,
) -> Path:
    """Write a run directory (see the module docstring) and return its path.

    ``kind`` is ``simulate``, ``compare`` or ``bench``; ``config`` is any
    JSON-able description of what ran (stored as it is, NaN as null); ``runs``
    are :class:`RunData` or ``(label, records, summary, fairness, predictions)``
    tuples with ``predictions`` a ``(predicted, actual)`` pair or ``None``;
    ``weights`` are the tenants' weights, from which the report draws each
    tenant's fair share (1 for a tenant not named); ``slos`` their objectives,
    from which the report's verdict, SLO lines and attainment are drawn (a
    tenant without one has none). Existing files of the
    format are replaced; anything else in the directory is left alone.
    """
    if kind not in KINDS:
        raise ValueError(f"run kind must be one of {', '.join(KINDS)}, got {kind!r}")
    data = [_as_run(r) for r in runs]
    if not data:
        raise ValueError("a run directory needs at least one run")
    labels = [r.label for r in data]
    if len(set(labels)) != len(labels):
        raise ValueError(f"run labels must be distinct, got {labels}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tenants = sorted({name for r in data for name in r.records.tenant_names})
    head = {
        "format": "fairserve-run",
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "runs": labels,
        "tenants": tenants,
        "weights": {t: float((weights or {}).get(t, 1.0)) for t in tenants},
        "slos": {
            t: slo_to_dict(slo)
            for t, slo in sorted((slos or {}).items())
            if t in tenants and _has_objective(slo)
        },
        "config": config,
    }
    (out / CONFIG_FILE).write_text(json.dumps(_json_safe(head), indent=2) + "\n")
    summaries = [
        {"label": r.label, "summary": r.summary, "fairness": r.fairness, "extra": r.extra}
        for r in data
    ]
    (out / SUMMARY_FILE).write_text(json.dumps(_json_safe(summaries), indent=2) + "\n")
    pl.concat([records_frame(r.label, r.records) for r in data]).write_parquet(out / RECORDS_FILE)
    predictions = [r for r in data if r.has_predictions]
    pred_path = out / PREDICTIONS_FILE
    if predictions:
        pl.concat(
            pl.DataFrame(
                {
                    "run": [r.label] * len(r.predicted_tokens),  # type: ignore[arg-type]
                    "predicted_tokens": np.asarray(r.predicted_tokens, dtype=np.int64),
                    "actual_tokens": np.asarray(r.actual_tokens, dtype=np.int64),
                }
            )
            for r in predictions
        ).write_parquet(pred_path)
    elif pred_path.exists():
        pred_path.unlink()  # a stale file from an earlier run must not show up in the report
    return out


@dataclass(frozen=True)
class RunDir:
    """A run directory read back: everything the report needs."""

    path: Path
    kind: str
    config: Mapping[str, Any]
    labels: tuple[str, ...]
    tenants: tuple[str, ...]
    weights: Mapping[str, float]
    summaries: Mapping[str, Mapping[str, Any]]  # label -> {summary, fairness, extra}
    slos: Mapping[str, SLO]  # tenants with an objective only
    records: pl.DataFrame
    predictions: pl.DataFrame | None

    def records_of(self, label: str) -> pl.DataFrame:
        """The records of one run."""
        return self.records.filter(pl.col("run") == label)

    def extra_of(self, label: str) -> Mapping[str, Any]:
        """A run's ``extra`` figures (wall time, its components, ...); empty if none."""
        return (self.summaries.get(label) or {}).get("extra") or {}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise RunDirError(
            f"{path.parent}: not a run directory (no {path.name}); write one with "
            "`fairserve simulate --out DIR`"
        ) from exc
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc})") from exc


def read_run_dir(path: str | Path) -> RunDir:
    """Read a run directory written by :func:`write_run_dir`; :class:`RunDirError` if it is not one."""
    root = Path(path)
    if not root.is_dir():
        raise RunDirError(f"{root}: no such directory")
    head = _read_json(root / CONFIG_FILE)
    if not isinstance(head, dict) or head.get("format") != "fairserve-run":
        raise RunDirError(f"{root / CONFIG_FILE}: not a fairserve run directory")
    version = head.get("format_version")
    if version != FORMAT_VERSION:
        raise RunDirError(
            f"{root / CONFIG_FILE}: format_version {version!r}; this fairserve reads {FORMAT_VERSION}"
        )
    summaries = {s["label"]: s for s in _read_json(root / SUMMARY_FILE)}
    records_path = root / RECORDS_FILE
    if not records_path.exists():
        raise RunDirError(f"{root}: no {RECORDS_FILE}")
    pred_path = root / PREDICTIONS_FILE
    return RunDir(
        path=root,
        kind=str(head["kind"]),
        config=head.get("config") or {},
        labels=tuple(head["runs"]),
        tenants=tuple(head.get("tenants") or ()),
        weights={str(k): float(v) for k, v in (head.get("weights") or {}).items()},
        summaries=summaries,
        slos={
            str(t): SLO(str(v.get("name") or t), v.get("ttft_s"), v.get("tpot_s"), v.get("e2e_s"))
            for t, v in (head.get("slos") or {}).items()
        },
        records=pl.read_parquet(records_path),
        predictions=pl.read_parquet(pred_path) if pred_path.exists() else None,
    )
