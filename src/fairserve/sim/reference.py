"""The slow per-step reference engine, for tests.

It follows the same vLLM v1 rules as ``engine.Engine`` but keeps every
sequence's token counts explicitly and runs every step one at a time, with no
aggregates and no closed forms. Tests run both on the same workloads and
require the same records: that is what checks event skipping.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from fairserve.core.model import Outcome, Request
from fairserve.core.policies.base import Policy
from fairserve.core.policies.fifo import FifoPolicy
from fairserve.metrics.records import NAN, RequestRecords
from fairserve.sim.config import EngineConfig
from fairserve.sim.cost import CostModel
from fairserve.sim.engine import unfit_reason
from fairserve.sim.kvcache import BlockPool, CacheEntry


class RefSeq:
    """A request's state, every count explicit."""

    __slots__ = (
        "cached_tokens",
        "computed",
        "entries",
        "first_sched_s",
        "first_token_s",
        "hashed",
        "out",
        "preemptions",
        "req",
    )

    def __init__(self, req: Request) -> None:
        self.req = req
        self.out = 0
        self.computed = 0
        self.entries: list[CacheEntry] = []
        self.hashed = 0
        self.first_sched_s = NAN
        self.first_token_s = NAN
        self.preemptions = 0
        self.cached_tokens = -1

    @property
    def num_tokens(self) -> int:
        """Prompt plus the output sampled so far: what must be computed before the next sample."""
        return self.req.prompt_tokens + self.out


class ReferenceEngine:
    """Per-step engine with the driver interface of ``engine.Engine``."""

    def __init__(
        self,
        index: int,
        cost: CostModel,
        config: EngineConfig,
        records: RequestRecords,
        queue: Policy | None = None,
    ) -> None:
        self.index = index
        self.cost = cost
        self.config = config
        self.records = records
        self.queue: Policy = queue if queue is not None else FifoPolicy()
        self.bs = config.block_size
        self.max_model_len = config.max_model_len or cost.model.max_model_len
        self.pool = BlockPool(
            config.num_gpu_blocks
            or cost.kv_cache_blocks(
                config.block_size,
                config.gpu_memory_utilization,
                config.max_num_batched_tokens,
                config.max_num_seqs,
            )
        )
        self.now = 0.0
        self.wake_s: float | None = None
        self.version = 0
        self.seqs: dict[int, RefSeq] = {}
        self.preempted: deque[RefSeq] = deque()
        self.running: list[RefSeq] = []
        self.scheduled: list[tuple[RefSeq, int]] = []
        self.outstanding_tokens = 0  # prompt + max_tokens, as Engine
        self.predicted_tokens = 0
        self.steps = 0
        self.preemptions = 0
        self._starting = False
        # Live drivers (the gateway's simulated engine server) stream each token
        # as it is sampled: called with (request, tokens sampled so far).
        self.on_token: Callable[[Request, int], None] | None = None
        self.on_finish: Callable[[Request, int, float], None] | None = None

    @property
    def num_waiting(self) -> int:
        """Requests queued in the engine."""
        return len(self.queue) + len(self.preempted)

    @property
    def num_running(self) -> int:
        """Requests in the batch."""
        return len(self.running)

    @property
    def num_decodes(self) -> int:
        """Running requests past their prefill."""
        return sum(1 for s in self.running if s.out > 0 and s.computed == s.num_tokens - 1)

    @property
    def decode_context_tokens(self) -> int:
        """KV tokens the decoding requests read per step."""
        return sum(
            s.computed + 1 for s in self.running if s.out > 0 and s.computed == s.num_tokens - 1
        )

    @property
    def queued_prefill_tokens(self) -> int:
        """Prefill tokens still to compute: queued requests and unfinished prefills."""
        queued = sum(s.num_tokens for s in self.preempted)
        queued += sum(self.seqs[id(r)].num_tokens for r in self.queue_requests())
        running = sum(
            s.num_tokens - s.computed
            for s in self.running
            if s.computed < s.num_tokens - 1 or s.out == 0
        )
        return queued + running

    def queue_requests(self) -> list[Request]:
        """Requests in the engine's own queue (FIFO order when the queue is FCFS)."""
        queue = getattr(self.queue, "_queue", None)
        return list(queue) if queue is not None else []

    def add(self, req: Request, now: float) -> None:
        """A request reaches the engine."""
        reason = unfit_reason(req, self.max_model_len, self.bs, self.pool.total_blocks,
                              self.config.enable_prefix_caching)  # fmt: skip
        if reason is not None:
            self.records.add(
                req.id, req.tenant, self.index, Outcome.FAILED, req.arrival_s, NAN, NAN, now,
                req.prompt_tokens, 0, 0, 0, reason,
            )  # fmt: skip
            if self.on_finish is not None:
                self.on_finish(req, 0, now)
            return
        self.seqs[id(req)] = RefSeq(req)
        self.queue.push(req, now)
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

    def _blocks(self, tokens: int) -> int:
        return -(-tokens // self.bs)

    def _plan(self) -> None:
        self.version += 1
        if not self.running and not self.num_waiting:
            self.wake_s = None
            return
        budget = self._schedule_running()
        if budget is not None:
            self._schedule_waiting(budget)
        assert self.scheduled, "a planned step with nothing to run"
        tokens = kv = pairs = 0
        for seq, n in self.scheduled:
            tokens += n
            kv += seq.computed + n
            pairs += n * seq.computed + n * (n + 1) // 2
        # The cost model depends on prefill tokens + decode sequences only through their sum.
        dt = self.cost.step_time_s(tokens, 0, kv, pairs, len(self.scheduled))
        self.wake_s = self.now + dt

    def _schedule_running(self) -> int | None:
        """The running loop; returns the budget left, or None if it preempted."""
        pool = self.pool
        budget = self.config.max_num_batched_tokens
        self.scheduled = []
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_tokens - seq.computed, budget)
            need = self._blocks(seq.computed + n) - self._blocks(seq.computed)
            ok = True
            while need > pool.free_blocks:
                victim_req = self.queue.pick_victim([s.req for s in self.running], self.now)
                victim = self.seqs[id(victim_req)]
                v_index = self.running.index(victim)
                for j, (s, m) in enumerate(self.scheduled):
                    if s is victim:  # already given blocks and budget this step
                        del self.scheduled[j]
                        budget += m
                        pool.release(self._blocks(s.computed + m) - self._blocks(s.computed))
                        break
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
            budget -= n
            i += 1
        return None if preempted else budget

    def _schedule_waiting(self, budget: int) -> None:
        pool = self.pool
        while budget > 0 and (self.preempted or len(self.queue)):
            if len(self.running) >= self.config.max_num_seqs:
                break
            if self.preempted:
                seq = self.preempted[0]
            else:
                head = self.queue.peek(self.now)
                assert head is not None
                seq = self.seqs[id(head)]
            hits: list[CacheEntry] = []
            touch = 0
            hashes = seq.req.prefix_hashes
            pbt = seq.req.prefix_block_tokens
            if hashes and self.config.enable_prefix_caching:
                hits, touch = pool.lookup(hashes, (seq.num_tokens - 1) // pbt)
            cached = len(hits) * pbt
            n = min(seq.num_tokens - cached, budget)
            need = self._blocks(cached + n) - cached // self.bs
            if need + touch > pool.free_blocks:
                break
            if self.preempted:
                self.preempted.popleft()
            else:
                self.queue.pop(self.now)
            pool.acquire(hits)
            seq.entries = list(hits)
            seq.hashed = len(hits)
            pool.allocate(need)
            seq.computed = cached
            if seq.cached_tokens < 0:
                seq.cached_tokens = cached
                seq.first_sched_s = self.now
            self.running.append(seq)
            self.scheduled.append((seq, n))
            budget -= n

    def _finish_step(self) -> None:
        assert self.wake_s is not None
        self.now = self.wake_s
        self.steps += 1
        for seq, n in self.scheduled:
            seq.computed += n
            hashes = seq.req.prefix_hashes
            if hashes and self.config.enable_prefix_caching:
                pbt = seq.req.prefix_block_tokens
                full = min(len(hashes), seq.computed // pbt)
                for k in range(seq.hashed, full):
                    entry = self.pool.register(hashes[k], pbt // self.bs)
                    if entry is not None:
                        seq.entries.append(entry)
                seq.hashed = max(seq.hashed, full)
            if seq.computed == seq.num_tokens:
                seq.out += 1
                if seq.out == 1:
                    seq.first_token_s = self.now
                if self.on_token is not None:
                    self.on_token(seq.req, seq.out)
                if seq.out == seq.req.output_tokens:
                    self._complete(seq)
        self.scheduled = []

    def _release(self, seq: RefSeq) -> None:
        shared = sum(e.blocks for e in seq.entries)
        self.pool.release(self._blocks(seq.computed) - shared)
        self.pool.release_entries(seq.entries)
        seq.entries = []
        seq.hashed = 0

    def _complete(self, seq: RefSeq) -> None:
        self._release(seq)
        self.running.remove(seq)
        del self.seqs[id(seq.req)]
        req = seq.req
        self.outstanding_tokens -= req.prompt_tokens + (req.max_tokens or 0)
        self.predicted_tokens -= req.prompt_tokens + (req.predicted_output_tokens or 0)
        self.records.add(
            req.id, req.tenant, self.index, Outcome.COMPLETED, req.arrival_s,
            seq.first_sched_s, seq.first_token_s, self.now, req.prompt_tokens, seq.out,
            seq.cached_tokens, seq.preemptions,
        )  # fmt: skip
        if self.on_finish is not None:
            self.on_finish(req, seq.out, self.now)

    def cancel(self, req: Request, now: float) -> bool:
        """Drop ``req`` wherever it is (queued, preempted or running); free its KV blocks.

        A request cancelled during a step leaves that step's time unchanged (the
        GPU was already running it) but gets no token from it. The request is
        recorded as CANCELLED. Returns False if the engine does not hold it.
        """
        seq = self.seqs.get(id(req))
        if seq is None:
            return False
        if not self.queue.remove(req):
            if seq in self.preempted:
                self.preempted.remove(seq)  # preemption already released its blocks
            else:
                for j, (s, m) in enumerate(self.scheduled):
                    if s is seq:  # blocks for this step's tokens were allocated at planning
                        del self.scheduled[j]
                        self.pool.release(self._blocks(s.computed + m) - self._blocks(s.computed))
                        break
                self._release(seq)
                self.running.remove(seq)
        del self.seqs[id(req)]
        self.outstanding_tokens -= req.prompt_tokens + (req.max_tokens or 0)
        self.predicted_tokens -= req.prompt_tokens + (req.predicted_output_tokens or 0)
        self.records.add(
            req.id, req.tenant, self.index, Outcome.CANCELLED, req.arrival_s,
            seq.first_sched_s, seq.first_token_s, now, req.prompt_tokens, seq.out,
            seq.cached_tokens, seq.preemptions,
        )  # fmt: skip
        return True

    def _preempt(self, seq: RefSeq) -> None:
        self._release(seq)
        self.running.remove(seq)
        seq.computed = 0
        seq.preemptions += 1
        self.preemptions += 1
        self.preempted.appendleft(seq)
