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
    )
