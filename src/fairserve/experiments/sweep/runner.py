"""Running a sweep: the cells not yet stored, on Ray or a process pool, then the outputs."""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fairserve.core.registry import ComponentError, Registry
from fairserve.experiments.sweep.plan import Cell, plan_cells
from fairserve.experiments.sweep.run import measure_capacity, run_cell
from fairserve.experiments.sweep.spec import Component, SweepSpec, SweepSpecError
from fairserve.experiments.sweep.store import load_stored, results_table, store_cell, write_outputs

__all__ = ["OnCell", "SweepError", "SweepResult", "run_sweep"]


class SweepError(RuntimeError):
    """Some cells failed; the finished ones are stored and the table holds them."""


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
            # The node's address; Ray's servers still listen on all interfaces
            # (docs/reports.md): --no-ray opens no socket.
            _node_ip_address="127.0.0.1",
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


def _check_components(spec: SweepSpec, base_dir: Path) -> None:
    """Fail before any cell runs on an unknown name or parameter, or an impossible deployment."""
    from fairserve.core.policies import POLICIES
    from fairserve.core.predict import PREDICTORS
    from fairserve.core.route import ADMISSION, ROUTERS
    from fairserve.sim.config import engine_config_from
    from fairserve.sim.cost import UnknownProfileError
    from fairserve.sim.run import InstanceSpec

    checks: list[tuple[str, Component | None, Registry[Any]]] = []
    checks += [(f"policies.{i}", p, POLICIES) for i, p in enumerate(spec.policies)]
    checks += [(f"routers.{i}", r, ROUTERS) for i, r in enumerate(spec.routers)]
    checks += [(f"predictors.{i}", p, PREDICTORS) for i, p in enumerate(spec.predictors)]
    checks.append(("deployment.admission", spec.deployment.admission, ADMISSION))
    for key, component, registry in checks:
        try:
            if component is not None:
                registry.check(component.spec)
        except ComponentError as exc:
            raise SweepSpecError(f"{key}: {exc}") from None
    d = spec.deployment
    profile = Path(d.profile) if d.profile is not None else None
    if profile is not None and not profile.is_absolute():
        profile = base_dir / profile
    try:
        instance = InstanceSpec(d.gpu, d.model, d.tp, d.instances, profile=profile,
                                expert_parallel=d.expert_parallel)  # fmt: skip
        instance.cost_model()
        engine_config_from(d.model_dump())  # the engine keys' own checks (KV tiers)
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
    _check_components(spec, base)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    cells = plan_cells(spec, base, _capacities(spec, base))
    (out / "sweep.json").write_text(
        json.dumps({"spec": spec.model_dump(), "cells": [c.id for c in cells]}, indent=2) + "\n"
    )
    stored: dict[str, Mapping[str, Any]] = {}
    for cell in cells:
        found = load_stored(out, cell)
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
                    store_cell(out, cell, cell_result)
                    stored[cell.id] = cell_result
                    result.ran.append(cell.id)
                    if on_cell is not None:
                        on_cell(cell, cell_result)
                bar.advance(task)
    result.table = results_table(cells, stored)
    if result.table.height:
        result.files = write_outputs(out, result.table)
    if result.failed:
        first = next(iter(result.failed.items()))
        raise SweepError(
            f"{len(result.failed)} of {len(cells)} cells failed (they run again next time); "
            f"e.g. cell {first[0]}: {first[1]}"
        )
    return result
