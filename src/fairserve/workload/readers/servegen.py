"""ServeGen (Alibaba Bailian) per-client statistics -> a sampled workload.

ServeGen does not publish requests but, per client, fitted statistics:

* ``chunk-<client>-trace.csv`` (no header): one row per 600 s window,
  ``window_start, rate, cv, pattern, p1, p2``; ``pattern`` is the fitted
  inter-arrival family (``Gamma`` or ``Weibull``; empty when the rate is 0).
* ``chunk-<client>-dataset.json``: per (6 h) window, histograms of input and
  output token counts as JSON-encoded dicts ``{tokens: probability}``
  (multimodal clients split input into ``text_tokens``, ``image_tokens``, ...).

The sampler walks each client window by window: arrivals follow a renewal
process of the window's family with the window's rate, lengths are drawn from
the histograms of the latest dataset window at or before it (the nearest later
one when there is none before). For Gamma the shape is ``1/cv²`` (which equals
``p1`` in the data); for Weibull the shape is ``p1``. In both cases the scale is
set so that the mean gap is ``1/rate``, because ``p2`` does not reproduce the
window's rate in the published files (it appears to be fitted on another time
unit). The client is the tenant (``client-<id>``).

A client whose ``dataset.json`` is absent, empty, not valid JSON or without a
usable histogram cannot be sampled. In a folder it is skipped: counted in
``meta["clients_skipped"]`` and described in ``meta["skipped_clients"]`` (the
client, why, and its share of the folder's request rate over the sampled
span, from its ``trace.csv``), and ``meta["warnings"]`` says how much of the
load went missing; with ``strict=True``, or named alone, it is an error.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fairserve.workload.base import TraceError, Workload

WINDOW_S = 600.0
_TRACE_NAME = re.compile(r"^chunk-(?P<client>.+)-trace\.csv$")
_HIST_ITEM = re.compile(r"(-?\d+)\s*:\s*([-+0-9.eE]+)")


def is_servegen_trace(path: Path, header: list[str]) -> bool:
    """ServeGen trace CSVs have no header and are named ``chunk-<client>-trace.csv``."""
    return bool(_TRACE_NAME.match(path.name)) and len(header) == 6


@dataclass(frozen=True, slots=True)
class _Window:
    start_s: float
    rate_per_s: float
    cv: float
    pattern: str
    p1: float


@dataclass(frozen=True, slots=True)
class _Histogram:
    values: np.ndarray
    cdf: np.ndarray

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        picks = np.searchsorted(self.cdf, rng.uniform(0.0, self.cdf[-1], size=n), side="right")
        return self.values[np.minimum(picks, self.values.size - 1)]


def _read_windows(path: Path, skip_bad_rows: bool) -> tuple[list[_Window], int]:
    windows: list[_Window] = []
    skipped = 0
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        for row in reader:
            if not row:
                continue
            try:
                windows.append(_parse_window(row))
            except ValueError as exc:
                if skip_bad_rows:
                    skipped += 1
                    continue
                raise TraceError(f"{path}:{reader.line_num}: {exc}") from None
    if not windows:
        raise TraceError(f"{path}: the file has no windows")
    return windows, skipped


def _parse_window(row: list[str]) -> _Window:
    if len(row) != 6:
        raise ValueError(
            f"expected 6 fields (window_start, rate, cv, pattern, p1, p2), got {len(row)}"
        )
    names = ("window_start", "rate", "cv")
    numbers = []
    for name, text in zip(names, row[:3], strict=True):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"column {name!r}: expected a finite number >= 0, got {text!r}"
            ) from None
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"column {name!r}: expected a finite number >= 0, got {text!r}")
        numbers.append(value)
    start, rate, cv = numbers
    pattern = row[3].strip()
    if rate > 0:
        if pattern not in ("Gamma", "Weibull", "Exponential"):
            raise ValueError(
                f"column 'pattern': expected Gamma, Weibull or Exponential, got {pattern!r}"
            )
        try:
            p1 = float(row[4])
        except ValueError:
            raise ValueError(f"column 'p1': expected a number > 0, got {row[4]!r}") from None
        if pattern != "Exponential" and not (math.isfinite(p1) and p1 > 0):
            raise ValueError(f"column 'p1': expected a number > 0, got {row[4]!r}")
        if pattern == "Gamma" and not cv > 0:
            raise ValueError(f"column 'cv': a Gamma window needs cv > 0, got {row[2]!r}")
    else:
        p1 = 0.0
    return _Window(start, rate, cv, pattern, p1)


def _parse_histogram(text: Any, where: str) -> _Histogram | None:
    if not isinstance(text, str):
        raise TraceError(f"{where}: expected a JSON-encoded dict string, got {type(text).__name__}")
    items = _HIST_ITEM.findall(text)
    if not items:
        if text.strip() in ("{}", ""):
            return None
        raise TraceError(f"{where}: expected a dict {{tokens: probability}}, got {text[:60]!r}")
    values = np.asarray([int(k) for k, _ in items], dtype=np.int64)
    probs = np.asarray([float(v) for _, v in items], dtype=np.float64)
    if (probs < 0).any() or not np.isfinite(probs).all() or probs.sum() <= 0:
        raise TraceError(f"{where}: probabilities must be finite, >= 0 and not all 0")
    if (values < 0).any():
        raise TraceError(f"{where}: token counts must be >= 0, got {int(values.min())}")
    return _Histogram(values, np.cumsum(probs))


class _Dataset:
    """Length histograms of one client, parsed lazily per window."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TraceError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(raw, dict) or not raw:
            raise TraceError(f"{path}: expected an object of windows {{start_s: histograms}}")
        try:
            self.starts = sorted((float(k), k) for k in raw)
        except ValueError as exc:
            raise TraceError(f"{path}: window keys must be seconds ({exc})") from None
        self.raw: dict[str, Any] = raw
        self.cache: dict[str, dict[str, _Histogram] | None] = {}

    def _window(self, key: str) -> dict[str, _Histogram] | None:
        if key not in self.cache:
            entry = self.raw[key]
            if not isinstance(entry, dict) or "output_tokens" not in entry:
                raise TraceError(f"{self.path}: window {key}: expected keys input/output_tokens")
            hists = {
                name: _parse_histogram(text, f"{self.path}: window {key}: {name}")
                for name, text in entry.items()
                if name.endswith("_tokens")
            }
            inputs = [h for name, h in hists.items() if name != "output_tokens"]
            usable = hists["output_tokens"] is not None and any(h is not None for h in inputs)
            self.cache[key] = {k: v for k, v in hists.items() if v is not None} if usable else None
        return self.cache[key]

    def at(self, time_s: float) -> dict[str, _Histogram] | None:
        """Histograms of the latest non-empty window at or before ``time_s`` (else the next)."""
        before = [k for s, k in self.starts if s <= time_s]
        after = [k for s, k in self.starts if s > time_s]
        for key in [*reversed(before), *after]:
            found = self._window(key)
            if found is not None:
                return found
        return None


def _gaps(window: _Window, rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    mean = 1.0 / rate
    if window.pattern == "Gamma":
        shape = 1.0 / (window.cv * window.cv)
        return rng.gamma(shape, mean / shape, size=n)
    if window.pattern == "Weibull":
        k = window.p1
        return rng.weibull(k, size=n) * (mean / math.gamma(1.0 + 1.0 / k))
    return rng.exponential(mean, size=n)


def _window_arrivals(window: _Window, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival offsets in ``[0, WINDOW_S)`` of one window's renewal process."""
    expected = rate * WINDOW_S
    k = int(expected * 1.5 + 10 * math.sqrt(expected) + 8)
    times = np.cumsum(_gaps(window, rate, k, rng))
    while times[-1] < WINDOW_S:
        more = np.cumsum(_gaps(window, rate, k, rng)) + times[-1]
        times = np.concatenate([times, more])
    return times[times < WINDOW_S]


@dataclass(frozen=True, slots=True)
class SkippedClient:
    """A client of a folder that could not be sampled, and how much load it carried."""

    client: str
    reason: str
    rate_share: float  # of the folder's mean request rate over the sampled span

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return {"client": self.client, "reason": self.reason, "rate_share": self.rate_share}


def _mean_rate(windows: list[_Window], start_s: float, duration_s: float) -> float:
    """Requests per second a client's windows offer over ``[start_s, start_s + duration_s)``."""
    end_s = start_s + duration_s
    total = 0.0
    for w in windows:
        overlap = min(w.start_s + WINDOW_S, end_s) - max(w.start_s, start_s)
        if overlap > 0:
            total += w.rate_per_s * overlap
    return total / duration_s


def _skipped_warning(skipped: list[SkippedClient], clients: int) -> str:
    share = sum(c.rate_share for c in skipped)
    names = ", ".join(f"{c.client} ({c.rate_share:.1%}: {c.reason})" for c in skipped)
    return (
        f"skipped {len(skipped)} of {clients} ServeGen clients without usable length "
        f"histograms, {share:.1%} of the request rate: {names}"
    )


def _client_files(path: Path) -> list[tuple[str, Path]]:
    if path.is_dir():
        found = []
        for trace in sorted(path.glob("chunk-*-trace.csv")):
            match = _TRACE_NAME.match(trace.name)
            assert match is not None
            found.append((match["client"], trace))
        if not found:
            raise TraceError(f"{path}: no ServeGen chunk-*-trace.csv files in the folder")
        return sorted(found, key=lambda item: _client_order(item[0]))
    match = _TRACE_NAME.match(path.name)
    if match is None:
        raise TraceError(f"{path}: expected a ServeGen folder or a chunk-<client>-trace.csv file")
    return [(match["client"], path)]


def _client_key(client: str) -> int:
    if client.isdigit():
        return int(client)
    return int.from_bytes(hashlib.blake2b(client.encode(), digest_size=4).digest(), "little")


def _client_order(client: str) -> tuple[int, str]:
    return (int(client), "") if client.isdigit() else (1 << 30, client)


def read_servegen(
    path: str | Path,
    *,
    start_s: float = 0.0,
    duration_s: float = 3600.0,
    clients: list[str] | None = None,
    rate_scale: float = 1.0,
    seed: int = 0,
    skip_bad_rows: bool = False,
    strict: bool = False,
) -> Workload:
    """Sample ``duration_s`` seconds of ServeGen traffic starting at ``start_s``.

    ``path`` is a folder of clients (e.g. ``servegen/language/m-small``) or one
    ``chunk-<client>-trace.csv``. ``clients`` restricts to some client ids;
    ``rate_scale`` multiplies every window's rate. Arrivals are relative to
    ``start_s``. Same seed, same workload. ``strict``: a client without usable
    length histograms is an error instead of skipped with a warning.
    """
    path = Path(path)
    if not (duration_s > 0 and start_s >= 0 and rate_scale > 0):
        raise TraceError(f"{path}: need duration_s > 0, start_s >= 0, rate_scale > 0")
    files = _client_files(path)
    if clients is not None:
        wanted = {str(c) for c in clients}
        unknown = wanted - {c for c, _ in files}
        if unknown:
            raise TraceError(f"{path}: unknown ServeGen clients {sorted(unknown)}")
        files = [(c, f) for c, f in files if c in wanted]
    arrivals: list[np.ndarray] = []
    prompts: list[np.ndarray] = []
    outputs: list[np.ndarray] = []
    tenant_codes: list[np.ndarray] = []
    names: list[str] = []
    unusable: list[tuple[str, str, float]] = []  # client, reason, mean rate
    rates: list[float] = []
    skipped_rows = 0
    for client, trace in files:
        windows, bad = _read_windows(trace, skip_bad_rows)
        skipped_rows += bad
        rate = _mean_rate(windows, start_s, duration_s)
        rates.append(rate)
        # One independent stream per client, keyed by the client id, so that
        # restricting ``clients`` does not change the others' requests.
        rng = np.random.default_rng([seed, _client_key(client)])
        try:
            times, prompt, output = _sample_client(
                windows, _dataset(trace, client), start_s, duration_s, rate_scale, rng
            )
        except TraceError as exc:
            if strict or not path.is_dir():
                raise
            unusable.append((client, str(exc).removeprefix(f"{trace.parent}/"), rate))
            continue
        if times.size:
            arrivals.append(times)
            prompts.append(prompt)
            outputs.append(output)
            tenant_codes.append(np.full(times.size, len(names), dtype=np.int32))
        names.append(f"client-{client}")
    total_rate = sum(rates)
    skipped = [
        SkippedClient(c, why, r / total_rate if total_rate > 0 else 0.0) for c, why, r in unusable
    ]
    if not arrivals:
        raise TraceError(
            f"{path}: no requests in [{start_s}, {start_s + duration_s}) s "
            f"({len(skipped)} clients without usable dataset.json skipped)"
        )
    prompt_all = np.concatenate(prompts)
    output_all = np.concatenate(outputs)
    clamped = int((prompt_all < 1).sum() + (output_all < 1).sum())
    return Workload.from_arrays(
        np.concatenate(arrivals),
        np.maximum(prompt_all, 1),
        np.maximum(output_all, 1),
        tenant_codes=np.concatenate(tenant_codes),
        tenant_table=names,
        skipped_rows=skipped_rows,
        meta={
            "source": str(path),
            "format": "servegen",
            "clients": len(names),
            "clients_skipped": len(skipped),
            "skipped_clients": [c.to_dict() for c in skipped],
            "warnings": [_skipped_warning(skipped, len(files))] if skipped else [],
            "start_s": start_s,
            "seed": seed,
            # Histograms include 0-token entries; a request needs >= 1 token.
            "lengths_raised_to_1": clamped,
        },
    )


def _dataset(trace: Path, client: str) -> _Dataset:
    """The client's length histograms; :class:`TraceError` saying why there are none."""
    path = trace.with_name(f"chunk-{client}-dataset.json")
    if not path.exists():
        raise TraceError(f"{trace}: no {path.name} beside it (length histograms)")
    try:
        if path.stat().st_size == 0:
            raise TraceError(f"{path}: the file is empty")
        return _Dataset(path)
    except OSError as exc:
        raise TraceError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def _sample_client(
    windows: list[_Window],
    dataset: _Dataset,
    start_s: float,
    duration_s: float,
    rate_scale: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    end_s = start_s + duration_s
    times: list[np.ndarray] = []
    prompts: list[np.ndarray] = []
    outputs: list[np.ndarray] = []
    for w in windows:
        if w.rate_per_s <= 0 or w.start_s + WINDOW_S <= start_s or w.start_s >= end_s:
            continue
        offsets = w.start_s + _window_arrivals(w, w.rate_per_s * rate_scale, rng)
        offsets = offsets[(offsets >= start_s) & (offsets < end_s)]
        if not offsets.size:
            continue
        hists = dataset.at(w.start_s)
        if hists is None:
            raise TraceError(f"{dataset.path}: no non-empty length histograms for any window")
        n = offsets.size
        prompt = np.zeros(n, dtype=np.int64)
        for name, hist in hists.items():
            if name != "output_tokens":
                prompt += hist.sample(n, rng)  # multimodal: text + image + ... tokens
        times.append(offsets - start_s)
        prompts.append(prompt)
        outputs.append(hists["output_tokens"].sample(n, rng))
    if not times:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros(0), empty, empty
    return np.concatenate(times), np.concatenate(prompts), np.concatenate(outputs)
