"""The YAML workload spec: generated tenants and traces, merged, then transformed.

A spec is accepted wherever a trace is (:func:`fairserve.workload.load`). See
docs/workloads.md for the full reference and examples/workloads/ for examples::

    seed: 7
    duration_s: 600
    sources:
      - tenant: chat
        weight: 2
        slo: {name: interactive, ttft_s: 1.0}
        arrival: {process: gamma, rate_per_s: 3, cv: 1.4}
        prompt: {dist: lognormal, mean_tokens: 400, sigma: 1.0}
        output: {dist: zipf, a: 1.1, max_tokens: 1024}
        conversation: {turns_mean: 3, think_time_s: 20, shared_prefix_tokens: 512}
      - trace: ../../shared/traces/azure-llm-2023/AzureLLMInferenceTrace_code.csv
        tenant: code
    transforms:
      - {op: scale_to_rate, rate_per_s: 10}

Paths are relative to the spec file. Errors name the offending key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fairserve.core.model import SLO
from fairserve.store.specs import load_yaml, validate
from fairserve.workload import generate as gen
from fairserve.workload import transform as tf
from fairserve.workload.base import TraceError, Workload
from fairserve.workload.failures import FailureModel, local_rate_per_s


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- arrivals
class Poisson(_Model):
    """Poisson arrivals."""

    process: Literal["poisson"]
    rate_per_s: float = Field(gt=0)


class Gamma(_Model):
    """Gamma inter-arrival gaps with a coefficient of variation."""

    process: Literal["gamma"]
    rate_per_s: float = Field(gt=0)
    cv: float = Field(ge=0)


class OnOff(_Model):
    """Bursts: Poisson while on, silent while off (exponential periods)."""

    process: Literal["onoff"]
    rate_on_per_s: float = Field(gt=0)
    mean_on_s: float = Field(gt=0)
    mean_off_s: float = Field(ge=0)


class Diurnal(_Model):
    """A daily sine-shaped rate curve."""

    process: Literal["diurnal"]
    mean_rate_per_s: float = Field(gt=0)
    amplitude: float = Field(default=0.5, ge=0, le=1)
    period_s: float = Field(default=86_400.0, gt=0)
    peak_s: float = 14 * 3600.0


class Replay(_Model):
    """The arrival times of a trace (lengths come from ``prompt``/``output``)."""

    process: Literal["replay"]
    trace: str
    format: str | None = None
    speedup: float = Field(default=1.0, gt=0)


Arrival = Annotated[Poisson | Gamma | OnOff | Diurnal | Replay, Field(discriminator="process")]


# ---------------------------------------------------------------- lengths
class Lognormal(_Model):
    """Lognormal lengths with a mean (before rounding/capping) and log-space sigma."""

    dist: Literal["lognormal"]
    mean_tokens: float = Field(ge=1)
    sigma: float = Field(default=1.0, ge=0)
    max_tokens: int = Field(default=8192, ge=1)


class Zipf(_Model):
    """Bounded Zipf lengths on 1..max_tokens."""

    dist: Literal["zipf"]
    a: float = Field(default=1.1, gt=0)
    max_tokens: int = Field(default=1024, ge=1)


class Empirical(_Model):
    """Lengths resampled from a trace's ``prompt_tokens`` or ``output_tokens``."""

    dist: Literal["empirical"]
    trace: str
    format: str | None = None
    column: Literal["prompt_tokens", "output_tokens"] | None = None
    max_tokens: int | None = Field(default=None, ge=1)


class Constant(_Model):
    """The same length for every request."""

    dist: Literal["constant"]
    tokens: int = Field(ge=1)


Length = Annotated[Lognormal | Zipf | Empirical | Constant, Field(discriminator="dist")]


class SLOSpec(_Model):
    """Latency objectives of a tenant's class."""

    name: str = "default"
    ttft_s: float | None = Field(default=None, gt=0)
    tpot_s: float | None = Field(default=None, gt=0)
    e2e_s: float | None = Field(default=None, gt=0)


class ConversationSpec(_Model):
    """Multi-turn conversations (see :class:`~fairserve.workload.generate.ConversationShape`)."""

    turns_mean: float = Field(default=3.0, ge=1)
    max_turns: int = Field(default=64, ge=1)
    think_time_s: float = Field(default=30.0, ge=0)
    shared_prefix_tokens: int = Field(default=0, ge=0)


class TenantConfig(_Model):
    """Scheduler-facing config of a tenant."""

    weight: float = Field(default=1.0, gt=0)
    priority: int = 0
    slo: SLOSpec | None = None


class Source(_Model):
    """One part of the workload: a generated tenant or a trace."""

    tenant: str | None = None
    weight: float = Field(default=1.0, gt=0)
    priority: int = 0
    slo: SLOSpec | None = None
    # generated
    arrival: Arrival | None = None
    prompt: Length | None = None
    output: Length | None = None
    conversation: ConversationSpec | None = None
    n_requests: int | None = Field(default=None, ge=0)
    duration_s: float | None = Field(default=None, gt=0)
    block_tokens: int = Field(default=16, ge=1)
    max_prompt_tokens: int = Field(default=1 << 20, ge=1)
    # trace
    trace: str | None = None
    format: str | None = None
    skip_bad_rows: bool = False
    options: dict[str, Any] = Field(default_factory=dict)
    transforms: list[Transform] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        generated = self.arrival is not None
        if generated == (self.trace is not None):
            raise ValueError("a source needs exactly one of 'arrival' (generated) or 'trace'")
        if generated:
            if self.tenant is None:
                raise ValueError("a generated source needs 'tenant' (its name)")
            if self.prompt is None or self.output is None:
                raise ValueError(
                    "a generated source needs 'prompt' and 'output' length distributions"
                )
        elif self.prompt or self.output or self.conversation or self.n_requests:
            raise ValueError(
                "'prompt', 'output', 'conversation', 'n_requests' apply to generated sources"
            )
        return self


# ---------------------------------------------------------------- transforms
class Window(_Model):
    """Keep arrivals in [start_s, end_s)."""

    op: Literal["window"]
    start_s: float | None = None
    end_s: float | None = None
    rebase: bool = True


class ScaleTime(_Model):
    """Multiply arrival times by a factor."""

    op: Literal["scale_time"]
    factor: float = Field(gt=0)


class ScaleToRate(_Model):
    """Scale time to a mean arrival rate."""

    op: Literal["scale_to_rate"]
    rate_per_s: float = Field(gt=0)


class ScaleToLoad(_Model):
    """Scale time to an offered load of a cluster with a token capacity."""

    op: Literal["scale_to_load"]
    load: float = Field(gt=0)
    capacity_tokens_per_s: float = Field(gt=0)
    prompt_weight: float = Field(default=1.0, ge=0)
    output_weight: float = Field(default=1.0, ge=0)


class Sample(_Model):
    """A seeded random subset."""

    op: Literal["sample"]
    fraction: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=0)
    seed: int | None = None


class TenantsByColumn(_Model):
    """Tenants from a column (model, conversation_id, failed)."""

    op: Literal["tenants_by_column"]
    column: Literal["model", "conversation_id", "failed"]


class TenantsByHash(_Model):
    """Tenants by a stable hash of the row, conversation or existing tenant."""

    op: Literal["tenants_by_hash"]
    tenants: list[str] | dict[str, float]
    key: Literal["row", "conversation_id", "tenant"] = "row"


class DropFailed(_Model):
    """Remove rows flagged failed."""

    op: Literal["drop_failed"]


class Failures(_Model):
    """Draw failed requests (on top of any the trace records): a constant ``share``, or
    rising with the local arrival rate (``slope_per_rps``, log-odds per req/s; ``share``
    is then the probability at the workload's mean rate), or a fitted model
    (``intercept`` + ``slope_per_rps``, as ``fairserve trace stats`` prints them)."""

    op: Literal["failures"]
    share: float | None = Field(default=None, ge=0, lt=1)
    intercept: float | None = None
    slope_per_rps: float = 0.0
    window_s: float = Field(default=60.0, gt=0)
    seed: int | None = None

    @model_validator(mode="after")
    def _one_level(self) -> Failures:
        if (self.share is None) == (self.intercept is None):
            raise ValueError("give exactly one of 'share' and 'intercept'")
        return self


Transform = Annotated[
    Window
    | ScaleTime
    | ScaleToRate
    | ScaleToLoad
    | Sample
    | TenantsByColumn
    | TenantsByHash
    | DropFailed
    | Failures,
    Field(discriminator="op"),
]


class WorkloadSpec(_Model):
    """A whole workload: sources merged by arrival time, then transforms in order,
    then the ``tenants`` configs (so they may name tenants a transform created)."""

    seed: int = 0
    duration_s: float | None = Field(default=None, gt=0)
    sources: list[Source] = Field(min_length=1)
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    transforms: list[Transform] = Field(default_factory=list)


Source.model_rebuild()


# ---------------------------------------------------------------- building
def _slo(spec: SLOSpec | None) -> SLO:
    return SLO() if spec is None else SLO(spec.name, spec.ttft_s, spec.tpot_s, spec.e2e_s)


def _resolve(base: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else base / path


def _sampler(spec: Any, base: Path, role: str) -> gen.LengthSampler:
    if isinstance(spec, Lognormal):
        return lambda n, rng: gen.lognormal_lengths(
            n, spec.mean_tokens, spec.sigma, rng, max_tokens=spec.max_tokens
        )
    if isinstance(spec, Zipf):
        return lambda n, rng: gen.zipf_lengths(n, spec.a, rng, max_tokens=spec.max_tokens)
    if isinstance(spec, Constant):
        return lambda n, rng: np.full(n, spec.tokens, dtype=np.int64)
    assert isinstance(spec, Empirical)
    from fairserve.workload.readers import load_trace

    wl = load_trace(_resolve(base, spec.trace), fmt=spec.format).drop_failed()
    values = getattr(wl, spec.column or f"{role}_tokens")
    if spec.max_tokens is not None:
        values = np.minimum(values, spec.max_tokens)
    return lambda n, rng: gen.empirical_lengths(n, values, rng)


def _arrivals(
    src: Source, spec_duration_s: float | None, base: Path, rng: np.random.Generator
) -> np.ndarray:
    arrival = src.arrival
    duration = src.duration_s or spec_duration_s
    n = src.n_requests
    if isinstance(arrival, Replay):
        from fairserve.workload.readers import load_trace

        times = gen.replay_arrivals(
            load_trace(_resolve(base, arrival.trace), fmt=arrival.format).arrival_s,
            speedup=arrival.speedup,
        )
        return _cut(times, n, duration)
    if isinstance(arrival, Diurnal):
        if duration is None:
            raise ValueError("a diurnal process needs 'duration_s'")
        return _cut(
            gen.diurnal_arrivals(
                duration,
                arrival.mean_rate_per_s,
                rng,
                amplitude=arrival.amplitude,
                period_s=arrival.period_s,
                peak_s=arrival.peak_s,
            ),
            n,
            None,
        )
    if n is None and duration is None:
        raise ValueError("give 'n_requests' or 'duration_s' (on the source or the spec)")
    if isinstance(arrival, Poisson):
        rate = arrival.rate_per_s

        def draw(k: int) -> np.ndarray:
            return gen.poisson_arrivals(k, rate, rng)
    elif isinstance(arrival, Gamma):
        rate, cv = arrival.rate_per_s, arrival.cv

        def draw(k: int) -> np.ndarray:
            return gen.gamma_arrivals(k, rate, cv, rng)
    else:
        assert isinstance(arrival, OnOff)
        on = arrival
        rate = on.rate_on_per_s * on.mean_on_s / (on.mean_on_s + on.mean_off_s)

        def draw(k: int) -> np.ndarray:
            return gen.onoff_arrivals(k, on.rate_on_per_s, on.mean_on_s, on.mean_off_s, rng)

    if n is not None:
        return _cut(draw(n), None, duration)
    assert duration is not None
    # Enough arrivals to cover the horizon with overwhelming probability; the
    # rare shortfall is topped up by drawing again with more.
    k = int(rate * duration * 1.2 + 10 * math.sqrt(rate * duration) + 16)
    while True:
        times = draw(k)
        if times.size and times[-1] >= duration:
            return times[times < duration]
        k *= 2


def _cut(times: np.ndarray, n: int | None, duration: float | None) -> np.ndarray:
    if duration is not None:
        times = times[times < duration]
    if n is not None:
        times = times[:n]
    return times


def build(spec: WorkloadSpec, base_dir: Path = Path("."), *, seed: int | None = None) -> Workload:
    """Build the workload a spec describes (``seed`` overrides ``spec.seed``)."""
    from fairserve.workload.readers import load_trace

    root = np.random.SeedSequence(spec.seed if seed is None else seed)
    streams = root.spawn(len(spec.sources) + 1)
    parts: list[Workload] = []
    for index, (src, stream) in enumerate(zip(spec.sources, streams, strict=False)):
        where = f"sources[{index}]"
        rng = np.random.default_rng(stream)
        try:
            if src.arrival is not None:
                assert src.tenant is not None and src.prompt is not None and src.output is not None
                mix = gen.TenantMix(src.tenant, 1.0, src.weight, src.priority, _slo(src.slo))
                starts = _arrivals(src, spec.duration_s, base_dir, rng)
                shape = (
                    None
                    if src.conversation is None
                    else gen.ConversationShape(**src.conversation.model_dump())
                )
                wl = gen.tenant_workload(
                    mix,
                    starts,
                    _sampler(src.prompt, base_dir, "prompt"),
                    _sampler(src.output, base_dir, "output"),
                    rng,
                    conversation=shape,
                    block_tokens=src.block_tokens,
                    max_prompt_tokens=src.max_prompt_tokens,
                    tenant_key=index,
                )
                horizon = src.duration_s or spec.duration_s
                if horizon is not None and len(wl):
                    # Later turns of conversations started near the end would
                    # run past the horizon the spec asked for.
                    wl = tf.window(wl, None, horizon, rebase=False)
            else:
                assert src.trace is not None
                wl = load_trace(
                    _resolve(base_dir, src.trace),
                    fmt=src.format,
                    skip_bad_rows=src.skip_bad_rows,
                    **src.options,
                )
                if src.tenant is not None:
                    wl = tf.merge({src.tenant: wl}, align_start=False)
                    wl = tf.with_tenant_configs(
                        wl,
                        [
                            gen.TenantMix(
                                src.tenant, 1.0, src.weight, src.priority, _slo(src.slo)
                            ).tenant
                        ],
                    )
            wl = _apply(wl, src.transforms, spec.seed, where)
        except (ValueError, TypeError) as exc:
            raise TraceError(f"{where}: {exc}") from exc
        parts.append(wl)
    merged = (
        tf.concat(parts, meta={"source": str(base_dir), "format": "spec"})
        if len(parts) > 1
        else parts[0]
    )
    merged = _apply(merged, spec.transforms, spec.seed, "transforms")
    if spec.tenants:
        from fairserve.core.model import Tenant

        configs = [
            Tenant(name, c.weight, c.priority, _slo(c.slo)) for name, c in spec.tenants.items()
        ]
        try:
            merged = tf.with_tenant_configs(merged, configs)
        except TraceError as exc:
            raise TraceError(f"tenants: {exc}") from exc
    return merged


def _apply(wl: Workload, transforms: list[Any], seed: int, where: str) -> Workload:
    for i, t in enumerate(transforms):
        try:
            wl = _apply_one(wl, t, seed)
        except (ValueError, TypeError) as exc:
            raise TraceError(f"{where}.transforms[{i}] ({t.op}): {exc}") from exc
    return wl


def _apply_one(wl: Workload, t: Any, seed: int) -> Workload:
    if isinstance(t, Window):
        return tf.window(wl, t.start_s, t.end_s, rebase=t.rebase)
    if isinstance(t, ScaleTime):
        return tf.scale_time(wl, t.factor)
    if isinstance(t, ScaleToRate):
        return tf.scale_to_rate(wl, t.rate_per_s)
    if isinstance(t, ScaleToLoad):
        return tf.scale_to_load(
            wl,
            t.load,
            t.capacity_tokens_per_s,
            prompt_weight=t.prompt_weight,
            output_weight=t.output_weight,
        )
    if isinstance(t, Sample):
        return tf.sample(wl, fraction=t.fraction, n=t.n, seed=seed if t.seed is None else t.seed)
    if isinstance(t, TenantsByColumn):
        return tf.tenants_by_column(wl, t.column)
    if isinstance(t, TenantsByHash):
        return tf.tenants_by_hash(wl, t.tenants, key=t.key)
    if isinstance(t, Failures):
        return _failure_model(wl, t).apply(wl, seed if t.seed is None else t.seed)
    assert isinstance(t, DropFailed)
    return wl.drop_failed()


def _failure_model(wl: Workload, t: Failures) -> FailureModel:
    if t.intercept is not None:
        return FailureModel(t.intercept, t.slope_per_rps, t.window_s)
    assert t.share is not None
    mean_rate = float(np.mean(local_rate_per_s(wl.arrival_s, t.window_s))) if len(wl) else 0.0
    return FailureModel.at_share(t.share, mean_rate, t.slope_per_rps, t.window_s)


def parse_spec(data: Any, origin: str = "<spec>") -> WorkloadSpec:
    """Validate a spec mapping; errors name the key path (``sources.0.arrival.cv``)."""
    return validate(data, WorkloadSpec, origin, "workload spec", TraceError)


def load_spec(path: str | Path, *, seed: int | None = None) -> Workload:
    """Read a YAML spec file and build its workload."""
    path = Path(path)
    spec = load_yaml(path, WorkloadSpec, "workload spec", TraceError)
    wl = build(spec, path.parent, seed=seed)
    return wl.with_columns(meta={**wl.meta, "source": str(path), "format": "spec"})
