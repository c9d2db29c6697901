"""One simulated LLM serving engine, with vLLM v1 scheduling semantics.

Each step draws from one token budget (``max_num_batched_tokens``) under a cap
of ``max_num_seqs``: running requests first, in admission order (a decode
takes one token, an unfinished prefill takes the rest of the budget: chunked
prefill), then waiting ones (preempted first, then the queue's order) while
budget, sequence slots and KV blocks last. When a running request needs a KV
block and none is free, a victim chosen by the policy is preempted, its blocks
freed, and it is later recomputed from scratch (prefix-cache hits aside); no
waiting request is admitted in a step that preempted.

**Event skipping.** Decoding sequences are not stored one by one: they all
advance one token a step, so a sequence's state is a function of the global
step counter ``g`` (computed tokens = ``n0 + g - join_g``). The engine keeps
only aggregates: their count, the sum that gives the KV tokens read by a step,
how many of them cross a KV block boundary at each step residue mod
``block_size``, and a heap of the steps at which they finish. A step that only
decodes is therefore extended, in closed form, to a run of k steps that ends at
the next completion or just before the KV cache would run out; an arrival
mid-run cuts the run at the first step boundary after it. The work grows with
events (arrivals, completions, prefill chunks, preemptions), not with tokens.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence

from fairserve.core.model import Outcome, Request
from fairserve.core.policies.base import Policy
from fairserve.core.policies.fifo import FifoPolicy
from fairserve.metrics.records import NAN, RequestRecords
from fairserve.sim.config import EngineConfig
from fairserve.sim.cost import CostModel, DecodeLine
from fairserve.sim.kvcache import BlockPool, CacheEntry

WAITING, PREFILL, DECODE, DONE = 0, 1, 2, 3


class Seq:
    """The engine's state of one request.

    For a sequence in the DECODE set the token counts are derived from the
    engine's step counter; ``computed``/``out`` are exact only outside it.
    """

    __slots__ = (
        "admit_no",
        "cached_tokens",
        "computed",
        "entries",
        "epoch",
        "finish_g",
        "first_sched_s",
        "first_token_s",
        "hashed",
        "join_g",
        "n0",
        "out",
        "out0",
        "preemptions",
        "prompt",
        "req",
        "residue",
        "shared_blocks",
        "state",
        "target",
        "todo",
    )

    def __init__(self, req: Request) -> None:
        self.req = req
        self.prompt = req.prompt_tokens
        self.target = req.output_tokens
        self.out = 0  # output tokens generated
        self.todo = self.prompt  # tokens to compute before the next sample
        self.computed = 0
        self.state = WAITING
        self.entries: list[CacheEntry] = []
        self.shared_blocks = 0  # KV blocks held through ``entries``
        self.hashed = 0  # prompt hash blocks already looked at for registration
        self.join_g = self.n0 = self.out0 = self.finish_g = self.residue = 0
        self.epoch = 0
        self.admit_no = 0  # position in the running order (admission order)
        self.first_sched_s = NAN
        self.first_token_s = NAN
        self.preemptions = 0
        self.cached_tokens = -1  # prompt tokens served from the prefix cache at first admission


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


_NO_HITS: list[CacheEntry] = []  # shared, never mutated


def _admit_order(seq: Seq) -> int:
    return seq.admit_no


def unfit_reason(
    req: Request, max_model_len: int, block_size: int, total_blocks: int, prefix_caching: bool
) -> str | None:
    """Why ``req`` can never run on an engine of this shape, or None if it can."""
    if req.prompt_tokens < 1 or req.output_tokens < 1 or not req.arrival_s >= 0:
        return req.problem()
    total = req.prompt_tokens + req.output_tokens
    if total > max_model_len:
        return f"prompt_tokens + output_tokens = {total} exceeds max_model_len {max_model_len}"
    blocks = _cdiv(total - 1, block_size)
    if blocks > total_blocks:
        return f"needs {blocks} KV blocks; the engine has {total_blocks}"
    if prefix_caching and req.prefix_hashes and req.prefix_block_tokens % block_size:
        return (
            f"prefix_block_tokens {req.prefix_block_tokens} is not a multiple of "
            f"block_size {block_size}"
        )
    return None


class _PolicyQueue:
    """A Policy over requests seen as a queue of sequences (``q[0]``, ``popleft``)."""

    __slots__ = ("_now", "_policy", "_seqs")

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._seqs: dict[int, Seq] = {}
        self._now = 0.0

    def __len__(self) -> int:
        return len(self._policy)

    def append(self, seq: Seq, now: float) -> None:
        self._seqs[id(seq.req)] = seq
        self._policy.push(seq.req, now)

    def set_now(self, now: float) -> None:
        self._now = now

    def __getitem__(self, index: int) -> Seq:
        assert index == 0
        head = self._policy.peek(self._now)
        assert head is not None
        return self._seqs[id(head)]

    def popleft(self) -> Seq:
        req = self._policy.pop(self._now)
        assert req is not None
        return self._seqs.pop(id(req))


class Engine:
    """A simulated engine instance: paged KV cache, continuous batching, preemption.

    The driver calls ``add`` when a request reaches this engine and ``advance``
    at ``wake_s``, the time of the engine's next step boundary with work to do
    (``None`` when idle). ``on_finish(req, output_tokens, now)`` is called once
    per request that ends here.

    ``queue``: the policy that orders this engine's own waiting queue (the
    "engine" placement); FCFS when None. ``victim_policy`` chooses whom to
    preempt (default: ``queue``, else vLLM's most recently admitted).
    ``charge_to``: a policy whose ``on_served`` hook receives the service given
    here, per tenant, at every event (exact between scheduling decisions).
    """

    def __init__(
        self,
        index: int,
        cost: CostModel,
        config: EngineConfig,
        records: RequestRecords,
        queue: Policy | None = None,
        victim_policy: Policy | None = None,
        charge_to: Policy | None = None,
    ) -> None:
        self.index = index
        self.cost = cost
        self.config = config
        self.records = records
        # The engine's own waiting queue: FCFS (a plain deque, the fast path) or a policy.
        self._queue: deque[Seq] | _PolicyQueue = deque() if queue is None else _PolicyQueue(queue)
        self.policy = queue
        self.victim_policy: Policy = victim_policy or queue or FifoPolicy()
        self.bs = config.block_size
        self.max_model_len = config.max_model_len or cost.model.max_model_len
        blocks = config.num_gpu_blocks or cost.kv_cache_blocks(
            config.block_size,
            config.gpu_memory_utilization,
            config.max_num_batched_tokens,
            config.max_num_seqs,
        )
        self.pool = BlockPool(blocks)
        self.prefix_caching = config.enable_prefix_caching
        # time and steps
        self.now = 0.0
        self.g = 0
        self.wake_s: float | None = None
        self.version = 0
        # queues
        self.preempted: deque[Seq] = deque()
        self.running: dict[int, Seq] = {}  # admission order
        self.prefilling: list[Seq] = []  # running sequences still in prefill (running order)
        # the decode set, as aggregates
        self.dec_count = 0
        self.dec_kv_base = 0  # sum(n0 - join_g + 1): KV read at step g is base + count*g
        self.residue_count = [0] * self.bs
        self._finish_heap: list[tuple[int, int, int, Seq]] = []  # (finish_g, seqno, epoch, seq)
        # the work in flight: one detailed step, or a run of decode steps
        self._batch: list[tuple[Seq, int]] = []
        self._line: DecodeLine | None = None
        self._run_steps = 0  # steps in the decode run in flight
        self._run_t0 = 0.0
        self._step_end = 0.0
        self._starting = False  # woken from idle: the first step is planned at wake_s
        self._budget = 0
        self._head_touches_cache = False  # the blocked waiting head has evictable hits
        # counters
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
        self._seqno = 0
        self._admissions = 0
        self.on_finish: Callable[[Request, int, float], None] | None = None
        # Charging: decode sequences per tenant, kept only when someone is charged.
        self._charge_to = charge_to if charge_to is not None and charge_to.charges else None
        self._dec_tenants: dict[str, int] = {}

    # --- the driver's interface ---------------------------------------------------

    @property
    def num_waiting(self) -> int:
        """Requests queued in the engine (not running)."""
        return len(self._queue) + len(self.preempted)

    @property
    def num_running(self) -> int:
        """Requests holding KV blocks and scheduled each step."""
        return len(self.running)

    @property
    def num_decodes(self) -> int:
        """Running requests past their prefill."""
        return self.dec_count

    @property
    def decode_context_tokens(self) -> int:
        """KV tokens the decoding requests read per step (as of the last step boundary)."""
        return self.dec_kv_base + self.dec_count * self.g if self.dec_count else 0

    @property
    def queued_prefill_tokens(self) -> int:
        """Prefill tokens still to compute: queued requests and unfinished prefills."""
        return self.waiting_prefill_tokens + sum(s.todo - s.computed for s in self.prefilling)

    def add(self, req: Request, now: float) -> None:
        """A request reaches this engine at ``now``."""
        reason = unfit_reason(req, self.max_model_len, self.bs, self.pool.total_blocks,
                              self.prefix_caching)  # fmt: skip
        if reason is not None:
            self._fail(req, now, reason)
            return
        seq = Seq(req)
        if isinstance(self._queue, _PolicyQueue):
            self._queue.append(seq, now)
        else:
            self._queue.append(seq)
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

    # --- admission checks -----------------------------------------------------------

    def _fail(self, req: Request, now: float, reason: str) -> None:
        self.records.add(
            req.id, req.tenant, self.index, Outcome.FAILED, req.arrival_s, NAN, NAN, now,
            req.prompt_tokens, 0, 0, 0, reason,
        )  # fmt: skip
        if self.policy is not None:
            self.policy.on_finish(req, 0, now)
        if self.on_finish is not None:
            self.on_finish(req, 0, now)

    # --- planning: one detailed step or a run of decode steps -------------------------

    def _plan(self) -> None:
        if not self.running and not self.num_waiting:
            self.wake_s = None
            self.version += 1
            return
        preempted = self._schedule_running()
        if not preempted:
            self._schedule_waiting()
        if not self._batch and not preempted and self.dec_count:
            self._start_run()
        else:
            self._start_step()
        self.version += 1

    def _schedule_running(self) -> bool:
        """Give every running sequence its tokens; True if a preemption was needed."""
        pool = self.pool
        g = self.g
        need = self.residue_count[g % self.bs]
        budget = self.config.max_num_batched_tokens - self.dec_count
        batch = self._batch
        batch.clear()
        for seq in self.prefilling:
            chunk = min(seq.todo - seq.computed, budget)
            if chunk <= 0:
                continue
            need += _cdiv(seq.computed + chunk, self.bs) - _cdiv(seq.computed, self.bs)
            batch.append((seq, chunk))
            budget -= chunk
        if need <= pool.free_blocks:
            if need:
                pool.allocate(need)
            self._budget = budget
            return False
        batch.clear()
        return self._schedule_running_exact()

    def _schedule_running_exact(self) -> bool:
        """vLLM's running loop with preemption, one sequence at a time (rare path)."""
        pool, bs, g, now = self.pool, self.bs, self.g, self.now
        order = list(self.running.values())
        budget = self.config.max_num_batched_tokens
        granted: dict[Seq, int] = {}  # seq -> blocks allocated this step
        tokens: dict[Seq, int] = {}
        i = 0
        while i < len(order) and budget > 0:
            seq = order[i]
            if seq.state == DECODE:
                n_tok = 1
                blocks = 1 if (g - seq.residue) % bs == 0 else 0
            else:
                n_tok = min(seq.todo - seq.computed, budget)
                blocks = _cdiv(seq.computed + n_tok, bs) - _cdiv(seq.computed, bs)
            scheduled = True
            while blocks > pool.free_blocks:
                victim_req = self.victim_policy.pick_victim([s.req for s in order], now)
                victim = next(s for s in order if s.req is victim_req)
                v_index = order.index(victim)
                order.pop(v_index)
                pool.release(granted.pop(victim, 0))
                budget += tokens.pop(victim, 0)
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
            budget -= n_tok
            i += 1
        # Decoding sequences left out of this step do not advance: shift them.
        for seq in order:
            if seq.state == DECODE and seq not in tokens:
                self._shift_decode(seq)
        self._batch = [(s, n) for s, n in tokens.items() if s.state == PREFILL]
        self._budget = budget
        return True

    def _schedule_waiting(self) -> None:
        """Admit waiting requests while budget, sequence slots and KV blocks last."""
        budget = self._budget
        self._head_touches_cache = False
        if budget <= 0:
            return
        pool, bs, cfg = self.pool, self.bs, self.config
        queue, preempted = self._queue, self.preempted
        if isinstance(queue, _PolicyQueue):
            queue.set_now(self.now)
        while budget > 0 and (preempted or queue):
            if len(self.running) >= cfg.max_num_seqs:
                break
            seq = preempted[0] if preempted else queue[0]
            hits, touch = self._lookup(seq)
            cached = len(hits) * seq.req.prefix_block_tokens if hits else 0
            chunk = min(seq.todo - cached, budget)
            new_blocks = _cdiv(cached + chunk, bs) - cached // bs
            if new_blocks + touch > pool.free_blocks:
                # Evicting the cached blocks it would reuse can make it fit later.
                self._head_touches_cache = touch > 0
                break
            if preempted:
                preempted.popleft()
            else:
                queue.popleft()
            self.waiting_prefill_tokens -= seq.todo
            if hits:
                pool.acquire(hits)
                seq.entries = hits
                seq.shared_blocks = cached // bs
                seq.hashed = len(hits)
            pool.allocate(new_blocks)
            self._admit(seq, cached)
            self._batch.append((seq, chunk))
            budget -= chunk
        self._budget = budget

    def _lookup(self, seq: Seq) -> tuple[list[CacheEntry], int]:
        hashes = seq.req.prefix_hashes
        if not hashes or not self.prefix_caching:
            return _NO_HITS, 0
        # At least one token is always computed (vLLM caps the hit below num_tokens).
        max_entries = (seq.todo - 1) // seq.req.prefix_block_tokens
        return self.pool.lookup(hashes, max_entries)

    def _admit(self, seq: Seq, cached: int) -> None:
        seq.state = PREFILL
        seq.computed = cached
        self._admissions += 1
        seq.admit_no = self._admissions
        if seq.cached_tokens < 0:
            seq.cached_tokens = cached
            seq.first_sched_s = self.now
        self.running[id(seq)] = seq
        self.prefilling.append(seq)

    def _start_step(self) -> None:
        """Price one detailed step from its composition."""
        b = self.dec_count
        kv = self.dec_kv_base + b * self.g if b else 0
        pairs = kv
        prefill = 0
        for seq, chunk in self._batch:
            prefill += chunk
            kv += seq.computed + chunk
            pairs += chunk * seq.computed + chunk * (chunk + 1) // 2
        seqs = b + len(self._batch)
        assert seqs, "a planned step with nothing to run"
        dt = self.cost.step_time_s(prefill, b, kv, pairs, seqs)
        self._line = None
        self._step_end = self.now + dt
        self.wake_s = self._step_end

    def _start_run(self) -> None:
        """Extend a pure-decode step into a run that ends at the next event."""
        b = self.dec_count
        g = self.g
        heap = self._finish_heap
        while heap[0][3].epoch != heap[0][2]:
            heapq.heappop(heap)  # stale entries of preempted or shifted sequences
        steps = heap[0][0] - g
        pool = self.pool
        free = pool.free_blocks
        if self._head_touches_cache:
            # A blocked head stays blocked while no cached block is evicted.
            free -= pool.evictable_blocks
        # At most dec_count blocks per bs steps: skip the exact count when they all fit.
        if free < b * (steps // self.bs + 1):
            limit = self._steps_within_blocks(free)
            if limit < steps:
                steps = limit
        line = self.cost.decode_line(b, self.dec_kv_base + b * g)
        self._line = line
        self._run_steps = steps
        self._run_t0 = self.now
        self.wake_s = self.now + line.total_s(steps)

    def _steps_within_blocks(self, free: int) -> int:
        """Steps of the run (this one included) whose allocations fit in ``free`` blocks.

        The first step's blocks are already allocated. From the next step on,
        step g' allocates ``residue_count[g' % bs]`` blocks, ``dec_count`` per
        full cycle of ``bs`` steps.
        """
        b, bs, counts = self.dec_count, self.bs, self.residue_count
        cycles = free // b
        left = free - cycles * b
        start = self.g + 1
        for i in range(bs):
            left -= counts[(start + i) % bs]
            if left < 0:
                return 1 + cycles * bs + i
        raise AssertionError("a full cycle allocates dec_count blocks")

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
        bs, counts, g = self.bs, self.residue_count, self.g
        # Blocks for steps g+1 .. g+k-1 (step g's were taken when it was planned):
        # dec_count per full cycle of bs steps, then a partial cycle of residues.
        allocs = ((k - 1) // bs) * self.dec_count
        rest = (k - 1) % bs
        if rest:
            first = (g + 1) % bs
            last = first + rest
            allocs += sum(counts[first:last])
            if last > bs:
                allocs += sum(counts[: last - bs])
        if allocs:
            self.pool.allocate(allocs)
        end = self.wake_s
        assert end is not None
        self._account(end - self.now, k)
        self.g = g + k
        self.now = end
        self._line = None
        if self._charge_to is not None:
            self._charge_decodes(k)
        self._complete_decodes()

    def _finish_step(self) -> None:
        end = self._step_end
        self._account(end - self.now, 1)
        self.g += 1
        self.now = end
        charge = self._charge_to
        if charge is not None:
            self._charge_decodes(1)
        for seq, chunk in self._batch:
            self.prefill_tokens += chunk
            if charge is not None:
                charge.on_served(seq.req.tenant, chunk, 0, end)
            seq.computed += chunk
            if self.prefix_caching and seq.req.prefix_hashes:
                self._register_prefix(seq)
        # Release order shapes the prefix cache's LRU order, so endings follow the
        # running order as in vLLM: decodes (admitted earlier) first, then prefills.
        self._complete_decodes()
        for seq, _ in self._batch:
            if seq.computed == seq.todo:
                self._prefill_done(seq)
        self._batch.clear()

    def _charge_decodes(self, steps: int) -> None:
        """Charge ``steps`` decode tokens to each decoding sequence's tenant."""
        charge = self._charge_to
        assert charge is not None
        for tenant, count in self._dec_tenants.items():
            if count:
                charge.on_served(tenant, 0, steps * count, self.now)

    def _prefill_done(self, seq: Seq) -> None:
        self.prefilling.remove(seq)
        seq.out += 1
        if seq.out == 1:
            seq.first_token_s = self.now
        if seq.out >= seq.target:
            self._complete(seq, seq.computed)
            return
        self._join_decode(seq, seq.computed, seq.out)

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

    def _complete_decodes(self) -> None:
        heap, g = self._finish_heap, self.g
        if not heap or heap[0][0] > g:
            return
        done: list[Seq] = []
        while heap and heap[0][0] <= g:
            finish_g, _, epoch, seq = heapq.heappop(heap)
            if seq.epoch != epoch:
                continue  # stale: the sequence was preempted or shifted
            assert finish_g == g, "a decode run overshot a completion"
            done.append(seq)
        if len(done) > 1:
            done.sort(key=_admit_order)
        for seq in done:
            computed = seq.n0 + g - seq.join_g
            self._leave_decode(seq)
            seq.out = seq.target
            self._complete(seq, computed)

    # --- the decode set -------------------------------------------------------------------

    def _join_decode(self, seq: Seq, computed: int, out: int, g: int | None = None) -> None:
        """Add ``seq`` to the decode set; its first decode step is step ``g``."""
        if g is None:
            g = self.g
        seq.state = DECODE
        seq.join_g, seq.n0, seq.out0 = g, computed, out
        seq.finish_g = g + seq.target - out
        seq.residue = (g - computed) % self.bs
        seq.epoch += 1
        self.dec_count += 1
        if self._charge_to is not None:
            tenant = seq.req.tenant
            self._dec_tenants[tenant] = self._dec_tenants.get(tenant, 0) + 1
        self.dec_kv_base += computed - g + 1
        self.residue_count[seq.residue] += 1
        self._seqno += 1
        heapq.heappush(self._finish_heap, (seq.finish_g, self._seqno, seq.epoch, seq))

    def _leave_decode(self, seq: Seq) -> tuple[int, int]:
        """Take ``seq`` out of the decode set; returns its (computed, out) now."""
        g = self.g
        computed = seq.n0 + g - seq.join_g
        out = seq.out0 + g - seq.join_g
        self.dec_count -= 1
        if self._charge_to is not None:
            self._dec_tenants[seq.req.tenant] -= 1
        self.dec_kv_base -= seq.n0 - seq.join_g + 1
        self.residue_count[seq.residue] -= 1
        seq.epoch += 1  # invalidates its heap entry
        seq.state = PREFILL  # caller sets the real state
        return computed, out

    def _shift_decode(self, seq: Seq) -> None:
        """A decoding sequence skipped this step: it resumes one step later."""
        computed, out = self._leave_decode(seq)
        self._join_decode(seq, computed, out, self.g + 1)

    # --- endings ------------------------------------------------------------------------

    def _held_blocks(self, seq: Seq, computed: int) -> tuple[int, int]:
        """(private blocks, entries) a sequence with ``computed`` tokens holds."""
        return _cdiv(computed, self.bs) - seq.shared_blocks, seq.shared_blocks

    def _release(self, seq: Seq, computed: int) -> None:
        private, _ = self._held_blocks(seq, computed)
        self.pool.release(private)
        if seq.entries:
            self.pool.release_entries(seq.entries)
            seq.entries = []
            seq.shared_blocks = 0
        seq.hashed = 0

    def _complete(self, seq: Seq, computed: int) -> None:
        self._release(seq, computed)
        del self.running[id(seq)]
        seq.state = DONE
        req = seq.req
        self.outstanding_tokens -= req.prompt_tokens + (req.max_tokens or 0)
        self.predicted_tokens -= req.prompt_tokens + (req.predicted_output_tokens or 0)
        self.records.add(
            req.id, req.tenant, self.index, Outcome.COMPLETED, req.arrival_s,
            seq.first_sched_s, seq.first_token_s, self.now, req.prompt_tokens,
            seq.target, seq.cached_tokens, seq.preemptions,
        )  # fmt: skip
        if self.policy is not None:
            self.policy.on_finish(req, seq.target, self.now)
        if self.on_finish is not None:
            self.on_finish(req, seq.target, self.now)

    def _preempt(self, seq: Seq) -> None:
        """Free a running sequence's blocks and queue it for recomputation."""
        if seq.state == DECODE:
            computed, out = self._leave_decode(seq)
            seq.out = out
        else:
            computed = seq.computed
            self.prefilling.remove(seq)
        self._release(seq, computed)
        del self.running[id(seq)]
        seq.state = WAITING
        seq.computed = 0
        seq.todo = seq.prompt + seq.out
        self.waiting_prefill_tokens += seq.todo
        seq.preemptions += 1
        self.preemptions += 1
        self.preempted.appendleft(seq)

    # --- inspection ---------------------------------------------------------------------

    def check(self) -> None:
        """Assert the engine's invariants (tests)."""
        self.pool.check()
        held = 0
        for seq in self.running.values():
            computed = seq.n0 + self.g - seq.join_g if seq.state == DECODE else seq.computed
            private, shared = self._held_blocks(seq, computed)
            assert private >= 0, (private, shared)
            held += private
        shared_blocks = {id(e): e.blocks for s in self.running.values() for e in s.entries}
        held += sum(shared_blocks.values())
        # Blocks allocated for the step in flight are held but not yet computed.
        assert held <= self.pool.used_blocks, (held, self.pool.used_blocks)
        assert self.dec_count == sum(1 for s in self.running.values() if s.state == DECODE)
        assert sum(self.residue_count) == self.dec_count

    def running_requests(self) -> Sequence[Request]:
        """Running requests in admission order."""
        return [s.req for s in self.running.values()]
