"""One simulated LLM serving engine, with vLLM v1 scheduling semantics.

Each step draws from one token budget (``max_num_batched_tokens``) under a cap
of ``max_num_seqs``: running requests first, in admission order (a decode
takes one token, an unfinished prefill takes the rest of the budget: chunked
prefill), then waiting ones in the waiting queue's order while budget,
sequence slots and KV blocks last. When a running request needs a KV block
and none is free, a victim is preempted, its blocks freed, and it goes back
to the waiting queue to be recomputed from scratch (prefix-cache hits aside);
no waiting request is admitted in a step that preempted. Optional KV tiers
behind the GPU (``EngineConfig.cpu_kv_cache_gb``) keep the prefix blocks it
evicts; a request admitted with prefix runs from a tier loads them into GPU
blocks, and the step that admits it is priced with the transfer under its
compute (``tiered_step_s``, docs/simulator.md "KV tiers").

The waiting queue is the engine's policy (the "engine" placement: order,
victim and charging in one object, see ``core.policies.base``) or, without
one, first come first served on a plain deque (the fast path of the
"gateway" placement, with vLLM's choice of victim: the most recently
admitted request).

**Event skipping.** Decoding sequences are not stored one by one but as
aggregates of the step counter ``g`` (``decodeset.DecodeSet``). A step that
only decodes is therefore extended, in closed form, to a run of k steps that
ends at the next completion or just before the KV cache would run out; an
arrival mid-run cuts the run at the first step boundary after it. The work
grows with events (arrivals, completions, prefill chunks, preemptions), not
with tokens. ``stepper.StepEngine`` runs the same rules one step at a time;
the tests require both to give the same records.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import cast

from fairserve.core.model import FAILED_AFTER_PROMPT, Outcome, Request
from fairserve.core.policies.base import Policy, ProgressAware
from fairserve.metrics.records import NAN, RequestRecords
from fairserve.sim.config import EngineConfig
from fairserve.sim.cost import CostModel, DecodeLine
from fairserve.sim.decodeset import DecodeSet
from fairserve.sim.kvcache import BlockPool, CacheEntry, KVTier, check_tiers, prefix_match
from fairserve.sim.sequence import Seq, SeqStatus


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for integers."""
    return -(-a // b)


_NO_HITS: list[CacheEntry] = []  # shared, never mutated
_NO_LOADS: list[tuple[int, KVTier]] = []  # shared, never mutated


def unfit_reason(
    req: Request, max_model_len: int, block_size: int, total_blocks: int, prefix_caching: bool
) -> str | None:
    """Why ``req`` can never run on an engine of this shape, or None if it can."""
    if req.prompt_tokens < 1 or req.output_tokens < 1 or not req.arrival_s >= 0:
        return req.problem()
    total = req.prompt_tokens + req.output_tokens
    if total > max_model_len:
        return f"prompt_tokens + output_tokens = {total} exceeds max_model_len {max_model_len}"
    blocks = cdiv(total - 1, block_size)
    if blocks > total_blocks:
        return f"needs {blocks} KV blocks; the engine has {total_blocks}"
    if prefix_caching and req.prefix_hashes and req.prefix_block_tokens % block_size:
        return (
            f"prefix_block_tokens {req.prefix_block_tokens} is not a multiple of "
            f"block_size {block_size}"
        )
    return None


def kv_blocks(cost: CostModel, config: EngineConfig) -> int:
    """The engine's KV capacity in blocks: the override, else what the GPU holds."""
    return config.num_gpu_blocks or cost.kv_cache_blocks(
        config.block_size,
        config.gpu_memory_utilization,
        config.max_num_batched_tokens,
        config.max_num_seqs,
    )


def kv_tiers(cost: CostModel, config: EngineConfig) -> KVTier | None:
    """The KV tiers behind an engine's GPU pool (the CPU tier, the remote one below it),
    sized in blocks of this model's KV; None when none is configured."""
    if config.cpu_kv_cache_gb is None:
        return None
    block_bytes = cost.model.kv_bytes_per_token(cost.tp) * config.block_size
    remote = None
    if config.remote_kv_cache_gb is not None:
        remote = KVTier(
            "remote",
            int(config.remote_kv_cache_gb * 1e9 // block_bytes),
            block_bytes,
            config.remote_kv_bandwidth_gb_s * 1e9,
            config.remote_kv_latency_s,
        )
    return KVTier(
        "cpu",
        int(config.cpu_kv_cache_gb * 1e9 // block_bytes),
        block_bytes,
        config.cpu_kv_bandwidth_gb_s * 1e9,
        lower=remote,
    )


def tiered_step_s(compute_s: float, load_s: float, num_layers: int) -> float:
    """A step that also loads ``load_s`` of KV from lower tiers: the loads run layer by
    layer under the compute (layer l's KV arrives while layer l - 1 computes), so the
    step takes the longer of the two plus one layer's load before the first layer."""
    return max(compute_s, load_s) + load_s / num_layers


def load_time_s(
    loads: list[tuple[int, KVTier]], blocks: int, first: bool, block_size: int
) -> float:
    """Seconds to bring one request's ``loads`` (``blocks`` blocks in all, runs of one
    size) up: one transfer per tier, the tiers one after another. Each tier counts its
    seconds and, at the request's ``first`` admission, the prompt tokens it served."""
    run_blocks = blocks // len(loads)
    load_s = 0.0
    for tier in {id(t): t for _, t in loads}.values():  # in the order first met
        tier_blocks = run_blocks * sum(1 for _, t in loads if t is tier)
        seconds = tier.load_s(tier_blocks)
        tier.transfer_s += seconds
        if first:
            tier.hit_tokens += tier_blocks * block_size
        load_s += seconds
    return load_s


class Engine:
    """A simulated engine instance: paged KV cache, continuous batching, preemption.

    The driver calls ``add`` when a request reaches this engine and ``advance``
    at ``wake_s``, the time of the engine's next step boundary with work to do
    (``None`` when idle). ``on_finish(req, output_tokens, now)`` is called once
    per request that ends here.

    ``policy``: the engine's own waiting queue (engine placement). It orders
    the queue, takes preempted requests back (``requeue``), chooses the victims,
    hears ``on_finish`` and, if it ``charges``, the service given here. Without
    one the queue is first come first served (the fast path).
    ``charge_to``: a policy outside the engine (the gateway's global queue)
    charged for the service given here instead of ``policy``. Charges are
    aggregated per tenant between two scheduling decisions (exact for any
    decision taken at those points).
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
        self.policy = policy
        self.bs = config.block_size
        self.max_model_len = config.max_model_len or cost.model.max_model_len
        self.pool = BlockPool(kv_blocks(cost, config))
        self.prefix_caching = config.enable_prefix_caching
        # KV tiers behind the pool (None: GPU only), the seconds of transfer the step being
        # planned loads, and prompt tokens the GPU served at first admissions (with tiers).
        self.tiers = self.pool.spill = kv_tiers(cost, config)
        self._load_s = 0.0
        self.gpu_hit_tokens = 0
        # time and steps
        self.now = 0.0
        self.g = 0
        self.wake_s: float | None = None
        self.version = 0
        # The waiting queue: the policy, its requests' sequences kept here; or a
        # plain FCFS deque of sequences when there is no policy.
        self._fcfs: deque[Seq] = deque()
        self._waiting: dict[Request, Seq] = {}
        self.running: dict[int, Seq] = {}  # admission order
        self.prefilling: list[Seq] = []  # running sequences still in prefill (running order)
        self._paused: list[Seq] = []  # decodes left out of the step in flight
        charged = charge_to if charge_to is not None else policy
        self._charged = charged if charged is not None and charged.charges else None
        # A queue ordered by remaining work, told each sequence's progress (preemptive SRPT).
        self._progress: ProgressAware | None = None
        if policy is not None and getattr(policy, "progress_aware", False) is True:
            self._progress = cast(ProgressAware, policy)
        self._preempts = self._progress is not None and self._progress.preempts is True
        # The service quantum: only a queue with a policy can put another request first.
        self._quantum = config.service_quantum_tokens if policy is not None else None
        self.decodes = DecodeSet(self.bs, per_tenant=self._charged is not None)
        # the work in flight: one detailed step, or a run of decode steps
        self._batch: list[tuple[Seq, int]] = []
        self._line: DecodeLine | None = None
        self._run_steps = 0  # steps in the decode run in flight
        self._run_charged = 0  # of them, steps already reported to the charged policy
        self._run_allocated = 0  # ... blocks already taken for them (``prefix_match``)
        self._run_t0 = 0.0
        self._step_end = 0.0
        self._starting = False  # woken from idle: the first step is planned at wake_s
        self._budget = 0
        self._tenant_prefill: dict[str, int] = {}  # prefill tokens per tenant, this step
        self._head_blocked = False  # the waiting head did not fit in the KV cache
        self._head_touches_cache = False  # ... and has evictable hits
        # Load as a router could know it: prompt + max_tokens (0 when unset), and
        # prompt + predicted output, of the requests assigned and not finished.
        self.outstanding_tokens = 0
        self.predicted_tokens = 0
        self.waiting_prefill_tokens = 0  # tokens to prefill of the queued requests
        self.steps = 0
        self.preemptions = 0
        self.prefill_tokens = 0
        self.busy_s = 0.0
        self.kv_block_s = 0.0  # integral of used blocks over time
        self.kv_peak_blocks = 0
        self._admissions = 0
        self.on_finish: Callable[[Request, int, float], None] | None = None

    # --- the public view ------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        """Requests queued in the engine (not running), preempted ones included."""
        return len(self._fcfs) if self.policy is None else len(self.policy)

    @property
    def num_running(self) -> int:
        """Requests holding KV blocks and scheduled each step."""
        return len(self.running)

    @property
    def num_decodes(self) -> int:
        """Running requests past their prefill."""
        return self.decodes.count

    @property
    def decode_context_tokens(self) -> int:
        """KV tokens the decoding requests read per step (as of the last step boundary)."""
        return self.decodes.kv_tokens(self.g)

    @property
    def queued_prefill_tokens(self) -> int:
        """Prefill tokens still to compute: queued requests and unfinished prefills."""
        return self.waiting_prefill_tokens + sum(s.todo - s.computed for s in self.prefilling)

    def prefix_match(
        self, hashes: tuple[int, ...], block_tokens: int, now: float
    ) -> tuple[int, int, int]:
        """Prompt tokens of the prefix ``hashes`` names cached here, by tier: (GPU, CPU,
        remote), as of ``now`` (routers read it)."""
        if not self.prefix_caching:
            return 0, 0, 0
        if self._line is not None:
            self._allocate_run_until(now)
        return prefix_match(self.pool, hashes, block_tokens)

    def _allocate_run_until(self, now: float) -> None:
        """Take the KV blocks of the steps of the decode run in flight planned by ``now``.

        A run takes its blocks when it ends; a step-by-step engine takes them step
        by step, evicting cached blocks (into the tiers) as it goes. Whoever reads
        the cache mid-run must see those evictions, so they are made now: the
        same blocks, in the same LRU order, only earlier.
        """
        assert self._line is not None
        planned = min(max(1, self._line.steps_to_reach(now - self._run_t0)), self._run_steps)
        need = self.decodes.blocks_between(self.g, planned) - self._run_allocated
        if need > 0:
            self.pool.allocate(need)
            self._run_allocated += need

    # --- the driver's interface ---------------------------------------------------------

    def add(self, req: Request, now: float) -> None:
        """A request reaches this engine at ``now``."""
        reason = unfit_reason(req, self.max_model_len, self.bs, self.pool.total_blocks,
                              self.prefix_caching)  # fmt: skip
        if reason is not None:
            self._fail(req, now, reason)
            return
        seq = Seq(req)
        if self.policy is None:
            self._fcfs.append(seq)
        else:
            if self._line is not None and self._charged is self.policy:
                self._charge_run_until(now)
            self._waiting[req] = seq
            self.policy.push(req, now)
        self.waiting_prefill_tokens += req.prompt_tokens
        self.outstanding_tokens += req.prompt_tokens + (req.max_tokens or 0)
        self.predicted_tokens += req.prompt_tokens + (req.predicted_output_tokens or 0)
        if self.wake_s is None:
            # Plan at a wake event, not here, so that every request arriving at
            # this same instant is in the first step.
            self.now = now
            self._starting = True
            self._line = None
            self.wake_s = now
            self.version += 1
        elif self._line is not None and now < self.wake_s:
            self._cut_run(now)

    def advance(self) -> None:
        """Finish the work in flight (it ends at ``wake_s``) and plan the next."""
        if self._starting:
            self._starting = False
        elif self._line is not None:
            self._finish_run()
        else:
            self._finish_step()
        self._plan()

    def _fail(self, req: Request, now: float, reason: str) -> None:
        self.records.add(
            req.id, req.tenant, self.index, Outcome.FAILED, req.arrival_s, NAN, NAN, now,
            req.prompt_tokens, 0, 0, 0, reason,
        )  # fmt: skip
        if self.policy is not None:
            self.policy.on_finish(req, 0, now)
        if self.on_finish is not None:
            self.on_finish(req, 0, now)

    # --- the waiting queue ----------------------------------------------------------------

    def _waiting_head(self) -> Seq | None:
        """The sequence the waiting queue serves next."""
        if self.policy is None:
            return self._fcfs[0] if self._fcfs else None
        req = self.policy.peek(self.now)
        return None if req is None else self._waiting[req]

    def _take_waiting_head(self, seq: Seq) -> None:
        """Remove ``seq``, the head just looked at, from the waiting queue."""
        if self.policy is None:
            self._fcfs.popleft()
            return
        req = self.policy.pop(self.now)
        assert req is seq.req, "the policy's pop differs from its peek"
        del self._waiting[req]

    def _requeue(self, seq: Seq, in_order: bool) -> None:
        """A preempted sequence goes back to the waiting queue: at its front (FCFS and
        ``requeue``), or where the policy orders it (``in_order``: it yielded)."""
        if self.policy is None:
            self._fcfs.appendleft(seq)
            return
        self._waiting[seq.req] = seq
        if self._progress is not None:
            self._progress.requeue_progress(seq.req, seq.out, seq.todo, self.now)
        elif in_order:
            self.policy.push(seq.req, self.now)
        else:
            self.policy.requeue(seq.req, self.now)

    def _blocked(self, head: Seq) -> bool:
        """Whether the waiting head cannot be scheduled for want of a seat or KV blocks."""
        chunk = min(head.todo, self.config.max_num_batched_tokens)
        return len(self.running) >= self.config.max_num_seqs or (
            cdiv(chunk, self.bs) > self.pool.free_blocks
        )

    def _yield_quantum(self, quantum: int) -> None:
        """Decoding requests past their quantum yield to a blocked waiting head that the
        policy would keep before them (its ``pick_victim`` names one of them, not the head)."""
        assert self.policy is not None
        g = self.g
        while True:
            head = self._waiting_head()
            if head is None or not self._blocked(head):
                return
            expired = [seq for seq in self.running.values()
                       if seq.status is SeqStatus.DECODE and seq.out_at(g) - seq.slice_out >= quantum]  # fmt: skip
            if not expired:
                return
            victim = self.policy.pick_victim([*(seq.req for seq in expired), head.req], self.now)
            if victim is head.req:
                return
            self._preempt(next(seq for seq in expired if seq.req is victim), in_order=True)

    def _quantum_steps(self, steps: int, quantum: int) -> int:
        """A decode run ends where a request's quantum runs out; once one has, the head is
        looked at after every step, as a step-by-step scheduler would (the policy's
        choice of victim moves as the decodes are charged, and the head may become
        blocked as the decodes take KV blocks)."""
        g = self.g
        for seq in self.running.values():
            if seq.status is SeqStatus.DECODE:
                left = seq.slice_out + quantum - seq.out_at(g)
                if left <= 0:
                    return 1
                if left < steps:
                    steps = left
        return steps

    def _preempt_for_shorter(self, progress: ProgressAware) -> None:
        """Preempt running requests with more remaining work than a blocked waiting head."""
        while True:
            head = self._waiting_head()
            if head is None or not self._blocked(head):
                return
            victim: Seq | None = None
            most = -1.0
            for seq in self.running.values():  # admission order: the latest wins ties
                decoding = seq.status is SeqStatus.DECODE
                out = seq.out_at(self.g) if decoding else seq.out
                work = progress.remaining(seq.req, out, 0 if decoding else seq.todo - seq.computed)
                if work >= most:
                    victim, most = seq, work
            if victim is None or not progress.remaining(head.req, head.out, head.todo) < most:
                return
            self._preempt(victim)

    def _victim(self, order: list[Seq]) -> Seq:
        """The running sequence to preempt (FCFS: the most recently admitted, as vLLM)."""
        if self.policy is None:
            return order[-1]
        req = self.policy.pick_victim([s.req for s in order], self.now)
        return next(s for s in order if s.req is req)

    # --- planning: one detailed step or a run of decode steps -------------------------

    def _plan(self) -> None:
        if not self.running and not self.num_waiting:
            self.wake_s = None
            self.version += 1
            return
        if self._preempts and self.num_waiting:
            assert self._progress is not None
            self._preempt_for_shorter(self._progress)
        if self._quantum is not None and self.num_waiting:
            self._yield_quantum(self._quantum)
        preempted = self._schedule_running()
        if not preempted:
            self._schedule_waiting()
        elif not self._batch and not self.decodes.count:
            # Every request the running loop reached was preempted: the step is
            # empty and over at once (as in vLLM); the next one is planned now.
            self._resume_paused()
            self._plan()
            return
        if not self._batch and not preempted and self.decodes.count:
            self._start_run()
        else:
            self._start_step()
        self.version += 1

    def _tenant_room(self, seq: Seq, chunk: int) -> int:
        """``chunk`` cut to what ``seq``'s tenant may still prefill in this step."""
        cap = self.config.max_tenant_prefill_tokens
        if cap is None:
            return chunk
        return min(chunk, cap - self._tenant_prefill.get(seq.req.tenant, 0))

    def _tenant_took(self, seq: Seq, tokens: int) -> None:
        if self.config.max_tenant_prefill_tokens is not None:
            tenant = seq.req.tenant
            self._tenant_prefill[tenant] = self._tenant_prefill.get(tenant, 0) + tokens

    def _schedule_running(self) -> bool:
        """Give every running sequence its tokens; True if a preemption was needed."""
        pool, decodes = self.pool, self.decodes
        need = decodes.residue_count[self.g % self.bs]  # DecodeSet.blocks_at, inlined
        budget = self.config.max_num_batched_tokens - decodes.count
        batch = self._batch
        batch.clear()
        capped = self.config.max_tenant_prefill_tokens is not None
        if capped:
            self._tenant_prefill.clear()
        for seq in self.prefilling:
            chunk = min(seq.todo - seq.computed, budget)
            if capped:
                chunk = self._tenant_room(seq, chunk)
            if chunk <= 0:
                continue
            if capped:
                self._tenant_took(seq, chunk)
            need += cdiv(seq.computed + chunk, self.bs) - cdiv(seq.computed, self.bs)
            batch.append((seq, chunk))
            budget -= chunk
        if need <= pool.free_blocks:
            if need:
                pool.allocate(need)
            self._budget = budget
            return False
        batch.clear()
        if capped:
            self._tenant_prefill.clear()
        return self._schedule_running_exact()

    def _schedule_running_exact(self) -> bool:
        """vLLM's running loop with preemption, one sequence at a time (rare path)."""
        pool, bs, g = self.pool, self.bs, self.g
        order = list(self.running.values())
        budget = self.config.max_num_batched_tokens
        granted: dict[Seq, int] = {}  # seq -> blocks allocated this step
        tokens: dict[Seq, int] = {}
        i = 0
        while i < len(order) and budget > 0:
            seq = order[i]
            if seq.status is SeqStatus.DECODE:
                n_tok = 1
                blocks = 1 if (g - seq.residue) % bs == 0 else 0
            else:
                n_tok = self._tenant_room(seq, min(seq.todo - seq.computed, budget))
                if n_tok <= 0:
                    i += 1
                    continue
                blocks = cdiv(seq.computed + n_tok, bs) - cdiv(seq.computed, bs)
            scheduled = True
            while blocks > pool.free_blocks:
                victim = self._victim(order)
                v_index = order.index(victim)
                order.pop(v_index)
                pool.release(granted.pop(victim, 0))
                back = tokens.pop(victim, 0)
                budget += back
                if victim.status is not SeqStatus.DECODE:
                    self._tenant_took(victim, -back)
                self._preempt(victim)
                if victim is seq:
                    scheduled = False
                    break
                if v_index < i:
                    i -= 1
            if not scheduled:
                break
            pool.allocate(blocks)
            granted[seq] = blocks
            tokens[seq] = n_tok
            if seq.status is not SeqStatus.DECODE:
                self._tenant_took(seq, n_tok)
            budget -= n_tok
            i += 1
        # Decodes left out of this step (after the loop ended) do not advance:
        # they leave the decode set until the step is over.
        for seq in order:
            if seq.status is SeqStatus.DECODE and seq not in tokens:
                seq.computed, seq.out = self.decodes.leave(seq, g)
                seq.status = SeqStatus.PAUSED
                self._paused.append(seq)
        self._batch = [(s, n) for s, n in tokens.items() if s.status is SeqStatus.PREFILL]
        self._budget = budget
        return True

    def _schedule_waiting(self) -> None:
        """Admit waiting requests while budget, sequence slots and KV blocks last."""
        budget = self._budget
        self._head_blocked = self._head_touches_cache = False
        if budget <= 0 or not (self._fcfs or self._waiting):
            return  # nothing waiting: the common case, checked without a call
        pool, bs, max_seqs = self.pool, self.bs, self.config.max_num_seqs
        capped = self.config.max_tenant_prefill_tokens is not None
        while budget > 0 and len(self.running) < max_seqs:
            seq = self._waiting_head()
            if seq is None:
                break
            hits, touch = self._lookup(seq)
            loads = _NO_LOADS
            if self.tiers is not None and seq.req.prefix_hashes:
                hits, touch, loads = self._lookup_tiers(seq, hits, touch)
            runs = len(hits) + len(loads)
            cached = runs * seq.req.prefix_block_tokens if runs else 0
            chunk = min(seq.todo - cached, budget)
            if capped:
                chunk = self._tenant_room(seq, chunk)
                if chunk <= 0:
                    break  # its tenant used its prefill tokens of this step
            new_blocks = cdiv(cached + chunk, bs) - cached // bs
            if loads:  # runs brought back from a lower tier take new GPU blocks
                touch += len(loads) * (seq.req.prefix_block_tokens // bs)
            if new_blocks + touch > pool.free_blocks:
                self._head_blocked = True
                # Evictions change what it would reuse (a GPU hit moves down a tier, a
                # tier's run is pushed out), which can make it fit later.
                self._head_touches_cache = touch > 0
                break
            self._take_waiting_head(seq)
            self.waiting_prefill_tokens -= seq.todo
            if loads:
                self._bring_back(seq, hits, loads, runs)
            elif hits:
                pool.acquire(hits)
                seq.entries = hits
                seq.shared_blocks = cached // bs
                seq.hashed = len(hits)
                if self.tiers is not None and seq.cached_tokens is None:
                    self.gpu_hit_tokens += cached
            pool.allocate(new_blocks)
            self._admit(seq, cached)
            self._batch.append((seq, chunk))
            if capped:
                self._tenant_took(seq, chunk)
            budget -= chunk
        self._budget = budget

    def _lookup(self, seq: Seq) -> tuple[list[CacheEntry], int]:
        hashes = seq.req.prefix_hashes
        if not hashes or not self.prefix_caching:
            return _NO_HITS, 0
        # At least one token is always computed (vLLM caps the hit below num_tokens).
        max_entries = (seq.todo - 1) // seq.req.prefix_block_tokens
        return self.pool.lookup(hashes, max_entries)

    def _lookup_tiers(
        self, seq: Seq, hits: list[CacheEntry], touch: int
    ) -> tuple[list[CacheEntry], int, list[tuple[int, KVTier]]]:
        """A prefix lookup that walks on past the GPU hits into the tiers below."""
        hashes = seq.req.prefix_hashes
        assert hashes is not None
        stop = (seq.todo - 1) // seq.req.prefix_block_tokens
        if len(hits) >= stop:
            return hits, touch, _NO_LOADS
        more, more_touch, loads = self.pool.lookup_below(hashes, len(hits), stop)
        if not loads:  # the walk ended at the first GPU miss, as the plain lookup did
            return hits, touch, _NO_LOADS
        return [*hits, *more], touch + more_touch, loads

    def _bring_back(
        self, seq: Seq, hits: list[CacheEntry], loads: list[tuple[int, KVTier]], runs: int
    ) -> None:
        """Admit ``seq`` with prefix runs from lower tiers: reference its GPU hits, load the
        rest into new GPU blocks and add their transfer time to the step being planned."""
        hashes = seq.req.prefix_hashes
        assert hashes is not None
        pool = self.pool
        pool.acquire(hits)
        first = seq.cached_tokens is None
        self._load_s += load_time_s(loads, pool.bring_back(loads), first, self.bs)
        if first:
            self.gpu_hit_tokens += len(hits) * seq.req.prefix_block_tokens
        seq.entries = pool.held(hashes, runs)
        seq.shared_blocks = runs * seq.req.prefix_block_tokens // self.bs
        seq.hashed = runs

    def _admit(self, seq: Seq, cached: int) -> None:
        seq.status = SeqStatus.PREFILL
        seq.computed = cached
        self._admissions += 1
        seq.admit_no = self._admissions
        seq.slice_out = seq.out
        if seq.cached_tokens is None:
            seq.cached_tokens = cached
            seq.first_sched_s = self.now
        self.running[id(seq)] = seq
        self.prefilling.append(seq)

    def _start_step(self) -> None:
        """Price one detailed step from its composition."""
        b = self.decodes.count
        kv = self.decodes.kv_base + b * self.g if b else 0  # DecodeSet.kv_tokens, inlined
        pairs = kv
        prefill = 0
        for seq, chunk in self._batch:
            prefill += chunk
            kv += seq.computed + chunk
            pairs += chunk * seq.computed + chunk * (chunk + 1) // 2
        seqs = b + len(self._batch)
        assert seqs, "a planned step with nothing to run"
        dt = self.cost.step_time_s(prefill, b, kv, pairs, seqs, len(self._batch))
        if self._load_s:
            dt = tiered_step_s(dt, self._load_s, self.cost.model.num_layers)
            self._load_s = 0.0
        self._line = None
        self._step_end = self.now + dt
        self.wake_s = self._step_end

    def _start_run(self) -> None:
        """Extend a pure-decode step into a run that ends at the next event."""
        decodes, g = self.decodes, self.g
        steps = decodes.next_finish_g() - g
        pool = self.pool
        free = pool.free_blocks
        if self._head_touches_cache:
            # A blocked head stays blocked while no cached block is evicted.
            free -= pool.evictable_blocks
        # At most count blocks per bs steps: skip the exact count when they all fit.
        if free < decodes.count * (steps // self.bs + 1):
            limit = decodes.steps_within_blocks(g, free)
            if limit < steps:
                steps = limit
        if self._head_blocked and self._charged is not None and self._charged is self.policy:
            # The policy may put another request at the head as the decodes are
            # charged (VTC's counters pass one another), so the head is looked
            # at again after every step, as a step-by-step scheduler would.
            steps = 1
        if self._quantum is not None and self.num_waiting and steps > 1:
            steps = self._quantum_steps(steps, self._quantum)
        line = self.cost.decode_line(decodes.count, decodes.kv_base + decodes.count * g)
        self._line = line
        self._run_steps = steps
        self._run_charged = 0
        self._run_allocated = 0
        self._run_t0 = self.now
        self.wake_s = self.now + line.total_s(steps)

    def _cut_run(self, now: float) -> None:
        """An arrival mid-run: end the run at the first step boundary at or after ``now``."""
        assert self._line is not None
        k = self._line.steps_to_reach(now - self._run_t0)
        k = max(1, k)
        if k < self._run_steps:
            self._run_steps = k
            self.wake_s = self._run_t0 + self._line.total_s(k)
            self.version += 1

    # --- finishing work ----------------------------------------------------------------

    def _account(self, dt: float, steps: int) -> None:
        used = self.pool.used_blocks
        self.kv_block_s += used * dt
        if used > self.kv_peak_blocks:
            self.kv_peak_blocks = used
        self.busy_s += dt
        self.steps += steps

    def _finish_run(self) -> None:
        k = self._run_steps
        # Step g's blocks were taken when it was planned.
        allocs = self.decodes.blocks_between(self.g, k) - self._run_allocated
        if allocs:
            self.pool.allocate(allocs)
        end = self.wake_s
        assert end is not None
        self._account(end - self.now, k)
        self.g += k
        self.now = end
        self._line = None
        if self._charged is not None:
            self._charge_decodes(k - self._run_charged, end)
        done = self.decodes.finishing(self.g)
        if done:
            self._complete_decodes(done)

    def _finish_step(self) -> None:
        end = self._step_end
        self._account(end - self.now, 1)
        self.g += 1
        self.now = end
        charged = self._charged
        if charged is not None:
            self._charge_decodes(1, end)
        for seq, chunk in self._batch:
            self.prefill_tokens += chunk
            if charged is not None:
                charged.on_served(seq.req.tenant, chunk, 0, end)
            seq.computed += chunk
            if self.prefix_caching and seq.req.prefix_hashes:
                self._register_prefix(seq)
        # Release order shapes the prefix cache's LRU order, so endings follow the
        # running order as in vLLM: decodes (admitted earlier) first, then prefills.
        done = self.decodes.finishing(self.g)
        if done:
            self._complete_decodes(done)
        for seq, _ in self._batch:
            if seq.computed == seq.todo:
                self._prefill_done(seq)
        self._batch.clear()
        if self._paused:
            self._resume_paused()

    def _resume_paused(self) -> None:
        """Decodes left out of the step just over rejoin the decode set."""
        for seq in self._paused:
            self.decodes.join(seq, seq.computed, seq.out, self.g)
        self._paused.clear()

    def _charge_decodes(self, steps: int, now: float) -> None:
        """Charge ``steps`` decode tokens to each decoding sequence's tenant."""
        charged = self._charged
        assert charged is not None
        for tenant, count in self.decodes.tenants.items():
            if count:
                charged.on_served(tenant, 0, steps * count, now)

    def _charge_run_until(self, now: float) -> None:
        """Report the steps of the run in flight that ended before ``now``.

        The engine's own policy reads its counters when a request is pushed
        (VTC lifts a returning tenant to the lowest counter), so it must have
        heard of every step that ended before the arrival, as it would have
        step by step.
        """
        line = self._line
        assert line is not None
        ended = min(line.steps_to_reach(now - self._run_t0) - 1, self._run_steps - 1)
        if ended > self._run_charged:
            self._charge_decodes(ended - self._run_charged, now)
            self._run_charged = ended

    def _prefill_done(self, seq: Seq) -> None:
        self.prefilling.remove(seq)
        if seq.req.fails:  # served its prompt, then failed: no token comes out
            self._complete(seq, seq.computed, Outcome.FAILED)
            return
        seq.out += 1
        if seq.out == 1:
            seq.first_token_s = self.now
        if seq.out >= seq.target:
            self._complete(seq, seq.computed)
            return
        self.decodes.join(seq, seq.computed, seq.out, self.g)

    def _register_prefix(self, seq: Seq) -> None:
        hashes = seq.req.prefix_hashes
        assert hashes is not None
        pbt = seq.req.prefix_block_tokens
        full = min(len(hashes), seq.computed // pbt)
        for i in range(seq.hashed, full):
            entry = self.pool.register(hashes[i], pbt // self.bs)
            if entry is not None:
                seq.entries.append(entry)
                seq.shared_blocks += entry.blocks
        if full > seq.hashed:
            seq.hashed = full

    def _complete_decodes(self, done: list[Seq]) -> None:
        decodes, g = self.decodes, self.g
        for seq in done:
            computed, _ = decodes.leave(seq, g)
            seq.out = seq.target
            self._complete(seq, computed)

    # --- endings ------------------------------------------------------------------------

    def _held_blocks(self, seq: Seq, computed: int) -> tuple[int, int]:
        """(private blocks, entries) a sequence with ``computed`` tokens holds."""
        return cdiv(computed, self.bs) - seq.shared_blocks, seq.shared_blocks

    def _release(self, seq: Seq, computed: int) -> None:
        private, _ = self._held_blocks(seq, computed)
        self.pool.release(private)
        if seq.entries:
            self.pool.release_entries(seq.entries)
            seq.entries = []
            seq.shared_blocks = 0
        seq.hashed = 0

    def _complete(self, seq: Seq, computed: int, outcome: Outcome = Outcome.COMPLETED) -> None:
        """End a running sequence: completed, or failed after its prompt (``Request.fails``)."""
        self._release(seq, computed)
        del self.running[id(seq)]
        seq.status = SeqStatus.DONE
        req = seq.req
        self.outstanding_tokens -= req.prompt_tokens + (req.max_tokens or 0)
        self.predicted_tokens -= req.prompt_tokens + (req.predicted_output_tokens or 0)
        assert seq.cached_tokens is not None, "a completed request was admitted"
        out = seq.target if outcome is Outcome.COMPLETED else 0
        self.records.add(
            req.id, req.tenant, self.index, outcome, req.arrival_s,
            seq.first_sched_s, seq.first_token_s, self.now, req.prompt_tokens,
            out, seq.cached_tokens, seq.preemptions,
            None if outcome is Outcome.COMPLETED else FAILED_AFTER_PROMPT,
        )  # fmt: skip
        if self.policy is not None:
            self.policy.on_finish(req, out, self.now)
        if self.on_finish is not None:
            self.on_finish(req, out, self.now)

    def _preempt(self, seq: Seq, in_order: bool = False) -> None:
        """Free a running sequence's blocks and queue it for recomputation (``in_order``:
        where the policy orders it, not first)."""
        if seq.status is SeqStatus.DECODE:
            computed, seq.out = self.decodes.leave(seq, self.g)
        else:
            computed = seq.computed
            self.prefilling.remove(seq)
        self._release(seq, computed)
        del self.running[id(seq)]
        seq.status = SeqStatus.WAITING
        seq.computed = 0
        seq.todo = seq.prompt + seq.out
        self.waiting_prefill_tokens += seq.todo
        seq.preemptions += 1
        self.preemptions += 1
        self._requeue(seq, in_order)

    # --- inspection ---------------------------------------------------------------------

    def check(self) -> None:
        """Assert the engine's invariants (tests)."""
        check_tiers(self.pool)
        held = 0
        for seq in self.running.values():
            private, shared = self._held_blocks(seq, seq.computed_at(self.g))
            assert private >= 0, (private, shared)
            held += private
        shared_blocks = {id(e): e.blocks for s in self.running.values() for e in s.entries}
        held += sum(shared_blocks.values())
        # Blocks allocated for the step in flight are held but not yet computed.
        assert held <= self.pool.used_blocks, (held, self.pool.used_blocks)
        decoding = [s for s in self.running.values() if s.status is SeqStatus.DECODE]
        self.decodes.check(decoding)
        assert self.num_waiting == len(self._fcfs) + len(self._waiting)
