"""Bounded-memory reading: a CSV trace straight into the Request stream, chunk by chunk.

:func:`stream_trace` never holds more than one chunk (about 32 MiB of CSV) of
columns, so a trace of any length can be replayed. It needs the file sorted
by time (BurstGPT and Azure are) and supports the CSV formats (``burstgpt``,
``azure``, ``csv``); for other formats it reads the whole file with
:func:`~fairserve.workload.readers.load_trace`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fairserve.core.model import Request
from fairserve.workload.base import TraceError, Workload
from fairserve.workload.readers import _table, azure, burstgpt, detect_format, generic, load_trace


class TraceStream:
    """An iterator of :class:`Request` with running counts.

    ``skipped_rows`` (with ``skip_bad_rows``) and ``failed_rows`` (BurstGPT and
    Azure rows with 0 output tokens, kept as requests that fail) grow as chunks are read.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fmt: str | None = None,
        skip_bad_rows: bool = False,
        batch_bytes: int = 32 << 20,
        **options: Any,
    ) -> None:
        self.path = Path(path)
        self.fmt = fmt or detect_format(self.path)
        self.skipped_rows = 0
        self.failed_rows = 0
        self._skip = skip_bad_rows
        self._batch_bytes = batch_bytes
        self._options = options
        self._iter: Iterator[Request] = itertools.chain.from_iterable(self._batches())

    def __iter__(self) -> Iterator[Request]:
        # The generator itself, so a for-loop pays no Python-level __next__ per
        # request (about 0.15 us each, 1.5 s over 10 M rows).
        return self._iter

    def __next__(self) -> Request:
        return next(self._iter)

    def _chunks(self) -> Iterator[Workload]:
        if self.fmt == "burstgpt":
            columns = burstgpt.columns_for(self._options.get("tenant_by"))
        elif self.fmt == "azure":
            columns = azure.COLUMNS
        elif self.fmt == "csv":
            yield generic.read_generic(self.path, "csv", skip_bad_rows=self._skip, **self._options)
            return
        else:
            yield load_trace(self.path, fmt=self.fmt, skip_bad_rows=self._skip, **self._options)
            return
        start_s: float | None = None
        for table in _table.stream_csv_tables(
            self.path, columns, skip_bad_rows=self._skip, batch_bytes=self._batch_bytes
        ):
            self.skipped_rows += table.skipped_rows
            if not table.rows:
                continue
            if self.fmt == "burstgpt":
                chunk = burstgpt.from_table(table, self.path, **self._options)
            else:
                if start_s is None:
                    start_s = float(table.columns["timestamp"].min())
                chunk = azure.from_table(table, self.path, start_s=start_s, **self._options)
            yield chunk

    def _batches(self) -> Iterator[Iterator[Request]]:
        next_id = 0
        last_s = float("-inf")
        for chunk in self._chunks():
            if not len(chunk):
                continue
            if chunk.arrival_s[0] < last_s:
                raise TraceError(
                    f"{self.path}: streaming needs rows sorted by time, but a chunk starts at "
                    f"{chunk.arrival_s[0]} s after {last_s} s; use load_trace() instead"
                )
            last_s = float(chunk.arrival_s[-1])
            self.skipped_rows += chunk.skipped_rows if self.fmt not in ("burstgpt", "azure") else 0
            self.failed_rows += chunk.n_failed
            yield from chunk.request_batches(start_id=next_id)
            next_id += len(chunk)


def stream_trace(
    path: str | Path, *, fmt: str | None = None, skip_bad_rows: bool = False, **options: Any
) -> TraceStream:
    """Requests of a trace file in arrival order, reading it in bounded memory.

    Options are those of the format's reader (e.g. ``tenant_by="model"``).
    """
    return TraceStream(path, fmt=fmt, skip_bad_rows=skip_bad_rows, **options)
