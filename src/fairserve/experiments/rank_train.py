"""Training the ``learned-rank`` policy in the simulator, from a user's own workload.

Two phases, both on the training part of the workload only:

1. **Imitation.** The workload runs through the configured deployment with a
   recording FIFO queue (:class:`PairRecorder`): at every scheduling decision
   (a pop with two or more requests waiting) a few pairs of co-waiting
   requests are drawn, and each pair is labelled with the order a
   clairvoyant teacher would serve them in (true output tokens plus
   ``teacher_prompt_weight`` x prompt tokens: ``oracle-sjf`` at 0, the
   never-served work of ``oracle-srpt`` at 1). A pairwise logistic regression
   on the pairs' feature differences (log predicted output, log prompt,
   tenant) gives the size weights of the score. Pairs are drawn from real
   queues, not from the whole trace, because only requests that wait together
   are ever compared by the policy.
2. **Search on achieved E2E.** The teacher knows nothing of waiting, and the
   best trade-off between prompt and output length is a property of the
   engine, not of the lengths; so the waiting-time weight and then the prompt
   weight are chosen by simulating the training workload under each candidate
   and keeping the one with the lowest ``mean E2E + tail_weight x p99 E2E``.

Everything is seeded; the same inputs give the same model.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fairserve.core.model import Request, Tenant
from fairserve.core.policies.fifo import FifoPolicy
from fairserve.core.policies.learned_rank import RankModel
from fairserve.core.registry import ComponentSpec
from fairserve.experiments.studies import SjfGap
from fairserve.sim.run import SimConfig, simulate
from fairserve.workload import Workload

F64 = npt.NDArray[np.float64]

#: Waiting-time weights tried: score units per second, where the standardised size weights
#: (see :class:`Imitation`) have unit length.
ARRIVAL_GRID = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1)
#: Changes of the standardised prompt weight tried around the imitated one.
PROMPT_STEPS = (-0.5, -0.25, 0.25, 0.5)


@dataclass
class PairSink:
    """Where :class:`PairRecorder` puts its labelled pairs (shared by every engine's queue).

    ``tenants`` fixes the tenant columns (one per tenant when there are two or
    more: a single tenant's offset changes no order).
    """

    tenants: tuple[str, ...]
    teacher_prompt_weight: float = 0.0
    default_output_tokens: int = 256
    rows: list[list[float]] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)
    decisions: int = 0

    def __post_init__(self) -> None:
        self._sizes = RankModel({}, default_output_tokens=self.default_output_tokens)

    def columns(self) -> list[str]:
        """The names of the pair features."""
        tenant_cols = [f"tenant:{t}" for t in self.tenants] if len(self.tenants) > 1 else []
        return ["log_predicted_output", "log_prompt", *tenant_cols]

    def featurize(self, req: Request) -> list[float]:
        """One request's features (the ranker's size terms, then tenant indicators)."""
        # RankModel's own transforms: the weights fitted on these rows are its weights.
        f_pred, f_prompt, _ = self._sizes.features(req)
        row = [f_pred, f_prompt]
        if len(self.tenants) > 1:
            row += [1.0 if req.tenant == t else 0.0 for t in self.tenants]
        return row

    def teacher(self, req: Request) -> float:
        """The clairvoyant size the teacher orders by (smaller first)."""
        return req.output_tokens + self.teacher_prompt_weight * req.prompt_tokens

    def arrays(self) -> tuple[F64, F64]:
        """The pairs' feature differences (first minus second) and labels (1: first goes first)."""
        width = len(self.columns())
        x = np.asarray(self.rows, dtype=np.float64).reshape(-1, width)
        return x, np.asarray(self.labels, dtype=np.float64)


class PairRecorder(FifoPolicy):
    """A FIFO queue that records labelled pairs of waiting requests at each decision.

    Built by the simulator through its dotted path
    (``fairserve.experiments.rank_train:PairRecorder``) with a :class:`PairSink`
    as ``sink``; ``pairs_per_decision`` pairs are drawn at random (``seed``).
    """

    def __init__(
        self,
        tenants: Mapping[str, Tenant] | None = None,
        *,
        sink: PairSink,
        pairs_per_decision: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(tenants)
        self.sink = sink
        self.pairs_per_decision = pairs_per_decision
        self._rng = random.Random(seed)
        self._waiting: list[Request] = []  # the queue's requests, any order: O(1) draws
        self._slot: dict[Request, int] = {}
        self._features: dict[Request, list[float]] = {}

    def _add(self, req: Request) -> None:
        self._slot[req] = len(self._waiting)
        self._waiting.append(req)
        self._features[req] = self.sink.featurize(req)

    def _drop(self, req: Request | None) -> None:
        if req is None or req not in self._slot:
            return
        self._features.pop(req, None)
        slot, last = self._slot.pop(req), self._waiting.pop()
        if last is not req:
            self._waiting[slot] = last
            self._slot[last] = slot

    def push(self, req: Request, now: float) -> None:
        """Queue ``req`` (FIFO) and remember its features."""
        super().push(req, now)
        self._add(req)

    def requeue(self, req: Request, now: float) -> None:
        """Take a preempted request back (FIFO's front)."""
        super().requeue(req, now)
        self._add(req)

    def pop(self, now: float) -> Request | None:
        """Record pairs of what is waiting, then serve the FIFO head."""
        if len(self._waiting) >= 2:
            self._record()
        req = super().pop(now)
        self._drop(req)
        return req

    def remove(self, req: Request) -> bool:
        """Cancel a queued request."""
        removed = super().remove(req)
        if removed:
            self._drop(req)
        return removed

    def _record(self) -> None:
        sink, waiting, rng = self.sink, self._waiting, self._rng
        sink.decisions += 1
        for _ in range(self.pairs_per_decision):
            a, b = rng.sample(waiting, 2)
            size_a, size_b = sink.teacher(a), sink.teacher(b)
            if size_a == size_b:
                continue  # the teacher has no preference: no label
            fa, fb = self._features[a], self._features[b]
            sink.rows.append([x - y for x, y in zip(fa, fb, strict=True)])
            sink.labels.append(1.0 if size_a < size_b else 0.0)


# ---------------------------------------------------------------- phase 1: imitation


def fit_pairwise(x: F64, y: F64, *, l2: float = 1e-3, iterations: int = 50) -> F64:
    """Weights ``w`` of a pairwise logistic model: P(first goes first) = sigmoid(-w . x).

    ``x`` holds feature differences (first minus second); a lower score is
    served first, hence the minus. Newton's method on the L2-penalised log
    loss (``l2`` per pair, which also keeps an all-zero column at weight 0);
    no intercept, since swapping a pair must flip the prediction.
    """
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"need one label per row, got {x.shape} and {y.shape}")
    if len(x) == 0:
        raise ValueError("no labelled pairs: nothing ever waited behind another request")
    z = -x
    w = np.zeros(x.shape[1])
    ridge = l2 * len(x) * np.eye(x.shape[1])
    for _ in range(iterations):
        p = 0.5 * (1.0 + np.tanh(0.5 * (z @ w)))  # the logistic function, without overflow
        grad = z.T @ (p - y) + ridge @ w
        hess = (z * (p * (1 - p))[:, None]).T @ z + ridge
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-9:
            break
    return w


def pairwise_accuracy(w: F64, x: F64, y: F64) -> float:
    """Share of pairs the weights order as the teacher does."""
    predicted_first = (x @ w) < 0
    return float(np.mean(predicted_first == (y == 1.0))) if len(y) else float("nan")


@dataclass(frozen=True)
class Imitation:
    """Phase 1's result, in standardised units.

    ``pred`` and ``prompt`` are the size weights on features divided by
    ``scales`` (the spread of each feature's difference over the recorded
    pairs), the size weights together of unit length: so a step in the search
    and a waiting-time weight (score units per second) mean the same on
    every trace. ``tenant_offsets`` are already in score units.
    """

    pred: float
    prompt: float
    scales: tuple[float, float]
    tenant_offsets: Mapping[str, float]
    default_output_tokens: int
    info: Mapping[str, Any]

    def model(self, pred: float, prompt: float, arrival: float) -> RankModel:
        """The ranker with these standardised weights."""
        weights = {"log_predicted_output": pred / self.scales[0],
                   "log_prompt": prompt / self.scales[1], "arrival_s": arrival}  # fmt: skip
        return RankModel(weights, self.tenant_offsets, self.default_output_tokens)


def imitate(
    workloads: Sequence[Workload],
    config: SimConfig,
    *,
    teacher_prompt_weight: float,
    default_output_tokens: int = 256,
    pairs_per_decision: int = 4,
    seed: int = 0,
) -> Imitation:
    """Phase 1: record pairs under FIFO in each workload, fit the size weights (and offsets)."""
    tenants = sorted({name for wl in workloads for name in wl.tenant_names()})
    sink = PairSink(tuple(tenants), teacher_prompt_weight, default_output_tokens)
    spec = ComponentSpec(
        f"{__name__}:PairRecorder",
        {"sink": sink, "pairs_per_decision": pairs_per_decision, "seed": seed},
    )
    for workload in workloads:
        simulate(workload.requests(), dataclasses.replace(config, policy=spec))
    x, y = sink.arrays()
    spread = x.std(axis=0) if len(x) else np.ones(x.shape[1])
    spread[~(spread > 1e-12)] = 1.0  # a constant column (no predictor): weight 0 anyway
    w = fit_pairwise(x / spread, y)
    norm = float(np.linalg.norm(w[:2]))
    w = w / (norm if norm > 0 else 1.0)  # a scale changes no order
    columns = sink.columns()
    raw = w / spread
    offsets = {
        c.removeprefix("tenant:"): float(v) for c, v in zip(columns[2:], raw[2:], strict=True)
    }
    info = {
        "teacher_prompt_weight": teacher_prompt_weight,
        "decisions": sink.decisions,
        "pairs": len(y),
        "pairwise_accuracy": pairwise_accuracy(raw, x, y),
        "standardised_weights": {"log_predicted_output": float(w[0]), "log_prompt": float(w[1])},
    }
    return Imitation(float(w[0]), float(w[1]), (float(spread[0]), float(spread[1])), offsets,
                     default_output_tokens, info)  # fmt: skip


# ---------------------------------------------------------------- phase 2: search on E2E


@dataclass(frozen=True)
class E2E:
    """Mean and p99 E2E latency of the completed requests of one run, and how many completed."""

    mean_s: float
    p99_s: float
    completed: int

    def objective(self, tail_weight: float) -> float:
        """``mean + tail_weight x p99``: what the search minimises."""
        return self.mean_s + tail_weight * self.p99_s


def run_e2e(workload: Workload, config: SimConfig, policy: ComponentSpec | str) -> E2E:
    """Simulate ``workload`` under ``policy`` in ``config``'s deployment."""
    result = simulate(workload.requests(), dataclasses.replace(config, policy=policy))
    e2e = result.records.e2e_s[result.records.completed]
    if len(e2e) == 0:
        raise ValueError("no request completed: the deployment cannot serve this workload")
    return E2E(float(np.mean(e2e)), float(np.percentile(e2e, 99)), len(e2e))


def _spec(model: RankModel) -> ComponentSpec:
    return ComponentSpec("learned-rank", {"model": model})


class _Search:
    """Candidates simulated on the training workload, each once; the best kept."""

    def __init__(
        self, workloads: Sequence[Workload], config: SimConfig, tail_weight: float
    ) -> None:
        self.workloads, self.config, self.tail_weight = workloads, config, tail_weight
        self.tried: list[dict[str, Any]] = []
        self.best: tuple[float, RankModel] | None = None
        self._seen: dict[tuple[float, ...], float] = {}

    def score(self, base: Imitation, pred: float, prompt: float, arrival: float) -> float:
        """The objective of one candidate on the training workload (each simulated once)."""
        key = (id(base), pred, prompt, arrival)
        if key in self._seen:
            return self._seen[key]
        model = base.model(pred, prompt, arrival)
        runs = [run_e2e(wl, self.config, _spec(model)) for wl in self.workloads]
        # Averaged over the workloads: one arrival pattern alone over-fits the search.
        e2e = E2E(float(np.mean([r.mean_s for r in runs])),
                  float(np.mean([r.p99_s for r in runs])), sum(r.completed for r in runs))  # fmt: skip
        objective = e2e.objective(self.tail_weight)
        self.tried.append({"teacher_prompt_weight": base.info["teacher_prompt_weight"],
                           "standardised": {"log_predicted_output": pred, "log_prompt": prompt,
                                            "arrival_s": arrival},
                           "mean_e2e_s": e2e.mean_s, "p99_e2e_s": e2e.p99_s,
                           "objective": objective})  # fmt: skip
        if self.best is None or objective < self.best[0]:
            self.best = (objective, model)
        self._seen[key] = objective
        return objective

    def descend(self, base: Imitation) -> None:
        """From ``base``: the best waiting-time weight, then the best prompt weight with it."""
        pred, prompt = base.pred, base.prompt
        arrival = min(ARRIVAL_GRID, key=lambda a: self.score(base, pred, prompt, a))
        prompts = [prompt, *(prompt + step for step in PROMPT_STEPS)]
        for value in prompts:
            self.score(base, pred, value, arrival)


def train_ranker(
    workload: Workload | Sequence[Workload],
    config: SimConfig,
    *,
    teacher_prompt_weights: Sequence[float] = (0.0, 1.0),
    tail_weight: float = 0.0,
    default_output_tokens: int = 256,
    seed: int = 0,
) -> RankModel:
    """Fit a :class:`RankModel` on ``workload`` run through ``config`` (its predictor included).

    ``workload`` may be several workloads (say, the same lengths under several
    arrival seeds): pairs are pooled and each candidate's objective averaged.

    Phase 1 for each teacher in ``teacher_prompt_weights``; phase 2 searches the
    waiting-time weight on :data:`ARRIVAL_GRID`, then the prompt weight in
    :data:`PROMPT_STEPS` around the imitated one (standardised units), from
    each teacher's weights. The model's ``metrics`` hold every candidate tried
    and the phase-1 figures.
    """
    if not tail_weight >= 0:
        raise ValueError(f"tail_weight must be >= 0, got {tail_weight!r}")
    if not teacher_prompt_weights:
        raise ValueError("teacher_prompt_weights must name at least one teacher")
    workloads = (workload,) if isinstance(workload, Workload) else tuple(workload)
    if not workloads:
        raise ValueError("train_ranker needs at least one workload")
    search = _Search(workloads, config, tail_weight)
    imitation = []
    for teacher in teacher_prompt_weights:
        base = imitate(workloads, config, teacher_prompt_weight=teacher,
                       default_output_tokens=default_output_tokens, seed=seed)  # fmt: skip
        imitation.append(dict(base.info))
        search.descend(base)
    assert search.best is not None  # every teacher's descent scored at least one candidate
    objective, best = search.best
    metrics = {
        "objective": f"mean_e2e_s + {tail_weight:g} x p99_e2e_s",
        "train_objective": objective,
        "train_requests": sum(len(wl) for wl in workloads),
        "imitation": imitation,
        "search": search.tried,
    }
    return dataclasses.replace(best, metrics=metrics)


def gap_setup(gap: SjfGap, predictor: ComponentSpec | None) -> tuple[Workload, SimConfig]:
    """The workload and deployment of an :class:`~fairserve.experiments.studies.SjfGap`
    study (Gamma arrivals at its load, the policy as the engine's own queue) with
    ``predictor``: what training and the held-out comparison run on."""
    return gap.setup(predictor=predictor)
