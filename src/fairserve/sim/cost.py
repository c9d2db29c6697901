"""The step-time cost model: per-layer roofline terms of the GPU and the model's shape.

One engine step runs a batch of ``P`` prefill tokens in ``Np`` prefill
chunks and ``D`` decode sequences (``N = Np + D`` sequences in all, ``K`` KV tokens read, ``A`` attention
query-key pairs). Its time is a sum of terms, each with its own efficiency
factor (docs/simulator.md gives the figures and why):

    t = step_overhead_s + per_seq_overhead_s * N + prefill_seq_overhead_s * Np
        + layers * layer_overhead_s
        + layers * eager_layer_overhead_s                 (steps not replayed as a CUDA graph)
        + max(gemm_flops / (tp * peak_flops * mfu), read_bytes / (tp * hbm_bw * mbu))
        + attn_flops / (tp * peak_flops * attention_mfu)
        + kv_bytes / (hbm_bw * kv_mbu)
        + 2 * layers * (ceil(log2 tp) * allreduce_latency_s
                        + 2 (tp-1)/tp * G * hidden * dtype / (link_bw * interconnect_efficiency))

    gemm_flops = 2 * body_params * G + 2 * vocab * hidden * S   (LM head per sampled row)
    attn_flops = 4 * layers * q_dim * A                         (QK^T and PV)
    kv_bytes   = kv_bytes_per_token(tp) * K                     (per GPU)

``G = P + D`` tokens go through the GEMMs and ``S = N`` rows through the LM
head, except in a step where every sequence runs one token (pure decode):
there vLLM replays a CUDA graph captured for the next size up (1, 2, 4, 8, 16,
..., 512), so ``G = S = padded(N)``; every other step launches its kernels one by
one and pays ``eager_layer_overhead_s`` per layer. Weight reads and compute are divided by
``tp``; the fixed costs (launches, norms, sampling, the scheduler) are not.

MoE: ``body_params`` in the FLOPs are the active ones, and ``read_bytes`` holds
the dense weights plus the share ``1 - (1 - k/E)^G`` of the routed experts that
``G`` tokens route to (uniform routing). With expert parallelism, whole experts
sit on each GPU and the step waits for the busiest one (``CostModel._weights_s``,
``_compute_s``).

During a run of pure decode steps the batch is fixed (B sequences) and the KV
read grows by B tokens a step, so each step's time is ``c + max(u0 + u1 j,
v0 + v1 j)``: two lines, which cross at most once. ``DecodeLine`` sums k such
steps and inverts the sum in closed form; the simulator's event skipping rests
on it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

GIB = 1024**3


class UnknownProfileError(ValueError):
    """A GPU, model or profile that fairserve has no figures for."""


class Link(StrEnum):
    """The kind of link tensor-parallel all-reduces cross between GPUs."""

    NVLINK = "nvlink"
    PCIE = "pcie"


@dataclass(frozen=True, slots=True)
class GPUSpec:
    """Public spec figures of one GPU."""

    name: str
    memory_gib: float
    peak_bf16_tflops: float
    hbm_bandwidth_gb_s: float
    interconnect_gb_s: float
    # The SM boost clock; None where the datasheet gives none.
    boost_clock_mhz: float | None = None
    link: Link = Link.NVLINK


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The shape of a decoder-only transformer, from its config.json."""

    name: str
    params: int
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_model_len: int
    dtype_bytes: int = 2
    # MoE: the parameters one token goes through (shared + its experts); None
    # for a dense model. Compute follows them, weight reads and memory the total.
    active_params: int | None = None
    # Multi-head latent attention: KV values cached per token and layer (the
    # latent and the rotary key, the same on every tp rank); None for MHA/GQA.
    kv_latent_dim: int | None = None
    # MoE routed experts: how many per MoE layer, how many each token goes to,
    # and their parameters summed over all layers (shared experts are not
    # routed: they count as dense). A step reads only the experts its tokens
    # route to. None for a dense model (or an MoE model given by counts only).
    num_experts: int | None = None
    experts_per_token: int | None = None
    expert_params: int | None = None

    def __post_init__(self) -> None:
        experts = (self.num_experts, self.experts_per_token, self.expert_params)
        if any(v is not None for v in experts):
            e, k, p = experts
            if e is None or k is None or p is None:
                raise ValueError(
                    f"model {self.name}: num_experts, experts_per_token and expert_params "
                    "go together"
                )
            if not 1 <= k <= e or not 0 < p < self.params:
                raise ValueError(
                    f"model {self.name}: needs 1 <= experts_per_token <= num_experts and "
                    f"0 < expert_params < params, got {k}, {e}, {p}"
                )

    @property
    def weight_bytes(self) -> int:
        """Bytes of all weights."""
        return self.params * self.dtype_bytes

    @property
    def body_params(self) -> int:
        """Parameters every token goes through (all but the embedding and LM head)."""
        embed = self.vocab_size * self.hidden_size
        return self.params - embed * (1 if self.tie_word_embeddings else 2)

    @property
    def active_body_params(self) -> int:
        """Body parameters one token's GEMMs go through (all of them for a dense model)."""
        if self.active_params is None:
            return self.body_params
        embed = self.vocab_size * self.hidden_size
        return self.active_params - embed * (1 if self.tie_word_embeddings else 2)

    def touched_expert_share(self, tokens: int) -> float:
        """Expected share of a layer's routed experts that ``tokens`` tokens route to
        (uniform routing: ``1 - (1 - k/E)^tokens``); 1 for a dense model."""
        if self.num_experts is None or self.experts_per_token is None:
            return 1.0
        return 1.0 - (1.0 - self.experts_per_token / self.num_experts) ** max(tokens, 0)

    def kv_bytes_per_token(self, tp: int) -> int:
        """KV-cache bytes one token takes on one GPU under tensor parallelism."""
        if self.kv_latent_dim is not None:
            return self.num_layers * self.kv_latent_dim * self.dtype_bytes
        # KV heads are split across TP ranks; with fewer heads than ranks each
        # rank keeps a replica of one head (as vLLM does).
        heads_per_rank = max(1, self.num_kv_heads // tp)
        return 2 * self.num_layers * heads_per_rank * self.head_dim * self.dtype_bytes


@dataclass(frozen=True, slots=True)
class Efficiency:
    """The fitted factors of the cost model (see the module docstring).

    Fractions of a datasheet peak: ``mfu`` (GEMM FLOP/s), ``mbu`` (weight
    reads), ``attention_mfu`` (attention FLOP/s), ``kv_mbu`` (KV-cache reads),
    ``interconnect_efficiency`` (link bandwidth). Times: the fixed costs per
    step, per sequence, per prefill sequence (on top of the per-sequence cost),
    per layer, and the latency of one all-reduce hop.
    """

    mfu: float = 0.55
    mbu: float = 0.80
    step_overhead_s: float = 0.0005
    per_seq_overhead_s: float = 0.000002
    interconnect_efficiency: float = 0.7
    allreduce_latency_s: float = 0.00001
    attention_mfu: float = 0.4
    kv_mbu: float = 0.7
    layer_overhead_s: float = 0.00001
    eager_layer_overhead_s: float = 0.000001
    prefill_seq_overhead_s: float = 0.0001

    def __post_init__(self) -> None:
        for key in FRACTIONS:
            value = getattr(self, key)
            if not 0 < value <= 1:
                raise ValueError(f"efficiency {key} must be in (0, 1], got {value!r}")
        for key in DURATIONS:
            value = getattr(self, key)
            if value < 0:
                raise ValueError(f"efficiency {key} must be >= 0, got {value!r}")


FRACTIONS = ("mfu", "mbu", "attention_mfu", "kv_mbu", "interconnect_efficiency")
DURATIONS = (
    "step_overhead_s",
    "per_seq_overhead_s",
    "layer_overhead_s",
    "eager_layer_overhead_s",
    "allreduce_latency_s",
    "prefill_seq_overhead_s",
)

# vLLM's default CUDA-graph capture sizes for decode: 1, 2, 4, then every 8 up to 512.
MAX_GRAPH_BATCH = 512


def graph_batch(seqs: int) -> int:
    """The batch a pure-decode step of ``seqs`` sequences runs at (its CUDA graph's size)."""
    if seqs <= 2:
        return seqs
    if seqs <= 4:
        return 4
    if seqs <= MAX_GRAPH_BATCH:
        return (seqs + 7) & ~7
    return seqs  # larger batches run eagerly, unpadded


def allreduce_hops(tp: int) -> int:
    """Latency-bound hops of one all-reduce over ``tp`` GPUs (a tree: ceil(log2 tp))."""
    return (tp - 1).bit_length()


def _profile_text(name: str) -> str:
    return resources.files("fairserve.sim").joinpath("profiles", name).read_text()


@cache
def _gpu_table() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(_profile_text("gpus.yaml"))["gpus"])


@cache
def _model_table() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(_profile_text("models.yaml"))["models"])


@cache
def default_efficiency(gpu: str | None = None) -> Efficiency:
    """The shipped efficiency factors of profiles/efficiency.yaml: the GPU's own
    (fitted on measurements) when it has an entry, else, for a GPU of
    gpus.yaml, the fitted GPU's factors carried over (``derived_efficiency``),
    else the uncalibrated defaults."""
    data = yaml.safe_load(_profile_text("efficiency.yaml"))
    per_gpu = {k.lower(): v for k, v in (data.get("gpus") or {}).items()}
    if gpu is None:
        return Efficiency(**data["default"])
    if gpu.lower() in per_gpu:
        return Efficiency(**{**data["default"], **per_gpu[gpu.lower()]})
    source = data.get("derive_from")
    known = {k.lower() for k in _gpu_table()}
    if source is None or source.lower() not in per_gpu or gpu.lower() not in known:
        return Efficiency(**data["default"])
    fitted = Efficiency(**{**data["default"], **per_gpu[source.lower()]})
    return derived_efficiency(fitted, gpu_spec(source), gpu_spec(gpu))


def derived_efficiency(fitted: Efficiency, source: GPUSpec, target: GPUSpec) -> Efficiency:
    """Factors for ``target`` from factors fitted on ``source`` (docs/simulator.md,
    "Profiles of other GPUs").

    Fractions of a datasheet peak and host-side times carry over as they are.
    The all-reduce hop latency is GPU-side work (the collective's kernels
    polling flags over the link), so between GPUs on the same kind of link it
    scales with the SM clock, ``source / target`` boost clock; across kinds of
    link there is no figure to scale it by, and it is kept.
    """
    s_clock, t_clock = source.boost_clock_mhz, target.boost_clock_mhz
    if source.link is not target.link or s_clock is None or t_clock is None:
        return fitted
    return replace(fitted, allreduce_latency_s=fitted.allreduce_latency_s * s_clock / t_clock)


def known_gpus() -> list[str]:
    """Names of the GPUs with shipped specs."""
    return sorted(_gpu_table())


def known_models() -> list[str]:
    """Names of the models with shipped shapes."""
    return sorted(_model_table())


def _lookup(table: dict[str, dict[str, Any]], name: str, kind: str) -> dict[str, Any]:
    for key, row in table.items():
        if key.lower() == name.lower():
            return {"name": key, **row}
    raise UnknownProfileError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(table))}")


def gpu_spec(name: str) -> GPUSpec:
    """The spec of a GPU by name (case-insensitive); a clear error lists the known ones."""
    row = _lookup(_gpu_table(), name, "GPU")
    return GPUSpec(**{**row, "link": Link(row.get("link", Link.NVLINK.value))})


def model_spec(name: str) -> ModelSpec:
    """The shape of a model by name (case-insensitive), or of a Hugging Face
    ``config.json`` given by its path; a clear error lists the known names."""
    if name.endswith(".json"):
        from fairserve.sim.hf_config import model_from_config

        return model_from_config(Path(name))
    return ModelSpec(**_lookup(_model_table(), name, "model"))


class DecodeLine:
    """Step times of a run of pure-decode steps: ``c + max(u0 + u1 j, v0 + v1 j)``.

    ``j`` counts steps from the start of the run (0, 1, 2, ...). A plain slotted
    class rather than a frozen dataclass: one is built per decode run, and a
    frozen dataclass's ``__init__`` cost 3x as much (measured with timeit).
    """

    __slots__ = ("c", "u0", "u1", "v0", "v1")

    def __init__(self, c: float, u0: float, u1: float, v0: float, v1: float) -> None:
        self.c, self.u0, self.u1, self.v0, self.v1 = c, u0, u1, v0, v1

    def __repr__(self) -> str:
        return f"DecodeLine(c={self.c}, u0={self.u0}, u1={self.u1}, v0={self.v0}, v1={self.v1})"

    def step_s(self, j: int) -> float:
        """Time of step ``j`` of the run."""
        return self.c + max(self.u0 + self.u1 * j, self.v0 + self.v1 * j)

    def total_s(self, k: int) -> float:
        """Sum of the times of steps 0..k-1, in closed form."""
        if k <= 0:
            return 0.0
        # a: the line on top at j = 0; b: the other. a stays on top up to the
        # crossing (if the lines cross at all), b from there on.
        if self.u0 > self.v0 or (self.u0 == self.v0 and self.u1 >= self.v1):
            a0, a1, b0, b1 = self.u0, self.u1, self.v0, self.v1
        else:
            a0, a1, b0, b1 = self.v0, self.v1, self.u0, self.u1
        d1 = a1 - b1
        if d1 >= 0.0:
            s = k
        else:
            cross = (a0 - b0) / -d1  # may be huge: compare as a float first
            s = k if cross >= k else min(k, math.floor(cross) + 1)
        total = k * self.c + s * a0 + a1 * s * (s - 1) * 0.5
        n = k - s
        if n:
            total += n * b0 + b1 * (s + k - 1) * n * 0.5
        return total

    def steps_within(self, dt_s: float) -> int:
        """Largest k with ``total_s(k) <= dt_s`` (0 if not even one step fits)."""
        if dt_s <= 0:
            return 0
        k = self._estimate(dt_s)
        for _ in range(8):  # the estimate is off by a step or two: walk
            if k > 0 and self.total_s(k) > dt_s:
                k -= 1
            elif self.total_s(k + 1) <= dt_s:
                k += 1
            else:
                return k
        return self._bisect(k, dt_s)  # farther off (extreme step shapes): search

    def _bisect(self, k: int, dt_s: float) -> int:
        # total_s is increasing in k: find lo with total_s(lo) <= dt_s < total_s(lo + 1).
        lo, hi = 0, max(k, 1)
        while self.total_s(hi) <= dt_s:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.total_s(mid) <= dt_s:
                lo = mid
            else:
                hi = mid
        return lo

    def steps_to_reach(self, dt_s: float) -> int:
        """Smallest k with ``total_s(k) >= dt_s``: the first step boundary at or after dt_s."""
        if dt_s <= 0:
            return 0
        k = self.steps_within(dt_s)
        return k if self.total_s(k) >= dt_s else k + 1

    def _estimate(self, dt_s: float) -> int:
        # Solve the quadratic of the steeper line from 0 (an upper bound on the
        # slope, so a slight under-estimate); the callers fix it up by +-1 steps.
        x0 = self.c + max(self.u0, self.v0)
        x1 = max(self.u1, self.v1)
        if x1 <= 0.0:
            return int(dt_s / x0)
        # x1/2 k^2 + (x0 - x1/2) k - dt = 0, its positive root written without the
        # cancellation of -b + sqrt(b^2 + ...) when the slope is tiny
        b = x0 - 0.5 * x1
        root = math.sqrt(b * b + 2.0 * x1 * dt_s)
        k = 2.0 * dt_s / (b + root) if b > 0 else (root - b) / x1
        return max(0, int(min(k, 2.0**62)))


class CostModel:
    """Step times for one (GPU, model, tensor-parallel degree) with given efficiency."""

    __slots__ = (
        "_a_attn",
        "_a_dense",
        "_a_exp",
        "_a_seq",
        "_a_tok",
        "_comm_tok",
        "_eager",
        "_ep_imbalance",
        "_ep_local",
        "_fixed",
        "_k_per_gpu",
        "_m_exp",
        "_m_kv",
        "_m_w",
        "_miss",
        "efficiency",
        "expert_parallel",
        "gpu",
        "model",
        "per_seq_overhead_s",
        "prefill_seq_overhead_s",
        "step_overhead_s",
        "tp",
    )

    def __init__(
        self,
        gpu: GPUSpec,
        model: ModelSpec,
        tp: int = 1,
        efficiency: Efficiency | None = None,
        expert_parallel: bool = False,
    ) -> None:
        if tp < 1:
            raise ValueError(f"tp must be >= 1, got {tp}")
        eff = efficiency if efficiency is not None else default_efficiency(gpu.name)
        self.gpu, self.model, self.tp, self.efficiency = gpu, model, tp, eff
        peak_flops_s = tp * gpu.peak_bf16_tflops * 1e12
        gemm_flops_s = peak_flops_s * eff.mfu
        hbm_bytes_s = gpu.hbm_bandwidth_gb_s * 1e9
        q_dim = model.num_attention_heads * model.head_dim
        lm_head = model.vocab_size * model.hidden_size
        self._a_tok = 2.0 * model.active_body_params / gemm_flops_s
        self._a_seq = 2.0 * lm_head / gemm_flops_s
        self._a_attn = 4.0 * model.num_layers * q_dim / (peak_flops_s * eff.attention_mfu)
        # Each step reads every dense weight once (the embedding only row by row)
        # and the routed experts its tokens go to.
        read_bytes = (model.body_params + lm_head) * model.dtype_bytes
        expert_bytes = (model.expert_params or 0) * model.dtype_bytes
        self._m_w = (read_bytes - expert_bytes) / (tp * hbm_bytes_s * eff.mbu)
        self._m_exp = expert_bytes / (tp * hbm_bytes_s * eff.mbu)
        self._init_experts(expert_parallel, gemm_flops_s / tp)
        self._m_kv = model.kv_bytes_per_token(tp) / (hbm_bytes_s * eff.kv_mbu)
        fixed = eff.step_overhead_s + model.num_layers * eff.layer_overhead_s
        if tp > 1:
            link_s = gpu.interconnect_gb_s * 1e9 * eff.interconnect_efficiency
            ring = 2.0 * (tp - 1) / tp
            per_token = model.hidden_size * model.dtype_bytes * ring / link_s
            self._comm_tok = 2 * model.num_layers * per_token
            fixed += 2 * model.num_layers * allreduce_hops(tp) * eff.allreduce_latency_s
        else:
            self._comm_tok = 0.0
        self._fixed = fixed
        self._eager = model.num_layers * eff.eager_layer_overhead_s
        self.step_overhead_s = eff.step_overhead_s
        self.per_seq_overhead_s = eff.per_seq_overhead_s
        self.prefill_seq_overhead_s = eff.prefill_seq_overhead_s

    def _init_experts(self, expert_parallel: bool, gpu_flops_s: float) -> None:
        """Routed experts: the share a step touches, and expert parallelism's busiest GPU."""
        model, tp = self.model, self.tp
        experts = float(model.num_experts or 1)
        k = float(model.experts_per_token or 1)
        self._miss = 1.0 - k / experts  # chance that one token leaves a given expert out
        self.expert_parallel = expert_parallel and tp > 1 and model.num_experts is not None
        # Expert parallelism: each GPU holds experts/tp whole experts instead of a
        # 1/tp slice of every one, so a step waits for the GPU whose experts got
        # the most tokens (the mean plus a deviation of the maximum of tp counts).
        self._ep_local = max(1.0, experts / tp)
        self._ep_imbalance = 2.0 * math.log(tp) if tp > 1 else 0.0
        self._k_per_gpu = k / tp
        per_expert = float(model.expert_params or 0) / experts
        self._a_exp = 2.0 * per_expert / gpu_flops_s  # one token's FLOPs in one expert
        self._a_dense = self._a_tok - self._a_exp * k / tp

    def _compute_s(self, tokens: int, rows: int) -> float:
        """GEMM compute of ``tokens`` tokens and ``rows`` LM-head rows."""
        if not self.expert_parallel:
            return self._a_tok * tokens + self._a_seq * rows
        mean = tokens * self._k_per_gpu  # token-expert pairs per GPU
        busiest = mean + math.sqrt(mean * self._ep_imbalance)
        return self._a_dense * tokens + self._a_exp * busiest + self._a_seq * rows

    def _weights_s(self, tokens: int) -> float:
        """Weight reads of a step of ``tokens`` tokens (the experts they route to)."""
        if self._m_exp == 0.0:
            return self._m_w
        share = 1.0 - self._miss**tokens
        if not self.expert_parallel:
            return self._m_w + self._m_exp * share
        mean = self._ep_local * share  # experts touched per GPU
        busiest = min(self._ep_local, mean + math.sqrt(mean * self._ep_imbalance))
        return self._m_w + self._m_exp * busiest / self._ep_local

    @classmethod
    def from_names(
        cls, gpu: str, model: str, tp: int = 1, efficiency: Efficiency | None = None
    ) -> CostModel:
        """Build from shipped GPU and model names."""
        return cls(gpu_spec(gpu), model_spec(model), tp, efficiency)

    def with_efficiency(self, efficiency: Efficiency) -> CostModel:
        """The same hardware, model and parallelism with other efficiency factors."""
        return CostModel(self.gpu, self.model, self.tp, efficiency, self.expert_parallel)

    @property
    def fixed_step_s(self) -> float:
        """The part of every step's time that no batch changes (overheads, all-reduce latency)."""
        return self._fixed

    def step_time_s(
        self,
        prefill_tokens: int,
        decode_seqs: int,
        kv_tokens: int,
        attn_pairs: int,
        num_seqs: int,
        prefill_seqs: int,
    ) -> float:
        """Time of one step of the given composition.

        ``kv_tokens``: KV-cache tokens read by the step (each scheduled sequence's
        context). ``attn_pairs``: query-key pairs of attention (a decode
        sequence with context c contributes c; a prefill chunk of n tokens on top
        of c cached tokens contributes n*c + n*(n+1)/2, so the sum of squares of
        the chunks is exact). ``num_seqs``: sequences in the step, ``prefill_seqs``
        of them prefill chunks (each pays ``prefill_seq_overhead_s``). The time
        depends on prefill tokens and decode sequences only through their sum.
        """
        tokens = prefill_tokens + decode_seqs
        rows = num_seqs
        fixed = (
            self._fixed
            + self.per_seq_overhead_s * num_seqs
            + self.prefill_seq_overhead_s * prefill_seqs
        )
        if tokens == num_seqs and num_seqs <= MAX_GRAPH_BATCH:
            tokens = rows = graph_batch(num_seqs)  # one token per sequence: a CUDA-graph replay
        else:
            fixed += self._eager  # launched kernel by kernel
        if self._m_exp == 0.0:  # dense: the hot path, inline
            compute = self._a_tok * tokens + self._a_seq * rows
            weights = self._m_w
        else:
            compute, weights = self._compute_s(tokens, rows), self._weights_s(tokens)
        gemm = compute if compute > weights else weights
        attention = self._a_attn * attn_pairs + self._m_kv * kv_tokens
        return fixed + self._comm_tok * tokens + attention + gemm

    def step_times_s(
        self,
        prefill_tokens: np.ndarray,
        decode_seqs: np.ndarray,
        kv_tokens: np.ndarray,
        attn_pairs: np.ndarray,
        num_seqs: np.ndarray,
        prefill_seqs: np.ndarray,
    ) -> np.ndarray:
        """``step_time_s`` over arrays of step compositions (calibration)."""
        tokens = prefill_tokens + decode_seqs
        pure = (tokens == num_seqs) & (num_seqs <= MAX_GRAPH_BATCH)
        padded = np.asarray([graph_batch(int(n)) for n in num_seqs], dtype=np.float64)
        tokens = np.where(pure, padded, tokens)
        rows = np.where(pure, padded, num_seqs)
        if self._m_exp == 0.0:
            gemm = np.maximum(self._a_tok * tokens + self._a_seq * rows, self._m_w)
        else:
            gemm = np.asarray(
                [max(self._compute_s(int(t), int(r)), self._weights_s(int(t)))
                 for t, r in zip(tokens.tolist(), rows.tolist(), strict=True)],
                dtype=np.float64,
            )  # fmt: skip
        attention = self._a_attn * attn_pairs + self._m_kv * kv_tokens
        fixed = (
            self._fixed
            + self.per_seq_overhead_s * num_seqs
            + self.prefill_seq_overhead_s * prefill_seqs
            + np.where(pure, 0.0, self._eager)
        )
        return np.asarray(fixed + self._comm_tok * tokens + attention + gemm, dtype=np.float64)

    def decode_line(self, batch_seqs: int, kv_tokens0: int) -> DecodeLine:
        """Step times of pure-decode steps over ``batch_seqs`` sequences whose
        first step reads ``kv_tokens0`` KV tokens (it grows by ``batch_seqs`` a step)."""
        b = batch_seqs
        g = graph_batch(b)
        c = self._fixed + self.per_seq_overhead_s * b + self._comm_tok * g
        if b > MAX_GRAPH_BATCH:
            c += self._eager
        # Attention grows with the context under both lines (it is its own kernel).
        per_kv = self._a_attn + self._m_kv
        attn0 = per_kv * kv_tokens0
        attn1 = per_kv * b
        return DecodeLine(
            c=c,
            u0=self._compute_s(g, g) + attn0,
            u1=attn1,
            v0=self._weights_s(g) + attn0,
            v1=attn1,
        )

    def kv_cache_blocks(
        self,
        block_size: int,
        gpu_memory_utilization: float,
        max_num_batched_tokens: int,
        max_num_seqs: int,
    ) -> int:
        """KV-cache blocks per instance, as vLLM sizes them after profiling.

        Capacity per GPU = memory x utilisation - weights/tp - activation reserve,
        where the reserve is the peak activation of a full-budget step (the
        hidden states and MLP intermediates of ``max_num_batched_tokens`` tokens,
        FP32 logits of ``max_num_seqs`` sequences) plus 1 GiB of non-torch memory
        (CUDA context, graphs, NCCL buffers).
        """
        m = self.model
        activation = max_num_batched_tokens * (
            4 * m.hidden_size + 2 * m.intermediate_size // self.tp
        )
        activation *= m.dtype_bytes
        activation += max_num_seqs * m.vocab_size * 4
        free = (
            self.gpu.memory_gib * GIB * gpu_memory_utilization
            - m.weight_bytes / self.tp
            - activation
            - 1 * GIB
        )
        per_block = block_size * m.kv_bytes_per_token(self.tp)
        blocks = int(free // per_block)
        if blocks <= 0:
            raise ValueError(
                f"{m.name} does not fit on {self.gpu.name} with tp={self.tp}: "
                f"{free / GIB:.1f} GiB left for the KV cache; raise tp or use a larger GPU"
            )
        return blocks


# --- profiles: calibrated efficiency factors as data files ---------------------------


def _profile_key(gpu: str, model: str, tp: int) -> str:
    return f"{gpu}__{model}__tp{tp}".lower()


def profile_dir() -> Path:
    """Folder of the calibrated profiles shipped with fairserve."""
    return Path(str(resources.files("fairserve.sim").joinpath("profiles")))


def load_profile(path: Path) -> tuple[GPUSpec, ModelSpec, int, Efficiency]:
    """Read a profile file written by ``fairserve calibrate``."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UnknownProfileError(f"cannot read profile {path}: {exc}") from exc
    for key in ("gpu", "model", "tp", "efficiency"):
        if not isinstance(data, dict) or key not in data:
            raise UnknownProfileError(f"profile {path}: missing key {key!r}")
    try:
        eff = Efficiency(**data["efficiency"])
    except TypeError as exc:
        raise UnknownProfileError(f"profile {path}: key 'efficiency': {exc}") from exc
    shape = data.get("model_shape")  # a model from a config.json, not in the catalogue
    try:
        model = ModelSpec(**shape) if isinstance(shape, dict) else model_spec(data["model"])
    except (TypeError, ValueError) as exc:
        raise UnknownProfileError(f"profile {path}: key 'model_shape': {exc}") from exc
    return gpu_spec(data["gpu"]), model, int(data["tp"]), eff


def cost_model(
    gpu: str, model: str, tp: int = 1, profile: Path | None = None,
    expert_parallel: bool = False,
) -> CostModel:  # fmt: skip
    """The cost model for a (gpu, model, tp), with calibrated factors when a profile exists.

    ``profile`` names a file written by ``fairserve calibrate``; without it a
    shipped profile for the same triple is used when there is one, else the
    default efficiency factors. A profile's GPU and model must be ``gpu`` and
    ``model``; its factors hold at every tp (the model's terms carry the tp
    degree), so a profile fitted on some tp degrees predicts another.
    ``expert_parallel``: an MoE model's experts are spread over the tp GPUs
    whole (vLLM's ``--enable-expert-parallel``).
    """
    if profile is not None:
        g, m, _, eff = load_profile(profile)
        wanted = model_spec(model).name if model.endswith(".json") else model
        if g.name.lower() != gpu.lower() or m.name.lower() != wanted.lower():
            raise UnknownProfileError(
                f"profile {profile} is for {m.name} on {g.name}, not {wanted} on {gpu}; "
                f"pass --gpu {g.name} --model {m.name}"
            )
        return CostModel(g, m, tp, eff, expert_parallel)
    g, m = gpu_spec(gpu), model_spec(model)
    shipped = profile_dir() / "calibrated" / f"{_profile_key(g.name, m.name, tp)}.yaml"
    if shipped.is_file():
        return CostModel(g, m, tp, load_profile(shipped)[3], expert_parallel)
    return CostModel(g, m, tp, None, expert_parallel)


def write_profile(
    path: Path, model: CostModel, fit: dict[str, object] | None = None, source: str = ""
) -> None:
    """Write a profile file that ``load_profile`` and ``--profile`` read back."""
    data: dict[str, Any] = {
        "gpu": model.gpu.name,
        "model": model.model.name,
        "tp": model.tp,
        "efficiency": asdict(model.efficiency),
    }
    if model.model.name.lower() not in {k.lower() for k in _model_table()}:
        data["model_shape"] = asdict(model.model)
    if fit:
        data["fit"] = fit
    if source:
        data["source"] = source
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
