"""The columnar workload: many requests as equal-length numpy arrays.

A trace of ten million rows must fit in memory and be iterated quickly, so a
:class:`Workload` keeps one array per field instead of one object per request,
and builds :class:`~fairserve.core.model.Request` objects only when the
simulator asks for them (:meth:`Workload.requests`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from fairserve.core.model import DEFAULT_TENANT, Request, Tenant

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]

#: Rows handed to ``Request`` per batch in :meth:`Workload.requests`; bounds the
#: temporary Python lists to a few MB whatever the workload size.
_ITER_BATCH_ROWS = 65_536


class TraceError(ValueError):
    """A trace or workload spec is malformed.

    The message names the file, the 1-based line (or row) and the column where
    that is known, and says what was expected, e.g.
    ``trace.csv:7: column 'prompt_tokens': expected an integer >= 1, got 'abc'``.
    """


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def encode_strings(
    values: Sequence[str] | np.ndarray,
) -> tuple[npt.NDArray[np.int32], tuple[str, ...]]:
    """Dictionary-encode strings: ``(codes, names)`` with names in first-seen order."""
    names: dict[str, int] = {}
    codes = np.fromiter(
        (names.setdefault(str(v), len(names)) for v in values), dtype=np.int32, count=len(values)
    )
    return codes, tuple(names)


@dataclass(frozen=True, eq=False)
class Workload:
    """Requests as columns of equal length, sorted by arrival time.

    Build one with :meth:`from_arrays` (which validates) or a reader
    (:func:`fairserve.workload.load_trace`); transforms return new workloads.

    Columns:
      * ``arrival_s`` (float64): seconds from the start of the workload, sorted.
      * ``prompt_tokens``, ``output_tokens`` (int64): ``output_tokens`` is 0 only
        on rows flagged ``failed`` (e.g. BurstGPT zero-token responses).
      * ``tenant_codes`` (int32) indexing :meth:`tenant_names`; :attr:`tenant`
        gives the str column and :meth:`tenant_at` one row's name.
      * optional: ``failed`` (bool), ``turn`` (int64), ``conversation_id``,
        ``prefix_hashes`` (tuple of ints per row), ``text``, ``response_text``
        (object arrays), ``model_codes`` indexing ``model_table``.

    ``tenants`` maps tenant names to their :class:`~fairserve.core.model.Tenant`
    (weight, priority, SLO); a tenant without an entry gets the defaults.
    ``skipped_rows`` counts malformed rows a reader skipped on request, and
    ``meta`` carries reader facts (source, records read, truncation, ...).
    """

    arrival_s: FloatArray
    prompt_tokens: IntArray
    output_tokens: IntArray
    tenant_codes: npt.NDArray[np.int32]
    tenant_table: tuple[str, ...] = (DEFAULT_TENANT,)
    failed: BoolArray | None = None
    turn: IntArray | None = None
    conversation_id: ObjArray | None = None
    prefix_hashes: ObjArray | None = None
    prefix_block_tokens: int = 16
    text: ObjArray | None = None
    response_text: ObjArray | None = None
    model_codes: npt.NDArray[np.int32] | None = None
    model_table: tuple[str, ...] = ()
    tenants: Mapping[str, Tenant] = field(default_factory=dict)
    skipped_rows: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_arrays(
        cls,
        arrival_s: npt.ArrayLike,
        prompt_tokens: npt.ArrayLike,
        output_tokens: npt.ArrayLike,
        tenant: Sequence[str] | np.ndarray | str | None = None,
        *,
        failed: npt.ArrayLike | None = None,
        turn: npt.ArrayLike | None = None,
        conversation_id: Sequence[str | None] | np.ndarray | None = None,
        prefix_hashes: Sequence[tuple[int, ...] | None] | np.ndarray | None = None,
        prefix_block_tokens: int = 16,
        text: Sequence[str | None] | np.ndarray | None = None,
        response_text: Sequence[str | None] | np.ndarray | None = None,
        model: Sequence[str] | np.ndarray | str | None = None,
        tenant_codes: npt.ArrayLike | None = None,
        tenant_table: Sequence[str] | None = None,
        model_codes: npt.ArrayLike | None = None,
        model_table: Sequence[str] | None = None,
        tenants: Mapping[str, Tenant] | Sequence[Tenant] | None = None,
        skipped_rows: int = 0,
        meta: Mapping[str, Any] | None = None,
        sort: bool = True,
    ) -> Workload:
        """Validate columns and build a workload.

        ``tenant`` and ``model`` may be one string for every row, or be given
        dictionary-encoded as ``tenant_codes`` indexing ``tenant_table`` (and
        ``model_codes``/``model_table``), which readers of big files use. Rows are sorted
        stably by arrival when ``sort`` (otherwise unsorted input is an error).
        Raises :class:`TraceError` naming the first offending row.
        """
        arr = np.array(arrival_s, dtype=np.float64)  # a copy: columns become read-only
        if arr.ndim != 1:
            raise TraceError(f"column 'arrival_s' must be one-dimensional, got shape {arr.shape}")
        n = arr.shape[0]
        prompt = _as_int_column("prompt_tokens", prompt_tokens, n)
        output = _as_int_column("output_tokens", output_tokens, n)
        fail = None if failed is None else np.asarray(failed, dtype=np.bool_)
        if fail is not None and fail.shape != (n,):
            raise TraceError(f"column 'failed' has {fail.shape[0]} rows, expected {n}")
        t_table: tuple[str, ...]
        if tenant_codes is not None:
            t_codes = np.array(tenant_codes, dtype=np.int32)
            t_table = tuple(tenant_table or ())
            _check_len("tenant_codes", t_codes, n)
        elif tenant is None or isinstance(tenant, str):
            t_codes = np.zeros(n, dtype=np.int32)
            t_table = (tenant or DEFAULT_TENANT,)
        else:
            _check_len("tenant", tenant, n)
            t_codes, t_table = encode_strings(tenant)
            if not t_table:
                t_table = (DEFAULT_TENANT,)
        m_codes: npt.NDArray[np.int32] | None = None
        m_table: tuple[str, ...] = ()
        if model_codes is not None:
            m_codes = np.array(model_codes, dtype=np.int32)
            m_table = tuple(model_table or ())
            _check_len("model_codes", m_codes, n)
        elif isinstance(model, str):
            m_codes, m_table = np.zeros(n, dtype=np.int32), (model,)
        elif model is not None:
            _check_len("model", model, n)
            m_codes, m_table = encode_strings(model)
        if isinstance(tenants, Mapping):
            tenant_map: dict[str, Tenant] = dict(tenants)
        else:
            tenant_map = {t.name: t for t in tenants or ()}
        wl = cls(
            arrival_s=arr,
            prompt_tokens=prompt,
            output_tokens=output,
            tenant_codes=t_codes,
            tenant_table=t_table,
            failed=fail,
            turn=None if turn is None else _as_int_column("turn", turn, n),
            conversation_id=_as_object_column("conversation_id", conversation_id, n),
            prefix_hashes=_as_object_column("prefix_hashes", prefix_hashes, n),
            prefix_block_tokens=prefix_block_tokens,
            text=_as_object_column("text", text, n),
            response_text=_as_object_column("response_text", response_text, n),
            model_codes=m_codes,
            model_table=m_table,
            tenants=tenant_map,
            skipped_rows=skipped_rows,
            meta=dict(meta or {}),
        )
        if sort and n > 1 and bool(np.any(np.diff(arr) < 0)):
            wl = wl.take(np.argsort(arr, kind="stable"))
        wl.validate()
        return wl

    def __post_init__(self) -> None:
        n = self.arrival_s.shape[0]
        for name in ("prompt_tokens", "output_tokens", "tenant_codes"):
            if getattr(self, name).shape != (n,):
                raise TraceError(
                    f"column {name!r} has {getattr(self, name).shape[0]} rows, expected {n}"
                )
        for name in (
            "failed",
            "turn",
            "conversation_id",
            "prefix_hashes",
            "text",
            "response_text",
            "model_codes",
        ):
            column = getattr(self, name)
            if column is not None:
                if column.shape != (n,):
                    raise TraceError(f"column {name!r} has {column.shape[0]} rows, expected {n}")
                _readonly(column)
        for name in ("arrival_s", "prompt_tokens", "output_tokens", "tenant_codes"):
            _readonly(getattr(self, name))
        if self.prefix_block_tokens < 1:
            raise TraceError(f"prefix_block_tokens must be >= 1, got {self.prefix_block_tokens}")

    def validate(self) -> None:
        """Check the invariants; raise :class:`TraceError` naming the first bad row."""
        arr = self.arrival_s
        bad = ~np.isfinite(arr) | (arr < 0)
        _raise_first(bad, "arrival_s", "a finite number of seconds >= 0", arr)
        if len(arr) > 1:
            back = np.flatnonzero(np.diff(arr) < 0)
            if back.size:
                i = int(back[0]) + 1
                raise TraceError(
                    f"row {i}: column 'arrival_s': expected arrivals sorted in time, "
                    f"got {arr[i]!r} after {arr[i - 1]!r}"
                )
        _raise_first(self.prompt_tokens < 1, "prompt_tokens", "an integer >= 1", self.prompt_tokens)
        min_output = self.output_tokens < 1
        if self.failed is not None:
            min_output &= ~self.failed
            _raise_first(
                self.output_tokens < 0, "output_tokens", "an integer >= 0", self.output_tokens
            )
        _raise_first(
            min_output,
            "output_tokens",
            "an integer >= 1 (0 only on rows flagged failed)",
            self.output_tokens,
        )
        if self.turn is not None:
            _raise_first(self.turn < 0, "turn", "an integer >= 0", self.turn)
        for name, codes, table in (
            ("tenant_codes", self.tenant_codes, self.tenant_table),
            ("model_codes", self.model_codes, self.model_table),
        ):
            if (
                codes is not None
                and codes.size
                and (int(codes.min()) < 0 or int(codes.max()) >= len(table))
            ):
                raise TraceError(f"{name}: a code is outside its table of {len(table)} names")

    # ------------------------------------------------------------ accessors
    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival (0 for fewer than 2 rows)."""
        if len(self) < 2:
            return 0.0
        return float(self.arrival_s[-1] - self.arrival_s[0])

    @property
    def tenant(self) -> npt.NDArray[np.str_]:
        """The tenant of each row as a numpy str array (built on each call)."""
        return np.asarray(self.tenant_table, dtype=np.str_)[self.tenant_codes]

    def tenant_names(self) -> tuple[str, ...]:
        """Names of the tenants that have at least one row, in table order."""
        used = np.unique(self.tenant_codes)
        return tuple(self.tenant_table[i] for i in used.tolist())

    def tenant_at(self, row: int) -> str:
        """The tenant name of one row."""
        return self.tenant_table[int(self.tenant_codes[row])]

    @property
    def model(self) -> npt.NDArray[np.str_] | None:
        """The model of each row as a str array, or ``None`` when unknown."""
        if self.model_codes is None:
            return None
        return np.asarray(self.model_table, dtype=np.str_)[self.model_codes]

    @property
    def n_failed(self) -> int:
        """Rows flagged failed (their requests fail once their prompt is served)."""
        return 0 if self.failed is None else int(self.failed.sum())

    def tenant_config(self, name: str) -> Tenant:
        """The tenant's configuration, defaults when the workload has none."""
        found = self.tenants.get(name)
        return found if found is not None else Tenant(name)

    # ------------------------------------------------------------ iteration
    def requests(self, *, start_id: int = 0) -> Iterator[Request]:
        """Yield one :class:`Request` per row, lazily, in arrival order.

        Ids run ``start_id``..``start_id+n-1``. Rows flagged ``failed`` become
        requests with ``fails`` set: a simulator serves their prompt and ends
        them as failed, so they cost what they cost instead of vanishing
        (:meth:`drop_failed` removes them first). Priority and SLO class come
        from the row's tenant config.
        """
        # chain.from_iterable over per-batch map() objects: the per-request path
        # is C only (a generator with ``yield from`` cost ~0.15 us a request more).
        return itertools.chain.from_iterable(self.request_batches(start_id=start_id))

    def request_batches(self, *, start_id: int = 0) -> Iterator[Iterator[Request]]:
        """The requests of :meth:`requests` as lazy batches (one iterator per batch of rows)."""
        # Columns go to the dataclass constructor through map(), positionally,
        # one batch of .tolist() values at a time: no per-row dict or Python-level
        # loop. Per-tenant values are expanded with numpy object fancy-indexing
        # (C speed). Measured ~0.6 µs per request on the 2-core dev machine.
        configs = [self.tenants.get(name) for name in self.tenant_table]
        names = np.asarray(self.tenant_table, dtype=object)
        has_config = any(c is not None for c in configs)
        prios = np.asarray([c.priority if c is not None else 0 for c in configs], dtype=object)
        slos = np.asarray([c.slo.name if c is not None else None for c in configs], dtype=object)
        fails = self.failed if self.failed is not None and self.failed.any() else None
        n = len(self)
        model_codes = self.model_codes if self.model_table else None
        models = np.asarray(self.model_table, dtype=object)
        repeat = itertools.repeat
        next_id = start_id
        for start in range(0, n, _ITER_BATCH_ROWS):
            stop = min(start + _ITER_BATCH_ROWS, n)
            rows = slice(start, stop)
            codes = self.tenant_codes[rows]
            count = stop - start
            yield map(
                Request,
                range(next_id, next_id + count),
                self.arrival_s[rows].tolist(),
                self.prompt_tokens[rows].tolist(),
                self.output_tokens[rows].tolist(),
                names[codes].tolist(),
                repeat(None),
                slos[codes].tolist() if has_config else repeat(None),
                prios[codes].tolist() if has_config else repeat(0),
                repeat(None) if self.prefix_hashes is None else self.prefix_hashes[rows].tolist(),
                repeat(self.prefix_block_tokens),
                repeat(None)
                if self.conversation_id is None
                else self.conversation_id[rows].tolist(),
                repeat(0) if self.turn is None else self.turn[rows].tolist(),
                repeat(None),  # max_tokens: traces record what was produced, not the cap
                repeat(None) if model_codes is None else models[model_codes[rows]].tolist(),
                repeat(None) if self.text is None else self.text[rows].tolist(),
                repeat(False) if fails is None else fails[rows].tolist(),
            )
            next_id += count

    # ------------------------------------------------------------ reshaping
    def take(self, rows: npt.ArrayLike) -> Workload:
        """A new workload of the given rows (indices or a boolean mask), in that order."""
        idx = np.asarray(rows)
        if idx.dtype == np.bool_:
            idx = np.flatnonzero(idx)

        def pick(column: np.ndarray | None) -> Any:
            return None if column is None else column[idx]

        return replace(
            self,
            arrival_s=self.arrival_s[idx],
            prompt_tokens=self.prompt_tokens[idx],
            output_tokens=self.output_tokens[idx],
            tenant_codes=self.tenant_codes[idx],
            failed=pick(self.failed),
            turn=pick(self.turn),
            conversation_id=pick(self.conversation_id),
            prefix_hashes=pick(self.prefix_hashes),
            text=pick(self.text),
            response_text=pick(self.response_text),
            model_codes=pick(self.model_codes),
        )

    def with_columns(self, **changes: Any) -> Workload:
        """A copy with some fields replaced, validated again."""
        wl = replace(self, **changes)
        wl.validate()
        return wl

    def drop_failed(self) -> Workload:
        """The workload without the rows flagged failed."""
        if self.failed is None:
            return self
        wl = self.take(~self.failed)
        return replace(wl, failed=None)

    def __repr__(self) -> str:
        return (
            f"Workload({len(self)} requests, {self.duration_s:.1f} s, "
            f"tenants={list(self.tenant_names())}, source={self.meta.get('source', '?')!r})"
        )


# ---------------------------------------------------------------- helpers
def _check_len(name: str, values: Sequence[Any] | np.ndarray, n: int) -> None:
    if len(values) != n:
        raise TraceError(f"column {name!r} has {len(values)} rows, expected {n}")


def _as_int_column(name: str, values: npt.ArrayLike, n: int) -> IntArray:
    raw = np.asarray(values)
    if raw.shape != (n,):
        raise TraceError(f"column {name!r} has shape {raw.shape}, expected ({n},)")
    if raw.dtype.kind == "f":
        frac = ~np.isfinite(raw) | (raw != np.floor(raw))
        _raise_first(frac, name, "an integer", raw)
    elif raw.dtype.kind not in "iub" and n:
        raise TraceError(f"column {name!r}: expected integers, got dtype {raw.dtype}")
    return raw.astype(np.int64, copy=False) if raw.dtype != np.int64 else raw.copy()


def _as_object_column(
    name: str, values: Sequence[Any] | np.ndarray | None, n: int
) -> ObjArray | None:
    if values is None:
        return None
    _check_len(name, values, n)
    # fromiter keeps tuples (prefix hashes) as single objects instead of letting
    # numpy broadcast them into a second dimension.
    return np.fromiter(values, dtype=object, count=n)


def _raise_first(bad: np.ndarray, column: str, expected: str, values: np.ndarray) -> None:
    hits = np.flatnonzero(bad)
    if hits.size:
        i = int(hits[0])
        value = values[i]
        shown = value.item() if hasattr(value, "item") else value
        if isinstance(shown, float) and math.isfinite(shown) and shown == int(shown):
            shown = int(shown)
        raise TraceError(f"row {i}: column {column!r}: expected {expected}, got {shown!r}")
