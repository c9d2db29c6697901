"""Frozen, validated configuration of the simulated engines and cluster."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Limits of one engine instance, named as in vLLM.

    Defaults are those of a vLLM v1 server on an 80 GB GPU: a token budget
    (``max_num_batched_tokens``) of 8192 with chunked prefill on, 16-token KV
    blocks, 90% of GPU memory, prefix caching on; ``max_num_seqs`` 256 (vLLM
    chooses it by GPU and version, so set it to match the deployment).
    ``num_gpu_blocks`` overrides the KV capacity the cost model computes
    (vLLM's ``num_gpu_blocks_override``); ``max_model_len`` defaults to the
    model's context length. ``max_tenant_prefill_tokens`` (not in vLLM) caps
    the prefill tokens of one tenant's requests in a step; a waiting request
    whose tenant has used its cap waits for the next step.
    ``service_quantum_tokens`` (not in vLLM) bounds how long a request keeps
    its seat while others wait: a decoding request that has produced that
    many tokens since it was (re)scheduled yields (a recompute preemption,
    back into the waiting queue in the queue's own order) when the waiting
    head is blocked and the queue's policy would preempt it before the head
    (its ``pick_victim``), so FCFS never yields.

    KV tiers behind the GPU (not in vLLM's core; its KV offloading connector
    and LMCache do this): ``cpu_kv_cache_gb`` of host memory (10^9 bytes) keeps
    the prefix blocks the GPU evicts, brought back at ``cpu_kv_bandwidth_gb_s``
    (default 25: what a PCIe Gen4 x16 link sustains host-to-device, half a Gen5
    one); ``remote_kv_cache_gb`` behind it keeps what the CPU tier evicts,
    brought back at ``remote_kv_bandwidth_gb_s`` (default 12.5: a 100 Gb/s
    NIC) after ``remote_kv_latency_s`` (default 0.5 ms) per transfer. Unset
    (the default): no tier, an evicted block is gone. docs/simulator.md, "KV
    tiers", has the transfer model.
    """

    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    num_gpu_blocks: int | None = None
    max_model_len: int | None = None
    # Prefill tokens the requests of one tenant may take in one step (None: the whole
    # budget): a tenant's long prompts then cannot fill every step others decode in.
    max_tenant_prefill_tokens: int | None = None
    # Output tokens a request keeps its seat for while others wait (None: as long as it runs).
    service_quantum_tokens: int | None = None
    # Tiers behind the GPU's prefix cache (None: none). Sizes in 10^9 bytes per instance.
    cpu_kv_cache_gb: float | None = None
    cpu_kv_bandwidth_gb_s: float = 25.0
    remote_kv_cache_gb: float | None = None
    remote_kv_bandwidth_gb_s: float = 12.5
    remote_kv_latency_s: float = 0.0005

    def __post_init__(self) -> None:
        checks = (
            ("max_num_batched_tokens", self.max_num_batched_tokens >= 1, "must be >= 1"),
            ("max_num_seqs", self.max_num_seqs >= 1, "must be >= 1"),
            ("block_size", self.block_size >= 1, "must be >= 1"),
            (
                "gpu_memory_utilization",
                0 < self.gpu_memory_utilization <= 1,
                "must be in (0, 1]",
            ),
            (
                "num_gpu_blocks",
                self.num_gpu_blocks is None or self.num_gpu_blocks >= 1,
                "must be >= 1 or unset",
            ),
            (
                "max_model_len",
                self.max_model_len is None or self.max_model_len >= 2,
                "must be >= 2 or unset",
            ),
            (
                "max_tenant_prefill_tokens",
                self.max_tenant_prefill_tokens is None or self.max_tenant_prefill_tokens >= 1,
                "must be >= 1 or unset",
            ),
            (
                "service_quantum_tokens",
                self.service_quantum_tokens is None or self.service_quantum_tokens >= 1,
                "must be >= 1 or unset",
            ),
            *self._tier_checks(),
        )
        for key, ok, what in checks:
            if not ok:
                raise ValueError(f"engine config: {key} {what}, got {getattr(self, key)!r}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            # vLLM refuses this too: every running sequence must get its decode token.
            raise ValueError(
                "engine config: max_num_batched_tokens "
                f"({self.max_num_batched_tokens}) must be >= max_num_seqs ({self.max_num_seqs})"
            )
        if self.remote_kv_cache_gb is not None and self.cpu_kv_cache_gb is None:
            # The remote tier keeps what the CPU tier evicts: there must be one.
            raise ValueError("engine config: remote_kv_cache_gb needs cpu_kv_cache_gb set")
        if self.cpu_kv_cache_gb is not None and not self.enable_prefix_caching:
            raise ValueError("engine config: cpu_kv_cache_gb needs prefix caching on")

    def _tier_checks(self) -> tuple[tuple[str, bool, str], ...]:
        def size_ok(gb: float | None) -> bool:
            return gb is None or (isinstance(gb, int | float) and gb > 0)

        return (
            ("cpu_kv_cache_gb", size_ok(self.cpu_kv_cache_gb), "must be > 0 or unset"),
            ("cpu_kv_bandwidth_gb_s", self.cpu_kv_bandwidth_gb_s > 0, "must be > 0"),
            ("remote_kv_cache_gb", size_ok(self.remote_kv_cache_gb), "must be > 0 or unset"),
            ("remote_kv_bandwidth_gb_s", self.remote_kv_bandwidth_gb_s > 0, "must be > 0"),
            ("remote_kv_latency_s", self.remote_kv_latency_s >= 0, "must be >= 0"),
        )


def engine_config_from(options: Mapping[str, Any]) -> EngineConfig:
    """An ``EngineConfig`` from CLI or spec options (``prefix_caching`` names
    ``enable_prefix_caching``); keys it does not know are ignored."""
    return EngineConfig(
        max_num_batched_tokens=options["max_num_batched_tokens"],
        max_num_seqs=options["max_num_seqs"],
        block_size=options["block_size"],
        gpu_memory_utilization=options["gpu_memory_utilization"],
        enable_prefix_caching=options["prefix_caching"],
        num_gpu_blocks=options["num_gpu_blocks"],
        max_tenant_prefill_tokens=options.get("max_tenant_prefill_tokens"),
        service_quantum_tokens=options.get("service_quantum_tokens"),
        **{key: options[key] for key in TIER_KEYS if options.get(key) is not None},
    )


#: The engine options of the KV tiers (``engine_config_from`` passes those set).
TIER_KEYS = (
    "cpu_kv_cache_gb",
    "cpu_kv_bandwidth_gb_s",
    "remote_kv_cache_gb",
    "remote_kv_bandwidth_gb_s",
    "remote_kv_latency_s",
)
