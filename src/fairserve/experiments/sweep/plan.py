"""The cells of a sweep: every point of the grid as plain data, identified by a hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairserve.experiments.sweep.spec import (
    Component,
    Deployment,
    SweepSpec,
    SweepSpecError,
    WorkloadEntry,
)

__all__ = ["CELL_FORMAT_VERSION", "Cell", "plan_cells"]

# Part of every cell's hash: bump it when a cell's figures would change for the
# same definition (a metric's definition, the row layout), so old cells rerun.
# 2: every component that takes a seed gets the cell's (noisy-oracle's noise
# used to be the same for every seed).
CELL_FORMAT_VERSION = 2

# Deployment keys added in version 2: in a cell's definition only when set, so
# a spec that leaves them out has the same definition as before.
_OPTIONAL_DEPLOYMENT = ("profile", "admission", "reference")
_OFF_UNLESS_SET = (
    "expert_parallel",
    "max_tenant_prefill_tokens",
    "service_quantum_tokens",
    "cpu_kv_cache_gb",
    "cpu_kv_bandwidth_gb_s",
    "remote_kv_cache_gb",
    "remote_kv_bandwidth_gb_s",
    "remote_kv_latency_s",
)


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a JSON-able definition and its hash id."""

    id: str
    definition: Mapping[str, Any]

    @property
    def labels(self) -> dict[str, Any]:
        """The configuration columns of the results table."""
        d = self.definition
        return {
            "workload": d["workload"]["label"],
            "policy": d["policy"]["label"],
            "predictor": d["predictor"]["label"] if d["predictor"] else None,
            "router": d["router"]["label"],
            "load": d["load"],
            "seed": d["seed"],
        }


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _component(c: Component | None) -> dict[str, Any] | None:
    return None if c is None else {"name": c.name, "params": c.params, "label": c.display}


def _cell_id(definition: Mapping[str, Any]) -> str:
    keyed = dict(definition)
    keyed["workload"] = {k: v for k, v in definition["workload"].items() if k != "path"}
    text = json.dumps(keyed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _resolve(file: str, base_dir: Path, what: str) -> Path:
    path = Path(file).expanduser()
    path = (path if path.is_absolute() else base_dir / path).resolve()
    if not path.exists():
        raise SweepSpecError(f"{what}: no such file {path}")
    return path


def _workload_definition(w: WorkloadEntry, base_dir: Path) -> dict[str, Any]:
    file = w.spec or w.trace
    path = _resolve(file, base_dir, f"workload {w.display!r}") if file is not None else None
    return {
        "label": w.display,
        "kind": "spec" if w.spec else "trace" if w.trace else "synthetic",
        "path": str(path) if path else None,
        "digest": _digest(path) if path else None,
        "format": w.format,
        "synthetic": w.synthetic.model_dump() if w.synthetic else None,
        "max_requests": w.max_requests,
    }


def _deployment_definition(d: Deployment, base_dir: Path) -> dict[str, Any]:
    """The deployment as the CLI's options (paths resolved against the spec's folder)."""
    out = d.model_dump(exclude=set(_OPTIONAL_DEPLOYMENT))
    for key in _OFF_UNLESS_SET:  # left out at their defaults: older cells keep their ids
        if not out[key]:
            del out[key]
    if d.profile is not None:
        out["profile"] = str(_resolve(d.profile, base_dir, "deployment.profile"))
    if d.admission is not None:
        admission = _component(d.admission)
        assert admission is not None
        model = admission["params"].get("model")
        if isinstance(model, str):
            path = _resolve(model, base_dir, "deployment.admission")
            admission["params"] = {**admission["params"], "model": str(path)}
        out["admission"] = admission
    if d.reference:
        out["reference"] = True
    return out


def plan_cells(
    spec: SweepSpec,
    base_dir: Path = Path("."),
    capacities: Mapping[str, float] | None = None,
) -> list[Cell]:
    """Every cell of the grid, in a fixed order (workload, policy, predictor, router, load, seed).

    ``capacities`` (workload label -> tokens/s) fill in a measured capacity for
    ``unit: capacity`` loads without ``capacity_tokens_per_s``.
    """
    cells = []
    deployment = _deployment_definition(spec.deployment, base_dir)
    for w in spec.workloads:
        wdef = _workload_definition(w, base_dir)
        capacity = spec.load.capacity_tokens_per_s
        if spec.load.unit == "capacity" and capacity is None and capacities is not None:
            capacity = capacities.get(w.display)
        for policy in spec.policies:
            for predictor in spec.predictors:
                for router in spec.routers:
                    for load in spec.loads:
                        for seed in spec.seeds:
                            definition = {
                                "version": CELL_FORMAT_VERSION,
                                "workload": wdef,
                                "policy": _component(policy),
                                "predictor": _component(predictor),
                                "router": _component(router),
                                "load": float(load),
                                "load_unit": spec.load.unit,
                                "rate_per_s": spec.load.rate_per_s,
                                "capacity_tokens_per_s": capacity,
                                "seed": int(seed),
                                "deployment": deployment,
                            }
                            cells.append(Cell(_cell_id(definition), definition))
    return cells
