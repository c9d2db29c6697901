"""One cell of a sweep: its workload scaled to its load, its deployment, its figures.

:func:`run_cell` is a top-level function of plain data so that Ray and a
process pool can ship it. The cell's ``SimConfig`` is built by
:meth:`SimConfig.from_options`, the builder ``fairserve simulate`` uses, so a
sweep runs exactly what the command line would.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from fairserve.core.registry import ComponentSpec
from fairserve.sim.run import SimConfig, simulate

__all__ = ["measure_capacity", "run_cell"]


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


def _spec(component: Mapping[str, Any] | None) -> ComponentSpec | None:
    """A cell's ``{name, params, label}`` as the spec its registry builds."""
    return None if component is None else ComponentSpec(component["name"], component["params"])


def _sim_config(
    definition: Mapping[str, Any], workload: Any, policy: Mapping[str, Any]
) -> SimConfig:
    deployment = definition["deployment"]
    tenants = [workload.tenant_config(n) for n in workload.tenant_names()]
    return SimConfig.from_options(
        {**deployment, "seed": definition["seed"]},
        tenants,
        policy=ComponentSpec(policy["name"], policy["params"]),
        router=ComponentSpec(definition["router"]["name"], definition["router"]["params"]),
        predictor=_spec(definition["predictor"]),
        admission=_spec(deployment.get("admission")),
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
        elif key == "warnings":  # sentences; one text column, as CSV holds no lists
            flat[key] = "; ".join(value) or None
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
    from fairserve.workload import transform as tf

    base = _base_workload(json.dumps(definition["workload"], sort_keys=True), definition["seed"])
    # Every request arrives within a millisecond: the cluster is saturated until the queue empties.
    wl = tf.scale_time(base, 1e-3 / max(base.duration_s, 1e-9))
    fifo = {"name": "fifo", "params": {}, "label": "fifo"}
    # Capacity is what the engines do when every request is let in: no admission.
    config = dataclasses.replace(_sim_config(definition, wl, fifo), admission=None)
    rec = simulate(wl.requests(), config).records
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
