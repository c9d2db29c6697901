"""``fairserve sweep``: a grid of simulations on Ray (or a process pool), resumable.

A sweep spec (YAML, validated with pydantic; docs/reports.md has the
reference) names workloads, policies, predictors, routers, load levels and
seeds. Every combination is a *cell*: one ``simulate`` run of one workload
scaled to one load, with one seed. A cell is identified by a hash of its full
definition (workload file contents included, its path not), so

- a finished cell is stored as ``OUT/cells/<id>.json`` and never rerun: an
  interrupted sweep started again runs only the cells without a file, and a
  grid grown by a load level runs only the new cells;
- every cell is deterministic (the workload and random routers are seeded by
  the cell's seed), so Ray and the process pool give the same numbers.

The results are ``OUT/results.parquet`` and ``OUT/results.csv`` (one row per
cell: the configuration columns and the metrics) and three figures in
``OUT/plots/``: latency, goodput and fairness against load.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = [
    "CELL_FORMAT_VERSION",
    "Cell",
    "SweepError",
    "SweepResult",
    "SweepSpec",
    "SweepSpecError",
    "load_sweep_spec",
    "parse_sweep_spec",
    "plan_cells",
    "run_cell",
    "run_sweep",
]

# Part of every cell's hash: bump it when a cell's figures would change for the
# same definition (a metric's definition, the row layout), so old cells rerun.
CELL_FORMAT_VERSION = 1


class SweepSpecError(ValueError):
    """The sweep spec is invalid; the message names the file and the key."""


class SweepError(RuntimeError):
    """Some cells failed; the finished ones are stored and the table holds them."""


# ------------------------------------------------------------------ the spec
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Component(_Model):
    """A policy, predictor or router: registry name, parameters, label in the table.

    Written as a string (``vtc`` or ``vtc:input_weight=1;output_weight=4``) or a
    mapping ``{name: vtc, params: {...}, label: vtc-4x}``.
    """

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        name, _, rest = data.partition(":")
        params: dict[str, Any] = {}
        for item in filter(None, rest.split(";")):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{data!r}: expected name or name:key=value;key=value")
            params[key.strip().replace("-", "_")] = yaml.safe_load(value)
        return {"name": name.strip(), "params": params, "label": data if params else None}

    @property
    def display(self) -> str:
        """The label, else the name."""
        return self.label or self.name


class TenantShare(_Model):
    """A tenant of a synthetic workload."""

    name: str = Field(min_length=1)
    share: float = Field(default=1.0, gt=0)
    weight: float = Field(default=1.0, gt=0)
    priority: int = 0


class Synthetic(_Model):
    """A generated workload (``fairserve.workload.generate.synthetic``); seeded by the cell's seed."""

    requests: int = Field(default=300, ge=2)
    rate_per_s: float = Field(default=10.0, gt=0)
    arrival: Literal["poisson", "gamma"] = "poisson"
    cv: float = Field(default=1.0, ge=0)
    length: Literal["lognormal", "zipf"] = "lognormal"
    prompt_mean_tokens: float | None = Field(default=None, ge=1)
    output_mean_tokens: float | None = Field(default=None, ge=1)
    tenants: list[TenantShare] = Field(default_factory=lambda: [TenantShare(name="default")])


class WorkloadEntry(_Model):
    """One workload: exactly one of ``spec`` (a workload spec YAML), ``trace`` or ``synthetic``."""

    name: str | None = None
    spec: str | None = None
    trace: str | None = None
    format: str | None = None
    synthetic: Synthetic | None = None
    max_requests: int | None = Field(default=None, ge=2)

    @model_validator(mode="after")
    def _one_kind(self) -> WorkloadEntry:
        given = [k for k in ("spec", "trace", "synthetic") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a workload needs exactly one of 'spec', 'trace' or 'synthetic', got {given or 'none'}"
            )
        if self.format is not None and self.trace is None:
            raise ValueError("'format' applies to a 'trace' workload")
        return self

    @property
    def display(self) -> str:
        """The name, else the file's stem, else 'synthetic'."""
        path = self.spec or self.trace
        return self.name or (Path(path).stem if path else "synthetic")


class LoadSpec(_Model):
    """What a load level multiplies.

    ``unit: rate``: the arrival rate, ``load * rate_per_s`` requests per second
    (``rate_per_s`` left out: the workload's own mean rate, so 1.0 is the
    workload as it is). ``unit: capacity``: the offered token work
    (prompt + output tokens per second) as a fraction of the deployment's
    capacity, ``capacity_tokens_per_s`` or, left out, measured once per
    workload: every request of the first seed's workload arriving at once
    under fifo, completed tokens over the makespan.
    """

    unit: Literal["rate", "capacity"] = "rate"
    rate_per_s: float | None = Field(default=None, gt=0)
    capacity_tokens_per_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _fits_unit(self) -> LoadSpec:
        if self.unit == "rate" and self.capacity_tokens_per_s is not None:
            raise ValueError("'capacity_tokens_per_s' applies to unit: capacity")
        if self.unit == "capacity" and self.rate_per_s is not None:
            raise ValueError("'rate_per_s' applies to unit: rate")
        return self


class Deployment(_Model):
    """The simulated cluster; the keys are those of ``fairserve simulate``'s options."""

    model: str = "Llama-3.1-8B"
    gpu: str = "H100-80GB"
    tp: int = Field(default=1, ge=1)
    instances: int = Field(default=1, ge=1)
    max_num_batched_tokens: int = Field(default=8192, ge=1)
    max_num_seqs: int = Field(default=256, ge=1)
    block_size: int = Field(default=16, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    num_gpu_blocks: int | None = Field(default=None, ge=1)
    prefix_caching: bool = True
    placement: Literal["gateway", "engine"] = "gateway"
    max_engine_waiting: int = Field(default=8, ge=1)


def _no_predictor() -> list[Component | None]:
    return [None]


class SweepSpec(_Model):
    """A sweep: the grid ``workloads x policies x predictors x routers x loads x seeds``."""

    name: str = "sweep"
    workloads: list[WorkloadEntry] = Field(min_length=1)
    policies: list[Component] = Field(
        default_factory=lambda: [Component(name="fifo")], min_length=1
    )
    predictors: list[Component | None] = Field(default_factory=_no_predictor, min_length=1)
    routers: list[Component] = Field(
        default_factory=lambda: [Component(name="round-robin")], min_length=1
    )
    loads: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    load: LoadSpec = Field(default_factory=LoadSpec)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    deployment: Deployment = Field(default_factory=Deployment)

    @model_validator(mode="after")
    def _distinct(self) -> SweepSpec:
        if any(not (x > 0 and np.isfinite(x)) for x in self.loads):
            raise ValueError(f"'loads' must be finite numbers > 0, got {self.loads}")
        for key, labels in (
            ("workloads", [w.display for w in self.workloads]),
            ("policies", [p.display for p in self.policies]),
            ("predictors", [p.display if p else "none" for p in self.predictors]),
            ("routers", [r.display for r in self.routers]),
            ("loads", self.loads),
            ("seeds", self.seeds),
        ):
            if len(set(labels)) != len(labels):
                raise ValueError(
                    f"'{key}' has repeated entries {labels}; give each a distinct label"
                )
        return self

    def size(self) -> int:
        """The number of cells."""
        return (
            len(self.workloads)
            * len(self.policies)
            * len(self.predictors)
            * len(self.routers)
            * len(self.loads)
            * len(self.seeds)
        )


def parse_sweep_spec(data: Any, origin: str = "<sweep spec>") -> SweepSpec:
    """Validate a spec mapping; errors name the key path (``policies.2.params``)."""
    if not isinstance(data, dict):
        raise SweepSpecError(f"{origin}: a sweep spec must be a mapping, got {type(data).__name__}")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{origin}: {'.'.join(str(p) for p in e['loc']) or '<top>'}: {e['msg']}"
            for e in exc.errors()
        ]
        raise SweepSpecError("invalid sweep spec\n" + "\n".join(lines)) from None


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec file (YAML)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepSpecError(f"{path}: no such sweep spec") from None
    except yaml.YAMLError as exc:
        raise SweepSpecError(f"{path}: not valid YAML ({exc})") from None
    return parse_sweep_spec(data, str(path))


# ------------------------------------------------------------------ cells
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


def _workload_definition(w: WorkloadEntry, base_dir: Path) -> dict[str, Any]:
    path: Path | None = None
    file = w.spec or w.trace
    if file is not None:
        path = Path(file).expanduser()
        path = (path if path.is_absolute() else base_dir / path).resolve()
        if not path.exists():
            raise SweepSpecError(f"workload {w.display!r}: no such file {path}")
    return {
        "label": w.display,
        "kind": "spec" if w.spec else "trace" if w.trace else "synthetic",
        "path": str(path) if path else None,
        "digest": _digest(path) if path else None,
        "format": w.format,
        "synthetic": w.synthetic.model_dump() if w.synthetic else None,
        "max_requests": w.max_requests,
    }


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
    deployment = spec.deployment.model_dump()
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


# ------------------------------------------------------------------ one cell
@functools.lru_cache(maxsize=16)
def _base_workload(wdef_json: str, seed: int) -> Any:
    """The workload of a definition and seed, before load scaling (cached per process)."""
    from fairserve.workload import load
    from fairserve.workload.generate import TenantMix, synthetic

    wdef = json.loads(wdef_json)
    if wdef["kind"] == "spec":
        wl = load(wdef["path"], seed=seed)
    elif wdef["kind"] == "trace":
        wl = load(wdef["path"], **({"fmt": wdef["format"]} if wdef["format"] else {}))
    else:
        s = wdef["synthetic"]
        tenants = [
            TenantMix(t["name"], t["share"], t["weight"], t["priority"]) for t in s["tenants"]
        ]
        options: dict[str, Any] = {"arrival": s["arrival"], "length": s["length"]}
        if s["arrival"] == "gamma":
            options["cv"] = s["cv"]
        for key in ("prompt_mean_tokens", "output_mean_tokens"):
            if s[key] is not None:
                options[key] = s[key]
        wl = synthetic(s["requests"], s["rate_per_s"], tenants=tenants, seed=seed, **options)
    if wdef["max_requests"] is not None and len(wl) > wdef["max_requests"]:
        wl = wl.take(np.arange(wdef["max_requests"]))
    return wl


def _cell_workload(definition: Mapping[str, Any]) -> Any:
    from fairserve.workload import transform as tf

    wl = _base_workload(json.dumps(definition["workload"], sort_keys=True), definition["seed"])
    load = definition["load"]
    if definition["load_unit"] == "capacity":
        capacity = definition["capacity_tokens_per_s"]
        if capacity is None:
            raise ValueError("a capacity load needs capacity_tokens_per_s (measured or given)")
        return tf.scale_to_load(wl, load, capacity)
    rate = definition["rate_per_s"]
    if rate is None:
        return tf.scale_time(wl, 1.0 / load)
    return tf.scale_to_rate(wl, load * rate)


def _sim_config(definition: Mapping[str, Any], workload: Any, policy: Mapping[str, Any]) -> Any:
    from fairserve.sim.config import engine_config_from
    from fairserve.sim.run import InstanceSpec, SimConfig

    d = definition["deployment"]
    engine = engine_config_from(d)
    router = definition["router"]
    router_params = dict(router["params"])
    if router["name"] == "p2c":
        router_params.setdefault("seed", definition["seed"])
    predictor = definition["predictor"]
    return SimConfig(
        instances=(InstanceSpec(d["gpu"], d["model"], d["tp"], d["instances"], engine),),
        policy=policy["name"],
        router=router["name"],
        placement=d["placement"],
        max_engine_waiting=d["max_engine_waiting"],
        predictor=predictor["name"] if predictor else None,
        tenants=tuple(workload.tenant_config(n) for n in workload.tenant_names()),
        policy_params=policy["params"],
        router_params=router_params,
        predictor_params=predictor["params"] if predictor else {},
    )


def _flatten(row: Mapping[str, Any]) -> dict[str, Any]:
    """``run_row``'s nested figures as flat columns with the unit last (``e2e_p99_s``)."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if key in ("policy", "predictor", "router", "per_tenant"):
            continue
        if key in ("ttft_s", "tpot_s", "e2e_s", "queue_s"):
            for stat, v in value.items():
                flat[f"{key[:-2]}_{stat}_s"] = v
        elif key == "goodput":
            flat.update({f"goodput_{k}": v for k, v in value.items()})
        elif key == "kv_utilization":
            flat.update({f"kv_util_{k}": v for k, v in value.items()})
        elif key == "fairness":
            flat.update(value)
        elif key == "predictor_error":
            flat.update({f"pred_{k}_tokens": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def run_cell(definition: Mapping[str, Any]) -> dict[str, Any]:
    """Run one cell; returns ``{"metrics": flat figures, "per_tenant": {...}}``.

    A top-level function of plain data, so Ray and a process pool can ship it.
    """
    from fairserve.experiments.compare import run_row

    workload = _cell_workload(definition)
    config = _sim_config(definition, workload, definition["policy"])
    predictor = definition["predictor"]
    row = run_row(
        workload,
        definition["policy"]["label"],
        predictor["label"] if predictor else None,
        definition["router"]["label"],
        config,
    )
    metrics = _flatten(row)
    metrics["offered_rate_per_s"] = (len(workload) - 1) / workload.duration_s
    return {"metrics": metrics, "per_tenant": row["per_tenant"]}


def measure_capacity(definition: Mapping[str, Any]) -> float:
    """Tokens (prompt + output) per second the deployment processes while saturated.

    Every request of the cell's workload arrives at once under fifo; the
    throughput is measured up to the moment the queue empties (the last first
    scheduling), so the drain of the longest requests, which leaves the engine
    half idle, does not count. Prompt tokens count when the first token comes,
    output tokens as they are generated (evenly between first token and finish).
    """
    from fairserve.sim.run import simulate
    from fairserve.workload import transform as tf

    base = _base_workload(json.dumps(definition["workload"], sort_keys=True), definition["seed"])
    # Every request arrives within a millisecond: the cluster is saturated until the queue empties.
    wl = tf.scale_time(base, 1e-3 / max(base.duration_s, 1e-9))
    fifo = {"name": "fifo", "params": {}, "label": "fifo"}
    rec = simulate(wl.requests(), _sim_config(definition, wl, fifo)).records
    done = rec.completed
    start = float(np.nanmin(rec.arrival_s))
    end = float(np.nanmax(rec.first_scheduled_s[done])) if done.any() else start
    first, finish = rec.first_token_s[done], rec.finish_s[done]
    prompt_tokens = float(rec.prompt_tokens[done][first <= end].sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        part = np.clip((end - first) / np.maximum(finish - first, 1e-12), 0.0, 1.0)
    output_tokens = float((rec.output_tokens[done] * part).sum())
    span = end - start
    if not (span > 0 and prompt_tokens + output_tokens > 0):
        raise ValueError(
            f"workload {definition['workload']['label']!r}: too few requests to measure the "
            "capacity; give load.capacity_tokens_per_s"
        )
    return (prompt_tokens + output_tokens) / span


# ------------------------------------------------------------------ running
@dataclass
class SweepResult:
    """What a sweep did and produced."""

    out_dir: Path
    table: pl.DataFrame
    ran: list[str] = field(default_factory=list)  # cell ids run this time
    reused: list[str] = field(default_factory=list)  # cell ids found finished
    failed: dict[str, str] = field(default_factory=dict)  # cell id -> error
    files: list[Path] = field(default_factory=list)


OnCell = Callable[[Cell, Mapping[str, Any]], None]
_Outcome = tuple[Cell, Mapping[str, Any] | None, str | None]


def _cell_path(out_dir: Path, cell_id: str) -> Path:
    return out_dir / "cells" / f"{cell_id}.json"


def _store(out_dir: Path, cell: Cell, result: Mapping[str, Any]) -> None:
    """Write a finished cell atomically (a crash leaves no half-written file)."""
    path = _cell_path(out_dir, cell.id)
    tmp = path.with_suffix(".tmp")
    data = {"cell": cell.id, **cell.labels, "definition": cell.definition, **result}
    tmp.write_text(json.dumps(data, allow_nan=False, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _load_stored(out_dir: Path, cell: Cell) -> Mapping[str, Any] | None:
    path = _cell_path(out_dir, cell.id)
    if not path.exists():
        return None
    try:
        data: Mapping[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a damaged file: the cell runs again
    return data


def _pool_outcomes(cells: Sequence[Cell], workers: int) -> Generator[_Outcome, None, None]:
    # spawn, not fork: forking a process that has started polars' or BLAS's
    # threads can deadlock the child.
    ctx = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        futures = {pool.submit(run_cell, dict(c.definition)): c for c in cells}
        for future in cf.as_completed(futures):
            cell = futures[future]
            try:
                yield cell, future.result(), None
            except Exception as exc:
                yield cell, None, f"{type(exc).__name__}: {exc}"
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _ray_session(address: str | None, workers: int) -> Iterator[Any]:
    # No usage statistics sent anywhere; set before ray is imported.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise SweepError(
            "Ray is not installed: pip install 'fairserve[sweep]', or run with --no-ray"
        ) from None

    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address is None:
        ray.init(
            num_cpus=workers,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",  # loopback only
            **quiet,
        )
    else:
        ray.init(address=address, **quiet)
    try:
        yield ray
    finally:
        ray.shutdown()


def _ray_outcomes(
    cells: Sequence[Cell], workers: int, address: str | None
) -> Generator[_Outcome, None, None]:
    with _ray_session(address, workers) as ray:
        task = ray.remote(num_cpus=1, max_retries=0)(run_cell)
        pending = {task.remote(dict(c.definition)): c for c in cells}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(done[0])
                try:
                    yield cell, ray.get(done[0]), None
                except Exception as exc:
                    yield cell, None, f"{type(exc).__name__}: {exc}"
        finally:
            for ref in pending:
                ray.cancel(ref)


def _table(cells: Sequence[Cell], stored: Mapping[str, Mapping[str, Any]]) -> pl.DataFrame:
    rows = [{"cell": c.id, **c.labels, **stored[c.id]["metrics"]} for c in cells if c.id in stored]
    if not rows:
        return pl.DataFrame()
    table = pl.DataFrame(rows, infer_schema_length=None)
    return table.with_columns(
        pl.col("workload", "policy", "predictor", "router").cast(pl.String),
        pl.col("load").cast(pl.Float64),
        pl.col("seed").cast(pl.Int64),
    )


def _write_outputs(out_dir: Path, table: pl.DataFrame) -> list[Path]:
    from fairserve.report.plots import figure_png, sweep_figures

    files = [out_dir / "results.parquet", out_dir / "results.csv"]
    table.write_parquet(files[0])
    table.write_csv(files[1])
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    for stem, fig in sweep_figures(table).items():
        path = plots / f"{stem}.png"
        path.write_bytes(figure_png(fig))
        files.append(path)
    return files


def _check_components(spec: SweepSpec) -> None:
    """Fail before any cell runs on an unknown name or an impossible deployment."""
    from fairserve.sim.cost import UnknownProfileError
    from fairserve.sim.run import InstanceSpec, SimConfig

    checks: list[tuple[str, dict[str, Any]]] = []
    checks += [(f"policies.{i}", {"policy": p.name}) for i, p in enumerate(spec.policies)]
    checks += [(f"routers.{i}", {"router": r.name}) for i, r in enumerate(spec.routers)]
    checks += [
        (f"predictors.{i}", {"predictor": p.name}) for i, p in enumerate(spec.predictors) if p
    ]
    for key, kwargs in checks:
        try:
            SimConfig(**kwargs)
        except ValueError as exc:
            raise SweepSpecError(f"{key}: {exc}") from None
    d = spec.deployment
    try:
        InstanceSpec(d.gpu, d.model, d.tp, d.instances).cost_model()
    except (ValueError, UnknownProfileError) as exc:
        raise SweepSpecError(f"deployment: {exc}") from None


def _capacities(spec: SweepSpec, base_dir: Path) -> dict[str, float]:
    if spec.load.unit != "capacity" or spec.load.capacity_tokens_per_s is not None:
        return {}
    first = plan_cells(spec.model_copy(update={"loads": [1.0], "seeds": spec.seeds[:1]}), base_dir)
    measured: dict[str, float] = {}
    for cell in first:
        label = cell.definition["workload"]["label"]
        if label not in measured:
            measured[label] = measure_capacity(cell.definition)
    return measured


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    base_dir: str | Path = ".",
    use_ray: bool = True,
    address: str | None = None,
    workers: int = 2,
    progress: bool = True,
    on_cell: OnCell | None = None,
) -> SweepResult:
    """Run the cells of ``spec`` not yet stored in ``out_dir``; write the table and figures.

    ``base_dir``: where relative workload paths start (the spec file's folder).
    ``use_ray``: a local Ray with ``workers`` CPUs, or the cluster at
    ``address``; otherwise a process pool of ``workers``. ``on_cell`` is
    called in this process after each finished cell is stored. Raises
    :class:`SweepError` after writing the outputs if some cells failed.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    base = Path(base_dir)
    _check_components(spec)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    cells = plan_cells(spec, base, _capacities(spec, base))
    (out / "sweep.json").write_text(
        json.dumps({"spec": spec.model_dump(), "cells": [c.id for c in cells]}, indent=2) + "\n"
    )
    stored: dict[str, Mapping[str, Any]] = {}
    for cell in cells:
        found = _load_stored(out, cell)
        if found is not None:
            stored[cell.id] = found
    todo = [c for c in cells if c.id not in stored]
    result = SweepResult(out_dir=out, table=pl.DataFrame(), reused=list(stored))
    if todo:
        outcomes = (
            _ray_outcomes(todo, workers, address) if use_ray else _pool_outcomes(todo, workers)
        )
        columns = (TextColumn(f"sweep {spec.name}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())  # fmt: skip
        console = Console(stderr=True)
        # closing(): an exception here (Ctrl-C, a failing on_cell) stops the pool or Ray now.
        with closing(outcomes), Progress(*columns, console=console, disable=not progress) as bar:
            task = bar.add_task("cells", total=len(cells), completed=len(stored))
            for cell, cell_result, error in outcomes:
                if error is not None or cell_result is None:
                    result.failed[cell.id] = error or "no result"
                else:
                    _store(out, cell, cell_result)
                    stored[cell.id] = cell_result
                    result.ran.append(cell.id)
                    if on_cell is not None:
                        on_cell(cell, cell_result)
                bar.advance(task)
    result.table = _table(cells, stored)
    if result.table.height:
        result.files = _write_outputs(out, result.table)
    if result.failed:
        first = next(iter(result.failed.items()))
        raise SweepError(
            f"{len(result.failed)} of {len(cells)} cells failed (they run again next time); "
            f"e.g. cell {first[0]}: {first[1]}"
        )
    return result
