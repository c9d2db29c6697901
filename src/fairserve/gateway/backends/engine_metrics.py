"""An engine's own /metrics, read with prometheus-client's parser.

vLLM (``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:kv_cache_usage_perc``; ``vllm:gpu_cache_usage_perc`` before vLLM
renamed it) and SGLang (``sglang:num_running_reqs``, ``sglang:num_queue_reqs``,
``sglang:token_usage``) are recognised. Samples are summed over their label
sets (one engine per data-parallel rank), KV usage is the mean.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families


@dataclasses.dataclass(frozen=True)
class EngineFigures:
    """What an engine says about itself: its batch, its queue and its KV cache use (0-1)."""

    running: int
    waiting: int
    kv_usage: float | None = None


@dataclasses.dataclass(frozen=True)
class _Names:
    running: str
    waiting: str
    kv_usage: tuple[str, ...]


FLAVOURS = {
    "vllm": _Names("vllm:num_requests_running", "vllm:num_requests_waiting",
                   ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")),
    "sglang": _Names("sglang:num_running_reqs", "sglang:num_queue_reqs", ("sglang:token_usage",)),
}  # fmt: skip


def _samples(text: str) -> dict[str, list[float]]:
    values: dict[str, list[float]] = defaultdict(list)
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name].append(float(sample.value))
    except (ValueError, TypeError, IndexError):  # not an exposition: nothing usable
        return {}
    return values


def parse_engine_metrics(text: str, flavour: str = "auto") -> EngineFigures | None:
    """The engine's figures from its Prometheus exposition, or None when it has none we know."""
    values = _samples(text)
    flavours = FLAVOURS if flavour == "auto" else {flavour: FLAVOURS[flavour]}
    for names in flavours.values():
        if names.running in values and names.waiting in values:
            kv = next((values[n] for n in names.kv_usage if values.get(n)), None)
            return EngineFigures(
                running=int(sum(values[names.running])),
                waiting=int(sum(values[names.waiting])),
                kv_usage=sum(kv) / len(kv) if kv else None,
            )
    return None


def scheduling_policy(server_info: object) -> str | None:
    """The engine's scheduling policy from its server-info answer, or None when it does not say.

    vLLM's ``GET /server_info?config_format=json`` (served when the engine runs
    with ``VLLM_SERVER_DEV_MODE=1``) holds ``vllm_config.scheduler_config.policy``
    (``fcfs`` or ``priority``); SGLang's ``GET /get_server_info`` holds
    ``enable_priority_scheduling``.
    """
    if not isinstance(server_info, dict):
        return None
    config = server_info.get("vllm_config")
    if isinstance(config, dict):
        scheduler = config.get("scheduler_config")
        policy = scheduler.get("policy") if isinstance(scheduler, dict) else None
        return str(policy) if policy is not None else None
    flag = server_info.get("enable_priority_scheduling")
    if isinstance(flag, bool):
        return "priority" if flag else "fcfs"
    return None
