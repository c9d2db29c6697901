"""Seeded workload generators: arrival processes, length distributions, tenants.

Every function takes a ``numpy.random.Generator`` (or a ``seed``) and nothing
else random, so the same seed gives the same workload, byte for byte.

Arrival processes (times in seconds, sorted, starting after 0):
  * :func:`poisson_arrivals` - exponential gaps, CV 1.
  * :func:`gamma_arrivals` - Gamma gaps with a given CV (BurstGPT fits CV ~1.4).
  * :func:`onoff_arrivals` - bursts: Poisson at ``rate_on`` during "on" periods,
    silence during "off" periods, both exponentially distributed.
  * :func:`diurnal_arrivals` - a non-homogeneous Poisson process whose rate
    follows a daily sine curve (thinning).
  * :func:`replay_arrivals` - the timestamps of a trace, optionally sped up.

Length distributions (integers in ``[1, max_tokens]``):
  * :func:`lognormal_lengths` - with a given mean and log-space sigma.
  * :func:`zipf_lengths` - bounded Zipf, ``P(k) ∝ k^-a`` on ``1..max_tokens``.
  * :func:`empirical_lengths` - resampled from observed values (any trace).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from fairserve.core.model import SLO, Tenant
from fairserve.workload.base import FloatArray, IntArray, Workload

ArrivalKind = Literal["poisson", "gamma"]
LengthKind = Literal["lognormal", "zipf"]

#: Defaults when a generator is not told a mean (ShareGPT-like magnitudes).
DEFAULT_PROMPT_MEAN_TOKENS = 512.0
DEFAULT_OUTPUT_MEAN_TOKENS = 128.0


@dataclass(frozen=True, slots=True)
class TenantMix:
    """A tenant of a generated workload and its share of the requests.

    ``share`` is relative (shares are normalised); ``weight``, ``priority`` and
    ``slo`` become the tenant's :class:`~fairserve.core.model.Tenant` config.
    """

    name: str
    share: float = 1.0
    weight: float = 1.0
    priority: int = 0
    slo: SLO = field(default_factory=SLO)

    def __post_init__(self) -> None:
        if not self.share > 0 or not math.isfinite(self.share):
            raise ValueError(f"tenant {self.name!r}: share must be > 0, got {self.share!r}")
        Tenant(self.name, self.weight, self.priority, self.slo)  # validates name and weight

    @property
    def tenant(self) -> Tenant:
        """The scheduler-facing tenant config."""
        return Tenant(self.name, self.weight, self.priority, self.slo)


TenantsArg = Sequence[TenantMix | tuple[str, float]] | None


# ---------------------------------------------------------------- arrivals
def _check_rate(rate_per_s: float) -> None:
    if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
        raise ValueError(f"rate_per_s must be a finite number > 0, got {rate_per_s!r}")


def _check_count(n: int) -> None:
    if n < 0:
        raise ValueError(f"n_requests must be >= 0, got {n}")


def poisson_arrivals(n: int, rate_per_s: float, rng: np.random.Generator) -> FloatArray:
    """``n`` arrival times of a Poisson process with ``rate_per_s``."""
    _check_rate(rate_per_s)
    _check_count(n)
    return np.cumsum(rng.exponential(1.0 / rate_per_s, size=n))


def gamma_arrivals(n: int, rate_per_s: float, cv: float, rng: np.random.Generator) -> FloatArray:
    """``n`` arrival times with Gamma gaps of mean ``1/rate_per_s`` and CV ``cv``.

    ``cv`` 1 is Poisson; above 1 is burstier (shape ``1/cv²`` < 1); 0 is a
    constant gap.
    """
    _check_rate(rate_per_s)
    _check_count(n)
    if not (cv >= 0 and math.isfinite(cv)):
        raise ValueError(f"cv must be a finite number >= 0, got {cv!r}")
    if cv == 0:
        return np.arange(1, n + 1, dtype=np.float64) / rate_per_s
    shape = 1.0 / (cv * cv)
    return np.cumsum(rng.gamma(shape, 1.0 / (rate_per_s * shape), size=n))


def onoff_arrivals(
    n: int,
    rate_on_per_s: float,
    mean_on_s: float,
    mean_off_s: float,
    rng: np.random.Generator,
) -> FloatArray:
    """``n`` arrivals in bursts: Poisson at ``rate_on_per_s`` while on, nothing while off.

    On and off periods are exponential with the given means, so the long-run
    rate is ``rate_on_per_s * mean_on_s / (mean_on_s + mean_off_s)``.
    """
    _check_rate(rate_on_per_s)
    _check_count(n)
    if not (mean_on_s > 0 and mean_off_s >= 0):
        raise ValueError(f"need mean_on_s > 0 and mean_off_s >= 0, got {mean_on_s}, {mean_off_s}")
    # Generate the arrivals in "busy time" (on periods glued together), then
    # insert the off periods: an arrival at busy time b falls in on-period j
    # where j is found by searching the cumulative on-period ends.
    busy = poisson_arrivals(n, rate_on_per_s, rng)
    horizon = float(busy[-1]) if n else 0.0
    ons = rng.exponential(mean_on_s, size=max(16, int(horizon / mean_on_s * 1.5) + 16))
    while ons.sum() < horizon:
        ons = np.concatenate([ons, rng.exponential(mean_on_s, size=ons.size)])
    offs = rng.exponential(mean_off_s, size=ons.size) if mean_off_s > 0 else np.zeros(ons.size)
    on_end = np.cumsum(ons)
    period = np.searchsorted(on_end, busy, side="right")
    # Time shift of period j = the sum of the off periods before it.
    shift = np.concatenate([[0.0], np.cumsum(offs)])[period]
    return busy + shift


def diurnal_arrivals(
    duration_s: float,
    mean_rate_per_s: float,
    rng: np.random.Generator,
    *,
    amplitude: float = 0.5,
    period_s: float = 86_400.0,
    peak_s: float = 14 * 3600.0,
) -> FloatArray:
    """Arrivals over ``duration_s`` whose rate follows a daily sine curve.

    ``rate(t) = mean * (1 + amplitude * cos(2π (t - peak_s) / period_s))``,
    sampled by thinning a Poisson process at the peak rate.
    """
    _check_rate(mean_rate_per_s)
    if not 0 <= amplitude <= 1:
        raise ValueError(f"amplitude must be in [0, 1], got {amplitude}")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    peak_rate = mean_rate_per_s * (1 + amplitude)
    count = rng.poisson(peak_rate * duration_s)
    times = np.sort(rng.uniform(0.0, duration_s, size=count))
    rate = mean_rate_per_s * (1 + amplitude * np.cos(2 * np.pi * (times - peak_s) / period_s))
    keep = rng.uniform(0.0, peak_rate, size=count) < rate
    return times[keep]


def replay_arrivals(times_s: npt.ArrayLike, *, speedup: float = 1.0) -> FloatArray:
    """A trace's own arrival times, relative to its first, divided by ``speedup``."""
    if not speedup > 0:
        raise ValueError(f"speedup must be > 0, got {speedup}")
    times = np.sort(np.asarray(times_s, dtype=np.float64))
    if times.size == 0:
        return times
    return (times - times[0]) / speedup


# ---------------------------------------------------------------- lengths
def lognormal_lengths(
    n: int, mean_tokens: float, sigma: float, rng: np.random.Generator, *, max_tokens: int
) -> IntArray:
    """Lognormal lengths with mean ``mean_tokens`` before rounding and capping."""
    if not mean_tokens >= 1:
        raise ValueError(f"mean_tokens must be >= 1, got {mean_tokens}")
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    mu = math.log(mean_tokens) - sigma * sigma / 2
    values = np.rint(rng.lognormal(mu, sigma, size=n))
    return np.clip(values, 1, _check_max(max_tokens)).astype(np.int64)


def zipf_pmf(a: float, max_tokens: int) -> FloatArray:
    """The bounded Zipf probabilities of ``1..max_tokens``: ``P(k) ∝ k^-a``."""
    if not a > 0:
        raise ValueError(f"zipf a must be > 0, got {a}")
    weights = np.arange(1, _check_max(max_tokens) + 1, dtype=np.float64) ** -a
    return weights / weights.sum()


def zipf_lengths(n: int, a: float, rng: np.random.Generator, *, max_tokens: int) -> IntArray:
    """Bounded Zipf lengths (BurstGPT fits a = 1.1 capped at 1024 tokens)."""
    cdf = np.cumsum(zipf_pmf(a, max_tokens))
    # Inverse-CDF sampling: one searchsorted instead of rng.choice's checks.
    picks = np.searchsorted(cdf, rng.uniform(0.0, cdf[-1], size=n), side="right")
    return np.minimum(picks + 1, max_tokens).astype(np.int64)


def empirical_lengths(n: int, values: npt.ArrayLike, rng: np.random.Generator) -> IntArray:
    """``n`` lengths resampled (with replacement) from observed ``values``."""
    pool = np.asarray(values, dtype=np.int64)
    if pool.size == 0:
        raise ValueError("empirical lengths need at least one observed value")
    if int(pool.min()) < 1:
        raise ValueError(f"empirical lengths must be >= 1, got {int(pool.min())}")
    return pool[rng.integers(0, pool.size, size=n)]


def _check_max(max_tokens: int) -> int:
    if max_tokens < 1:
        raise ValueError(f"max tokens must be >= 1, got {max_tokens}")
    return int(max_tokens)


# ---------------------------------------------------------------- tenants
def normalise_tenants(tenants: TenantsArg) -> list[TenantMix]:
    """Tenants from ``(name, share)`` pairs or :class:`TenantMix`; names unique."""
    if not tenants:
        return [TenantMix("default")]
    mixes = [t if isinstance(t, TenantMix) else TenantMix(t[0], float(t[1])) for t in tenants]
    names = [t.name for t in mixes]
    if len(set(names)) != len(names):
        raise ValueError(f"tenant names must be unique, got {names}")
    return mixes


def assign_tenants(n: int, mixes: Sequence[TenantMix], rng: np.random.Generator) -> IntArray:
    """Tenant index of each of ``n`` requests, drawn by share."""
    shares = np.asarray([t.share for t in mixes], dtype=np.float64)
    if len(mixes) == 1:
        return np.zeros(n, dtype=np.int64)
    return rng.choice(len(mixes), size=n, p=shares / shares.sum()).astype(np.int64)


# ---------------------------------------------------------------- synthetic
def synthetic(
    n_requests: int,
    rate_per_s: float,
    *,
    arrival: ArrivalKind = "poisson",
    cv: float = 1.0,
    length: LengthKind = "lognormal",
    prompt_mean_tokens: float | None = None,
    output_mean_tokens: float | None = None,
    sigma: float = 1.0,
    zipf_a: float = 1.1,
    max_prompt_tokens: int = 8192,
    max_output_tokens: int = 2048,
    tenants: TenantsArg = None,
    seed: int = 0,
) -> Workload:
    """A seeded synthetic workload of ``n_requests`` at ``rate_per_s``.

    ``arrival``: ``"poisson"`` or ``"gamma"`` (with ``cv``). ``length``:
    ``"lognormal"`` (with the means and ``sigma``) or ``"zipf"`` (bounded Zipf
    with ``zipf_a`` on ``1..max_*_tokens``; its mean follows from ``a`` and the
    cap, so passing a mean with zipf is an error). ``tenants``: ``(name, share)``
    pairs or :class:`TenantMix` (with weight, priority, SLO); each request is
    drawn to a tenant by share, which for Poisson arrivals is the same as
    independent per-tenant Poisson streams at ``share * rate_per_s``.
    """
    rng = np.random.default_rng(seed)
    if arrival == "poisson":
        if cv != 1.0:
            raise ValueError("cv applies to arrival='gamma'; a Poisson process has CV 1")
        times = poisson_arrivals(n_requests, rate_per_s, rng)
    elif arrival == "gamma":
        times = gamma_arrivals(n_requests, rate_per_s, cv, rng)
    else:
        raise ValueError(f"arrival must be 'poisson' or 'gamma', got {arrival!r}")
    if length == "lognormal":
        prompt = lognormal_lengths(
            n_requests,
            prompt_mean_tokens or DEFAULT_PROMPT_MEAN_TOKENS,
            sigma,
            rng,
            max_tokens=max_prompt_tokens,
        )
        output = lognormal_lengths(
            n_requests,
            output_mean_tokens or DEFAULT_OUTPUT_MEAN_TOKENS,
            sigma,
            rng,
            max_tokens=max_output_tokens,
        )
    elif length == "zipf":
        if prompt_mean_tokens is not None or output_mean_tokens is not None:
            raise ValueError(
                "length='zipf' has no mean parameter (it follows from zipf_a and the "
                "max_*_tokens caps); drop prompt_mean_tokens/output_mean_tokens"
            )
        prompt = zipf_lengths(n_requests, zipf_a, rng, max_tokens=max_prompt_tokens)
        output = zipf_lengths(n_requests, zipf_a, rng, max_tokens=max_output_tokens)
    else:
        raise ValueError(f"length must be 'lognormal' or 'zipf', got {length!r}")
    mixes = normalise_tenants(tenants)
    codes = assign_tenants(n_requests, mixes, rng)
    return Workload.from_arrays(
        times,
        prompt,
        output,
        tenant_codes=codes,
        tenant_table=[t.name for t in mixes],
        tenants={t.name: t.tenant for t in mixes},
        meta={"source": "synthetic", "seed": seed, "arrival": arrival, "length": length},
    )


# ---------------------------------------------------------------- conversations
LengthSampler = Callable[[int, np.random.Generator], IntArray]

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash of integers."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def block_hashes(key: int, first_block: int, last_block: int) -> tuple[int, ...]:
    """Hashes of blocks ``first_block..last_block-1`` of the token stream named ``key``.

    The same (key, block) always gives the same 63-bit hash, so two prompts
    that share a stream share the hashes of their common full blocks.
    """
    if last_block <= first_block:
        return ()
    blocks = np.arange(first_block, last_block, dtype=np.uint64)
    base = _mix64(np.asarray([key], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        mixed = _mix64(blocks * np.uint64(0x9E3779B97F4A7C15) + base)
    return tuple((mixed >> np.uint64(1)).tolist())


@dataclass(frozen=True, slots=True)
class ConversationShape:
    """How a tenant's requests form multi-turn conversations.

    Each arrival of the tenant's process starts a conversation of
    ``1 + Geometric`` turns with mean ``turns_mean`` (at most ``max_turns``).
    Turn k+1 arrives ``Exp(think_time_s)`` after turn k arrived (the generator
    does not know service times, so think time is counted from the arrival).
    Turn k's prompt is the shared system prompt (``shared_prefix_tokens``, the
    same for every conversation of the tenant), all earlier user messages and
    responses, and the new user message. A conversation stops early rather
    than exceed ``max_prompt_tokens``.
    """

    turns_mean: float = 1.0
    max_turns: int = 64
    think_time_s: float = 30.0
    shared_prefix_tokens: int = 0

    def __post_init__(self) -> None:
        if not self.turns_mean >= 1:
            raise ValueError(f"turns_mean must be >= 1, got {self.turns_mean}")
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if not self.think_time_s >= 0:
            raise ValueError(f"think_time_s must be >= 0, got {self.think_time_s}")
        if self.shared_prefix_tokens < 0:
            raise ValueError(f"shared_prefix_tokens must be >= 0, got {self.shared_prefix_tokens}")


def tenant_workload(
    mix: TenantMix,
    starts_s: npt.ArrayLike,
    prompt: LengthSampler,
    output: LengthSampler,
    rng: np.random.Generator,
    *,
    conversation: ConversationShape | None = None,
    block_tokens: int = 16,
    max_prompt_tokens: int = 1 << 20,
    tenant_key: int = 0,
) -> Workload:
    """One tenant's requests: one per arrival, or conversations started at the arrivals.

    ``prompt`` draws the user-message lengths (the whole prompt without
    conversations) and ``output`` the response lengths. With a conversation
    shape the rows carry ``conversation_id``, ``turn`` and ``prefix_hashes``
    (``block_tokens``-token blocks; ``tenant_key`` separates tenants' hashes).
    """
    starts = np.asarray(starts_s, dtype=np.float64)
    n_conv = starts.size
    meta = {"source": f"generated:{mix.name}", "format": "generated"}
    if conversation is None:
        return Workload.from_arrays(
            starts,
            prompt(n_conv, rng),
            output(n_conv, rng),
            mix.name,
            tenants={mix.name: mix.tenant},
            meta=meta,
        )
    shape = conversation
    p_stop = 1.0 / shape.turns_mean
    turns = np.minimum(rng.geometric(p_stop, size=n_conv), shape.max_turns)
    total = int(turns.sum())
    conv = np.repeat(np.arange(n_conv), turns)
    first_row = np.concatenate([[0], np.cumsum(turns)[:-1]]).astype(np.int64)
    turn = np.arange(total) - first_row[conv]
    think = (
        rng.exponential(shape.think_time_s, size=total)
        if shape.think_time_s > 0
        else np.zeros(total)
    )
    think[turn == 0] = 0.0
    arrival = starts[conv] + _group_cumsum(think, first_row, conv)
    user = prompt(total, rng)
    reply = output(total, rng)
    # History before turn k = sum over earlier turns of (user + reply).
    step = user + reply
    history = _group_cumsum(step, first_row, conv) - step
    prompt_tokens = shape.shared_prefix_tokens + history + user
    # Stop a conversation at its first turn over the cap (and drop the rest).
    over = prompt_tokens > max_prompt_tokens
    first_over = np.full(n_conv, np.iinfo(np.int64).max)
    np.minimum.at(first_over, conv[over], turn[over])
    keep = turn < first_over[conv]
    hashes = [
        _prompt_hashes(shape.shared_prefix_tokens, int(p), block_tokens, tenant_key, int(c))
        for p, c in zip(prompt_tokens[keep].tolist(), conv[keep].tolist(), strict=True)
    ]
    conv_ids = np.asarray([f"{mix.name}-{c}" for c in conv[keep].tolist()], dtype=object)
    return Workload.from_arrays(
        arrival[keep],
        prompt_tokens[keep],
        reply[keep],
        mix.name,
        turn=turn[keep],
        conversation_id=conv_ids,
        prefix_hashes=hashes,
        prefix_block_tokens=block_tokens,
        tenants={mix.name: mix.tenant},
        meta={**meta, "conversations": n_conv, "dropped_turns_over_cap": int((~keep).sum())},
    )


def _group_cumsum(values: np.ndarray, first_row: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each group (rows of a group are contiguous)."""
    total = np.cumsum(values)
    before = np.concatenate([[0], total[:-1]])[first_row]
    return total - before[group]


def _prompt_hashes(
    shared: int, prompt: int, block: int, tenant_key: int, conv: int
) -> tuple[int, ...]:
    full = prompt // block
    shared_full = min(shared // block, full)
    # Full blocks only: a partial block grows with the next turn, so its hash
    # would wrongly match a longer block.
    tenant_stream = (tenant_key << 1) | 1
    conv_stream = (tenant_key << 40) + (conv << 1)
    return block_hashes(tenant_stream, 0, shared_full) + block_hashes(
        conv_stream, shared_full, full
    )
