"""The engine model one step at a time: every token of every request, explicitly.

``StepEngine`` follows the same vLLM v1 rules as ``engine.Engine`` (one token
budget per step, chunked prefill, paged KV cache with prefix caching,
recompute preemption, the waiting queue as a policy) but keeps each
sequence's token counts as plain numbers and runs every step: no aggregates,
no closed forms. That makes it

- the engine that streams: it reports every token as it is sampled
  (``on_token``) and can cancel a request mid-flight, which the simulated
  engine server (``engine_server.realtime``) needs to serve tokens in real
  time; the event-skipping ``Engine`` skips over tokens by design;
- the specification of the event-skipping ``Engine``: the tests run both on
  the same workloads and require the same per-request records
  (``SimConfig(reference=True)`` runs a whole simulation on it).

It costs one Python-level step per token of the longest request in a batch,
so it is for streaming and checking, not for long simulations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from fairserve.core.model import FAILED_AFTER_PROMPT, Outcome, Request
from fairserve.core.policies.base import Policy, ProgressAware
from fairserve.core.policies.fifo import FifoPolicy
from fairserve.metrics.records import NAN, RequestRecords
from fairserve.sim.config import EngineConfig
from fairserve.sim.cost import CostModel
from fairserve.sim.engine import (
    cdiv,
    kv_blocks,
    kv_tiers,
    load_time_s,
    tiered_step_s,
    unfit_reason,
)
from fairserve.sim.kvcache import BlockPool, CacheEntry, KVTier, check_tiers, prefix_match


class StepSeq:
    """A request's state, every count explicit."""

    __slots__ = (
        "cached_tokens",
        "computed",
        "decoding",
        "entries",
        "first_sched_s",
        "first_token_s",
        "hashed",
        "out",
        "preemptions",
        "req",
        "slice_out",
    )

    def __init__(self, req: Request) -> None:
        self.req = req
        self.out = 0
        self.slice_out = 0  # output tokens when it was last scheduled (the service quantum)
        self.computed = 0
        self.decoding = False  # past its (re)computation: one token a step
        self.entries: list[CacheEntry] = []
        self.hashed = 0
        self.first_sched_s = NAN
        self.first_token_s = NAN
        self.preemptions = 0
        # Prompt tokens served from the prefix cache at the first admission.
        self.cached_tokens: int | None = None

    @property
    def num_tokens(self) -> int:
        """Prompt plus the output sampled so far: what must be computed before the next sample."""
        return self.req.prompt_tokens + self.out


class StepEngine:
    """Per-step engine with the driver interface and the constructor of ``engine.Engine``.

    ``policy`` (default: FIFO) is the waiting queue: its order, ``requeue`` for
    preempted requests, its victims, ``on_finish`` and, when it ``charges``,
    the service given; ``charge_to`` is charged instead when given. Service is
    reported at the end of every step: decode tokens per tenant, then each
    prefill chunk.
    """

    def __init__(
        self,
        index: int,
        cost: CostModel,
        config: EngineConfig,
        records: RequestRecords,
        policy: Policy | None = None,
        *,
        charge_to: Policy | None = None,
    ) -> None:
        self.index = index
        self.cost = cost
        self.config = config
        self.records = records
        self.policy: Policy = policy if policy is not None else FifoPolicy()
        charged = charge_to if charge_to is not None else self.policy
        self._charged = charged if charged.charges else None
        self._progress: ProgressAware | None = None
        if getattr(self.policy, "progress_aware", False) is True:
            self._progress = cast(ProgressAware, self.policy)
        self.bs = config.block_size
        self.max_model_len = config.max_model_len or cost.model.max_model_len
        self.pool = BlockPool(kv_blocks(cost, config))
        self.tiers = self.pool.spill = kv_tiers(cost, config)  # as Engine
        self._load_s = 0.0
        self.gpu_hit_tokens = 0
        self.now = 0.0
        self.wake_s: float | None = None
        self.version = 0
        self.seqs: dict[Request, StepSeq] = {}  # every request the engine holds
        self.running: list[StepSeq] = []  # admission order
        self.scheduled: list[tuple[StepSeq, int]] = []
        self._tenant_prefill: dict[str, int] = {}  # prefill tokens per tenant, this step
        self.outstanding_tokens = 0  # prompt + max_tokens, as Engine
        self.predicted_tokens = 0
        self.waiting_prefill_tokens = 0
        self.steps = 0
        self.preemptions = 0
        self._starting = False
        # Live drivers (the simulated engine server) stream each token as it is
        # sampled: called with (request, tokens sampled so far).
        self.on_token: Callable[[Request, int], None] | None = None
        self.on_finish: Callable[[Request, int, float], None] | None = None

    # --- the public view ------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        """Requests queued in the engine, preempted ones included."""
        return len(self.policy)

    @property
    def num_running(self) -> int:
        """Requests in the batch."""
        return len(self.running)

    @property
    def num_decodes(self) -> int:
        """Running requests past their prefill."""
        return sum(1 for s in self.running if s.decoding)

    @property
    def decode_context_tokens(self) -> int:
        """KV tokens the decoding requests read per step."""
        return sum(s.computed + 1 for s in self.running if s.decoding)

    @property
    def queued_prefill_tokens(self) -> int:
        """Prefill tokens still to compute: queued requests and unfinished prefills."""
        running = sum(s.num_tokens - s.computed for s in self.running if not s.decoding)
        return self.waiting_prefill_tokens + running

    def prefix_match(
        self, hashes: tuple[int, ...], block_tokens: int, now: float
    ) -> tuple[int, int, int]:
        """Prompt tokens of the prefix cached here by tier (GPU, CPU, remote), as Engine."""
        if not self.config.enable_prefix_caching:
            return 0, 0, 0
        return prefix_match(self.pool, hashes, block_tokens)

    # --- the driver's interface ---------------------------------------------------------

    def add(self, req: Request, now: float) -> None:
        """A request reaches the engine."""
        reason = unfit_reason(req, self.max_model_len, self.bs, self.pool.total_blocks,
                              self.config.enable_prefix_caching)  # fmt: skip
        if reason is not None:
            self.records.add(
                req.id, req.tenant, self.index, Outcome.FAILED, req.arrival_s, NAN, NAN, now,
                req.prompt_tokens, 0, 0, 0, reason,
            )  # fmt: skip
            self.policy.on_finish(req, 0, now)
            if self.on_finish is not None:
                self.on_finish(req, 0, now)
            return
        self.seqs[req] = StepSeq(req)
        self.policy.push(req, now)
        self.waiting_prefill_tokens += req.prompt_tokens
        self.outstanding_tokens += req.prompt_tokens + (req.max_tokens or 0)
        self.predicted_tokens += req.prompt_tokens + (req.predicted_output_tokens or 0)
        if self.wake_s is None:
            self.now = now
            self._starting = True
            self.wake_s = now
            self.version += 1

    def advance(self) -> None:
        """Finish the step in flight, then plan the next one."""
        if self._starting:
            self._starting = False
        else:
            self._finish_step()
        self._plan()

    def cancel(self, req: Request, now: float) -> bool:
        """Drop ``req`` wherever it is (queued, preempted or running); free its KV blocks.

        A request cancelled during a step leaves that step's time unchanged (the
        GPU was already running it) but gets no token from it. The request is
        recorded as CANCELLED. Returns False if the engine does not hold it.
        """
        seq = self.seqs.pop(req, None)
        if seq is None:
            return False
        if self.policy.remove(req):
            self.waiting_prefill_tokens -= seq.num_tokens
        else:
            self._unschedule(seq)
            self._release(seq)
            self.running.remove(seq)
        self.outstanding_tokens -= req.prompt_tokens + (req.max_tokens or 0)
        self.predicted_tokens -= req.prompt_tokens + (req.predicted_output_tokens or 0)
        self.records.add(
            req.id, req.tenant, self.index, Outcome.CANCELLED, req.arrival_s,
            seq.first_sched_s, seq.first_token_s, now, req.prompt_tokens, seq.out,
            0 if seq.cached_tokens is None else seq.cached_tokens, seq.preemptions,
        )  # fmt: skip
        self.policy.on_finish(req, seq.out, now)
        return True

    # --- planning one step ------------------------------------------------------------

    def _plan(self) -> None:
        self.version += 1
        if not self.running and not self.num_waiting:
            self.wake_s = None
            return
        progress = self._progress
        if progress is not None and progress.preempts and self.num_waiting:
            self._preempt_for_shorter(progress)
        quantum = self.config.service_quantum_tokens
        if quantum is not None and self.num_waiting:
            self._yield_quantum(quantum)
        budget = self._schedule_running()
        if budget is not None:
            self._schedule_waiting(budget)
        if not self.scheduled:
            assert budget is None, "a planned step with nothing to run"
            # Every request the running loop reached was preempted: the step is
            # empty and over at once (as in vLLM); the next one is planned now.
            self._plan()
            return
        tokens = kv = pairs = chunks = 0
        for seq, n in self.scheduled:
            tokens += n
            chunks += not seq.decoding
            kv += seq.computed + n
            pairs += n * seq.computed + n * (n + 1) // 2
        # The cost model depends on prefill tokens + decode sequences only through their sum.
        dt = self.cost.step_time_s(tokens, 0, kv, pairs, len(self.scheduled), chunks)
        if self._load_s:  # KV brought back from lower tiers, under the compute
            dt = tiered_step_s(dt, self._load_s, self.cost.model.num_layers)
            self._load_s = 0.0
        self.wake_s = self.now + dt

    def _blocked_head(self) -> StepSeq | None:
        """The waiting head when it cannot be scheduled for want of a seat or KV blocks."""
        head_req = self.policy.peek(self.now)
        if head_req is None:
            return None
        head = self.seqs[head_req]
        chunk = min(head.num_tokens, self.config.max_num_batched_tokens)
        if len(self.running) >= self.config.max_num_seqs:
            return head
        return head if cdiv(chunk, self.bs) > self.pool.free_blocks else None

    def _preempt_for_shorter(self, progress: ProgressAware) -> None:
        """As ``Engine._preempt_for_shorter``: a blocked head with less work preempts."""
        while True:
            head = self._blocked_head()
            if head is None or not self.running:
                return
            victim, most = self.running[0], -1.0
            for seq in self.running:
                uncomputed = 0 if seq.decoding else seq.num_tokens - seq.computed
                work = progress.remaining(seq.req, seq.out, uncomputed)
                if work >= most:
                    victim, most = seq, work
            if not progress.remaining(head.req, head.out, head.num_tokens) < most:
                return
            self._preempt(victim)

    def _yield_quantum(self, quantum: int) -> None:
        """As ``Engine._yield_quantum``: decodes past their quantum yield to a blocked head
        the policy keeps before them."""
        while True:
            head = self._blocked_head()
            if head is None:
                return
            expired = [s for s in self.running if s.decoding and s.out - s.slice_out >= quantum]
            if not expired:
                return
            victim = self.policy.pick_victim([*(s.req for s in expired), head.req], self.now)
            if victim is head.req:
                return
            self._preempt(next(s for s in expired if s.req is victim), in_order=True)

    def _schedule_running(self) -> int | None:
        """The running loop; returns the budget left, or None if it preempted."""
        pool = self.pool
        budget = self.config.max_num_batched_tokens
        self.scheduled = []
        self._tenant_prefill.clear()
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_tokens - seq.computed, budget)
            if not seq.decoding:
                n = self._tenant_room(seq, n)
                if n <= 0:
                    i += 1
                    continue
            need = cdiv(seq.computed + n, self.bs) - cdiv(seq.computed, self.bs)
            ok = True
            while need > pool.free_blocks:
                victim_req = self.policy.pick_victim([s.req for s in self.running], self.now)
                victim = self.seqs[victim_req]
                v_index = self.running.index(victim)
                back = self._unschedule(victim)
                budget += back
                if not victim.decoding:
                    self._tenant_took(victim, -back)
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    ok = False
                    break
                if v_index < i:
                    i -= 1
            if not ok:
                break
            pool.allocate(need)
            self.scheduled.append((seq, n))
            if not seq.decoding:
                self._tenant_took(seq, n)
            budget -= n
            i += 1
        return None if preempted else budget

    def _tenant_room(self, seq: StepSeq, tokens: int) -> int:
        """``tokens`` cut to what ``seq``'s tenant may still prefill in this step."""
        cap = self.config.max_tenant_prefill_tokens
        if cap is None:
            return tokens
        return min(tokens, cap - self._tenant_prefill.get(seq.req.tenant, 0))

    def _tenant_took(self, seq: StepSeq, tokens: int) -> None:
        tenant = seq.req.tenant
        self._tenant_prefill[tenant] = self._tenant_prefill.get(tenant, 0) + tokens

    def _unschedule(self, seq: StepSeq) -> int:
        """Take ``seq`` out of the step being planned; the budget it had."""
        for j, (s, n) in enumerate(self.scheduled):
            if s is seq:  # its blocks for this step were allocated at planning
                del self.scheduled[j]
                self.pool.release(cdiv(s.computed + n, self.bs) - cdiv(s.computed, self.bs))
                return n
        return 0

    def _schedule_waiting(self, budget: int) -> None:
        pool = self.pool
        while budget > 0 and len(self.running) < self.config.max_num_seqs:
            head = self.policy.peek(self.now)
            if head is None:
                break
            seq = self.seqs[head]
            hits: list[CacheEntry] = []
            touch = 0
            loads: list[tuple[int, KVTier]] = []
            hashes = seq.req.prefix_hashes
            pbt = seq.req.prefix_block_tokens
            if hashes and self.config.enable_prefix_caching:
                stop = (seq.num_tokens - 1) // pbt
                hits, touch = pool.lookup(hashes, stop)
                if self.tiers is not None and len(hits) < stop:
                    more, more_touch, loads = pool.lookup_below(hashes, len(hits), stop)
                    hits, touch = hits + more, touch + more_touch
            runs = len(hits) + len(loads)
            cached = runs * pbt
            n = self._tenant_room(seq, min(seq.num_tokens - cached, budget))
            if n <= 0:
                break  # its tenant used its prefill tokens of this step
            need = cdiv(cached + n, self.bs) - cached // self.bs
            loaded_blocks = len(loads) * (pbt // self.bs)  # new GPU blocks for the loads
            if need + touch + loaded_blocks > pool.free_blocks:
                break
            popped = self.policy.pop(self.now)
            assert popped is head, "the policy's pop differs from its peek"
            self.waiting_prefill_tokens -= seq.num_tokens
            self._take_cached(seq, hits, loads, runs)
            pool.allocate(need)
            seq.computed = cached
            if seq.cached_tokens is None:
                seq.cached_tokens = cached
                seq.first_sched_s = self.now
            seq.slice_out = seq.out
            self.running.append(seq)
            self.scheduled.append((seq, n))
            self._tenant_took(seq, n)
            budget -= n

    def _take_cached(
        self, seq: StepSeq, hits: list[CacheEntry], loads: list[tuple[int, KVTier]], runs: int
    ) -> None:
        """Reference the prefix's GPU hits; bring the runs found in lower tiers back into
        new GPU blocks, their transfer time added to the step being planned."""
        pool = self.pool
        pool.acquire(hits)
        first = seq.cached_tokens is None
        if self.tiers is not None and first:
            self.gpu_hit_tokens += len(hits) * seq.req.prefix_block_tokens
        if loads:
            assert seq.req.prefix_hashes is not None
            self._load_s += load_time_s(loads, pool.bring_back(loads), first, self.bs)
            seq.entries = pool.held(seq.req.prefix_hashes, runs)
        else:
            seq.entries = list(hits)
        seq.hashed = runs

    # --- finishing a step -------------------------------------------------------------

    def _finish_step(self) -> None:
        assert self.wake_s is not None
        self.now = self.wake_s
        self.steps += 1
        self._charge()
        for seq, n in self.scheduled:
            seq.computed += n
            self._register_prefix(seq)
            if seq.computed == seq.num_tokens:
                self._sample(seq)
        self.scheduled = []

    def _charge(self) -> None:
        """Report the step's service: decode tokens per tenant, then each prefill chunk."""
        charged = self._charged
        if charged is None:
            return
        decodes: dict[str, int] = {}
        for seq, _ in self.scheduled:
            if seq.decoding:
                decodes[seq.req.tenant] = decodes.get(seq.req.tenant, 0) + 1
        for tenant, count in decodes.items():
            charged.on_served(tenant, 0, count, self.now)
        for seq, n in self.scheduled:
            if not seq.decoding:
                charged.on_served(seq.req.tenant, n, 0, self.now)

    def _register_prefix(self, seq: StepSeq) -> None:
        hashes = seq.req.prefix_hashes
        if not hashes or not self.config.enable_prefix_caching:
            return
        pbt = seq.req.prefix_block_tokens
        full = min(len(hashes), seq.computed // pbt)
        for k in range(seq.hashed, full):
            entry = self.pool.register(hashes[k], pbt // self.bs)
            if entry is not None:
                seq.entries.append(entry)
        seq.hashed = max(seq.hashed, full)

    def _sample(self, seq: StepSeq) -> None:
        """``seq`` computed all its tokens: it samples the next one."""
        if seq.req.fails:  # served its prompt, then failed: no token comes out
            self._complete(seq, Outcome.FAILED)
            return
        seq.out += 1
        seq.decoding = True
        if seq.out == 1:
            seq.first_token_s = self.now
        if self.on_token is not None:
            self.on_token(seq.req, seq.out)
        if seq.out == seq.req.output_tokens:
            self._complete(seq)

    # --- endings ------------------------------------------------------------------------

    def _release(self, seq: StepSeq) -> None:
        shared = sum(e.blocks for e in seq.entries)
        self.pool.release(cdiv(seq.computed, self.bs) - shared)
        self.pool.release_entries(seq.entries)
        seq.entries = []
        seq.hashed = 0

    def _complete(self, seq: StepSeq, outcome: Outcome = Outcome.COMPLETED) -> None:
        self._release(seq)
        self.running.remove(seq)
        req = seq.req
        del self.seqs[req]
        self.outstanding_tokens -= req.prompt_tokens + (req.max_tokens or 0)
        self.predicted_tokens -= req.prompt_tokens + (req.predicted_output_tokens or 0)
        assert seq.cached_tokens is not None, "a completed request was admitted"
        self.records.add(
            req.id, req.tenant, self.index, outcome, req.arrival_s,
            seq.first_sched_s, seq.first_token_s, self.now, req.prompt_tokens, seq.out,
            seq.cached_tokens, seq.preemptions,
            None if outcome is Outcome.COMPLETED else FAILED_AFTER_PROMPT,
        )  # fmt: skip
        self.policy.on_finish(req, seq.out, self.now)
        if self.on_finish is not None:
            self.on_finish(req, seq.out, self.now)

    def _preempt(self, seq: StepSeq, in_order: bool = False) -> None:
        self._release(seq)
        self.running.remove(seq)
        seq.computed = 0
        seq.decoding = False
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting_prefill_tokens += seq.num_tokens
        progress = self._progress
        if progress is not None:
            progress.requeue_progress(seq.req, seq.out, seq.num_tokens, self.now)
        elif in_order:
            self.policy.push(seq.req, self.now)  # it yielded: where the policy orders it
        else:
            self.policy.requeue(seq.req, self.now)

    # --- inspection ---------------------------------------------------------------------

    def check(self) -> None:
        """Assert the engine's invariants (tests)."""
        check_tiers(self.pool)
        assert len(self.seqs) == len(self.running) + self.num_waiting
        held = 0
        for seq in self.running:
            private = cdiv(seq.computed, self.bs) - sum(e.blocks for e in seq.entries)
            assert private >= 0, (private, seq.req.id)
            held += private
        held += sum({id(e): e.blocks for s in self.running for e in s.entries}.values())
        # Blocks allocated for the step in flight are held but not yet computed.
        assert held <= self.pool.used_blocks, (held, self.pool.used_blocks)
