"""The sweep spec: a pydantic model of the YAML file (docs/reports.md has the reference)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fairserve.core.registry import ComponentSpec, parse_list
from fairserve.store.specs import load_yaml, validate

__all__ = [
    "Component",
    "Deployment",
    "LoadSpec",
    "SweepSpec",
    "SweepSpecError",
    "Synthetic",
    "TenantShare",
    "WorkloadEntry",
    "load_sweep_spec",
    "parse_sweep_spec",
]


class SweepSpecError(ValueError):
    """The sweep spec is invalid; the message names the file and the key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Component(_Model):
    """A policy, predictor, router or admission: a component spec and its label in the table.

    Written as a component string (``vtc`` or ``vtc:input_weight=1,output_weight=4``,
    parsed by :meth:`ComponentSpec.parse`) or a mapping
    ``{name: vtc, params: {...}, label: vtc-4x}``.
    """

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        spec = ComponentSpec.parse(data)
        return {
            "name": spec.name,
            "params": dict(spec.params),
            "label": data if spec.params else None,
        }

    @property
    def spec(self) -> ComponentSpec:
        """The component as the registries build it."""
        return ComponentSpec(self.name, self.params)

    @property
    def display(self) -> str:
        """The label, else the name."""
        return self.label or self.name


def _component_list(value: Any) -> Any:
    """A list of components may also be one string: ``fifo,sjf:prompt_weight=1,vtc``."""
    if isinstance(value, str):
        return [str(spec) for spec in parse_list(value)]
    return value


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
    """The simulated cluster; the keys are those of ``fairserve simulate``'s options.

    ``profile`` (a calibrated profile) and the ``admission`` model's path are
    relative to the spec file's folder.
    """

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
    profile: str | None = None
    admission: Component | None = None
    reference: bool = False
    # Off unless set (a cell's id changes only when one is).
    expert_parallel: bool = False
    max_tenant_prefill_tokens: int | None = Field(default=None, ge=1)
    service_quantum_tokens: int | None = Field(default=None, ge=1)
    cpu_kv_cache_gb: float | None = Field(default=None, gt=0)
    cpu_kv_bandwidth_gb_s: float | None = Field(default=None, gt=0)
    remote_kv_cache_gb: float | None = Field(default=None, gt=0)
    remote_kv_bandwidth_gb_s: float | None = Field(default=None, gt=0)
    remote_kv_latency_s: float | None = Field(default=None, ge=0)


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

    @field_validator("policies", "predictors", "routers", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _component_list(value)

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
    return validate(data, SweepSpec, origin, "sweep spec", SweepSpecError)


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec file (YAML)."""
    return load_yaml(path, SweepSpec, "sweep spec", SweepSpecError)
