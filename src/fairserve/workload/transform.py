"""Transforms: every function takes a :class:`Workload` and returns a new one.

* :func:`window` - the requests arriving in ``[start_s, end_s)``.
* :func:`scale_time` / :func:`scale_to_rate` / :func:`scale_to_load` - compress
  or stretch time (lengths unchanged) to reach a rate, or an offered load of a
  cluster given its token capacity.
* :func:`merge` - several workloads as tenants of one (e.g. Azure code + conv).
* :func:`concat` - several workloads interleaved, tenant names kept.
* :func:`tenants_by_column`, :func:`tenants_by_hash` - tenant assignment.
* :func:`sample` - a seeded random subset (rows keep their order).
* :func:`with_tenant_configs` - attach weights, priorities and SLOs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from fairserve.core.model import Tenant
from fairserve.workload.base import TraceError, Workload, encode_strings
from fairserve.workload.stats import _rate


def window(
    wl: Workload, start_s: float | None = None, end_s: float | None = None, *, rebase: bool = True
) -> Workload:
    """Requests with ``start_s <= arrival_s < end_s``; with ``rebase`` times start at 0
    (measured from ``start_s``, or from the first arrival when ``start_s`` is unset).
    """
    lo = -math.inf if start_s is None else start_s
    hi = math.inf if end_s is None else end_s
    if not lo < hi:
        raise ValueError(f"window needs start_s < end_s, got {start_s} and {end_s}")
    first, last = np.searchsorted(wl.arrival_s, [lo, hi], side="left")
    out = wl.take(np.arange(first, last))
    if rebase and len(out):
        origin = start_s if start_s is not None else float(out.arrival_s[0])
        out = replace(out, arrival_s=np.maximum(out.arrival_s - origin, 0.0))
    return out


def scale_time(wl: Workload, factor: float) -> Workload:
    """Multiply every arrival time by ``factor`` (< 1 compresses: a higher rate)."""
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"time factor must be a finite number > 0, got {factor}")
    start = float(wl.arrival_s[0]) if len(wl) else 0.0
    return replace(wl, arrival_s=start + (wl.arrival_s - start) * factor)


def scale_to_rate(wl: Workload, rate_per_s: float) -> Workload:
    """Compress or stretch time so that the mean arrival rate is ``rate_per_s``.

    The rate is measured as in :mod:`.stats`: ``(n - 1) / duration_s``.
    """
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise ValueError(f"rate_per_s must be a finite number > 0, got {rate_per_s}")
    current = _rate(wl.arrival_s)
    if current is None:
        raise ValueError("cannot scale the rate of a workload with fewer than 2 distinct arrivals")
    return scale_time(wl, current / rate_per_s)


def offered_tokens_per_s(
    wl: Workload, *, prompt_weight: float = 1.0, output_weight: float = 1.0
) -> float:
    """Token work per second of the workload: weighted prompt + output tokens / duration."""
    if wl.duration_s <= 0:
        raise ValueError("the offered load of a workload with a zero duration is undefined")
    work = prompt_weight * float(wl.prompt_tokens.sum()) + output_weight * float(
        wl.output_tokens.sum()
    )
    return work / wl.duration_s


def scale_to_load(
    wl: Workload,
    load: float,
    capacity_tokens_per_s: float,
    *,
    prompt_weight: float = 1.0,
    output_weight: float = 1.0,
) -> Workload:
    """Scale time so that the offered load is ``load`` times the cluster's capacity.

    ``capacity_tokens_per_s`` is what the cluster can process per second of
    weighted tokens (``prompt_weight * prompt + output_weight * output``), e.g.
    measured with the simulator at saturation; ``load`` 0.8 means 80% busy.
    """
    if not (load > 0 and capacity_tokens_per_s > 0):
        raise ValueError(f"need load > 0 and capacity > 0, got {load}, {capacity_tokens_per_s}")
    offered = offered_tokens_per_s(wl, prompt_weight=prompt_weight, output_weight=output_weight)
    return scale_time(wl, offered / (load * capacity_tokens_per_s))


def _object_column(wl: Workload, name: str) -> np.ndarray:
    column = getattr(wl, name)
    if column is not None:
        return np.asarray(column, dtype=object)
    return np.full(len(wl), None, dtype=object)


def concat(parts: Sequence[Workload], *, meta: Mapping[str, Any] | None = None) -> Workload:
    """Interleave workloads by arrival; tenant names and configs are kept.

    Optional columns missing in some parts are filled (``None``, turn 0, not
    failed). Parts with prefix hashes must agree on ``prefix_block_tokens``.
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        raise ValueError("nothing to merge: every part is empty")
    if len(parts) == 1 and meta is None:
        return parts[0]
    blocks = {p.prefix_block_tokens for p in parts if p.prefix_hashes is not None}
    if len(blocks) > 1:
        raise TraceError(f"cannot merge traces with different prefix block sizes {sorted(blocks)}")
    tenants = np.concatenate(
        [np.asarray(p.tenant_table, dtype=object)[p.tenant_codes] for p in parts]
    )
    configs: dict[str, Tenant] = {}
    for p in parts:
        configs.update(p.tenants)

    def has(name: str) -> bool:
        return any(getattr(p, name) is not None for p in parts)

    models: np.ndarray | None = None
    if any(p.model_codes is not None for p in parts):
        models = np.concatenate(
            [
                np.asarray(p.model_table, dtype=object)[p.model_codes]
                if p.model_codes is not None
                else np.full(len(p), "unknown", dtype=object)
                for p in parts
            ]
        )
    t_codes, t_table = encode_strings(tenants)
    return Workload.from_arrays(
        np.concatenate([p.arrival_s for p in parts]),
        np.concatenate([p.prompt_tokens for p in parts]),
        np.concatenate([p.output_tokens for p in parts]),
        tenant_codes=t_codes,
        tenant_table=t_table,
        failed=np.concatenate(
            [p.failed if p.failed is not None else np.zeros(len(p), bool) for p in parts]
        )
        if has("failed")
        else None,
        turn=np.concatenate(
            [p.turn if p.turn is not None else np.zeros(len(p), np.int64) for p in parts]
        )
        if has("turn")
        else None,
        conversation_id=np.concatenate([_object_column(p, "conversation_id") for p in parts])
        if has("conversation_id")
        else None,
        prefix_hashes=np.concatenate([_object_column(p, "prefix_hashes") for p in parts])
        if has("prefix_hashes")
        else None,
        prefix_block_tokens=blocks.pop() if blocks else parts[0].prefix_block_tokens,
        text=np.concatenate([_object_column(p, "text") for p in parts]) if has("text") else None,
        response_text=np.concatenate([_object_column(p, "response_text") for p in parts])
        if has("response_text")
        else None,
        model=models,
        tenants=configs,
        skipped_rows=sum(p.skipped_rows for p in parts),
        meta=dict(meta or {"source": "+".join(str(p.meta.get("source", "?")) for p in parts)}),
    )


def merge(
    named: Mapping[str, Workload] | Sequence[tuple[str, Workload]], *, align_start: bool = True
) -> Workload:
    """Merge workloads as tenants: every row of ``named[name]`` becomes tenant ``name``.

    A part that already has several tenants keeps them as ``name/tenant``.
    With ``align_start`` each part's first arrival is moved to 0, so traces
    recorded at different times overlap (e.g. Azure code + conv as two tenants).
    """
    items = list(named.items()) if isinstance(named, Mapping) else list(named)
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"tenant names must be unique, got {names}")
    parts = []
    for name, wl in items:
        if len(wl) == 0:
            continue
        if align_start:
            wl = replace(wl, arrival_s=wl.arrival_s - wl.arrival_s[0])
        used = wl.tenant_names()
        if len(used) <= 1:
            table: tuple[str, ...] = tuple(name for _ in wl.tenant_table)
        else:
            table = tuple(f"{name}/{t}" for t in wl.tenant_table)
        configs = {
            table[wl.tenant_table.index(t)]: _renamed(c, table[wl.tenant_table.index(t)])
            for t, c in wl.tenants.items()
            if t in wl.tenant_table
        }
        parts.append(replace(wl, tenant_table=table, tenants=configs))
    return concat(parts, meta={"source": "merge(" + ", ".join(names) + ")", "format": "merged"})


def _renamed(tenant: Tenant, name: str) -> Tenant:
    return Tenant(name, tenant.weight, tenant.priority, tenant.slo)


def tenants_by_column(wl: Workload, column: str) -> Workload:
    """Make tenants out of a column: ``model``, ``conversation_id`` or ``failed``."""
    if column == "model":
        if wl.model_codes is None:
            raise TraceError("the workload has no 'model' column to take tenants from")
        return replace(wl, tenant_codes=wl.model_codes.copy(), tenant_table=wl.model_table)
    if column in ("conversation_id", "failed"):
        values = getattr(wl, column)
        if values is None:
            raise TraceError(f"the workload has no {column!r} column to take tenants from")
        codes, table = encode_strings([str(v) for v in values.tolist()])
        return replace(wl, tenant_codes=codes, tenant_table=table)
    raise ValueError(
        f"tenants by column: expected 'model', 'conversation_id' or 'failed', got {column!r}"
    )


def stable_hash(value: str) -> int:
    """A hash that is the same in every process (``hash()`` of str is salted)."""
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")


def tenants_by_hash(
    wl: Workload,
    tenants: Sequence[str] | Mapping[str, float],
    *,
    key: str = "row",
) -> Workload:
    """Assign tenants by a stable hash of ``key``, in proportion to shares.

    ``key``: ``"row"`` (each request on its own), ``"conversation_id"`` (all turns
    of a conversation go to one tenant) or ``"tenant"`` (regroup existing
    tenants, e.g. ServeGen clients, into fewer tenants).
    ``tenants``: names (equal shares) or ``{name: share}``.
    """
    shares = dict(tenants) if isinstance(tenants, Mapping) else dict.fromkeys(tenants, 1.0)
    if not shares or any(not s > 0 for s in shares.values()):
        raise ValueError(f"tenants by hash need names with shares > 0, got {shares}")
    names = list(shares)
    cdf = np.cumsum([shares[n] for n in names])
    cdf = cdf / cdf[-1]
    if key == "row":
        keys = [str(i) for i in range(len(wl))]
    elif key == "conversation_id":
        if wl.conversation_id is None:
            raise TraceError("tenants by hash of 'conversation_id': the workload has none")
        keys = [str(v) for v in wl.conversation_id.tolist()]
    elif key == "tenant":
        keys = [wl.tenant_table[c] for c in wl.tenant_codes.tolist()]
    else:
        raise ValueError(f"hash key must be 'row', 'conversation_id' or 'tenant', got {key!r}")
    cache: dict[str, int] = {}
    codes = np.empty(len(wl), dtype=np.int32)
    for i, k in enumerate(keys):
        code = cache.get(k)
        if code is None:
            unit = stable_hash(k) / 2.0**64
            code = cache[k] = min(int(np.searchsorted(cdf, unit, side="right")), len(names) - 1)
        codes[i] = code
    return replace(wl, tenant_codes=codes, tenant_table=tuple(names))


def sample(
    wl: Workload, *, fraction: float | None = None, n: int | None = None, seed: int = 0
) -> Workload:
    """A seeded uniform random subset: ``fraction`` of the rows or exactly ``n``."""
    if (fraction is None) == (n is None):
        raise ValueError("sample needs exactly one of fraction= or n=")
    rng = np.random.default_rng(seed)
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        keep = rng.random(len(wl)) < fraction
        return wl.take(keep)
    assert n is not None
    if not 0 <= n <= len(wl):
        raise ValueError(f"n must be in [0, {len(wl)}], got {n}")
    return wl.take(np.sort(rng.choice(len(wl), size=n, replace=False)))


def with_tenant_configs(wl: Workload, tenants: Mapping[str, Tenant] | Sequence[Tenant]) -> Workload:
    """Attach tenant configs (weight, priority, SLO); names must exist in the workload."""
    configs = dict(tenants) if isinstance(tenants, Mapping) else {t.name: t for t in tenants}
    unknown = sorted(set(configs) - set(wl.tenant_table))
    if unknown:
        raise TraceError(
            f"tenant config for {unknown} but the workload's tenants are {list(wl.tenant_names())}"
        )
    return replace(wl, tenants={**wl.tenants, **configs})
