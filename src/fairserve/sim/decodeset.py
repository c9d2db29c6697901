"""The decoding sequences of one engine, kept as aggregates of the step counter.

Every sequence in the decode set advances one token a step, so its state is a
function of the engine's global step counter ``g``: computed tokens
``n0 + g - join_g``, output tokens ``out0 + g - join_g``. Nothing is stored per
sequence per step. The set keeps only what a step needs in O(1):

- ``count``: how many sequences decode;
- ``kv_base``: the sum of ``n0 - join_g + 1``, so step ``g`` reads
  ``kv_base + count * g`` KV tokens;
- ``residue_count[r]``: how many sequences cross a KV block boundary at the
  steps ``g`` with ``g % block_size == r`` (they need a new block then);
- a heap of the steps at which they finish (entries of sequences that left
  are skipped by their ``epoch``);
- ``tenants``: sequences per tenant, when a policy is charged for decodes.
"""

from __future__ import annotations

import heapq

from fairserve.sim.sequence import Seq, SeqStatus, admit_order

_NONE: list[Seq] = []  # shared, never mutated: "no decode finishes at this step"


class DecodeSet:
    """Aggregates of the decoding sequences: join and leave in O(log n)."""

    __slots__ = (
        "_heap",
        "_seqno",
        "block_size",
        "count",
        "kv_base",
        "per_tenant",
        "residue_count",
        "tenants",
    )

    def __init__(self, block_size: int, per_tenant: bool) -> None:
        self.block_size = block_size
        self.count = 0
        self.kv_base = 0
        self.residue_count = [0] * block_size
        self.per_tenant = per_tenant
        self.tenants: dict[str, int] = {}
        self._heap: list[tuple[int, int, int, Seq]] = []  # (finish_g, seqno, epoch, seq)
        self._seqno = 0

    def kv_tokens(self, g: int) -> int:
        """KV tokens the decodes read at step ``g``."""
        return self.kv_base + self.count * g if self.count else 0

    def join(self, seq: Seq, computed: int, out: int, g: int) -> None:
        """Add ``seq`` with ``computed`` and ``out`` tokens; its first decode step is ``g``."""
        seq.status = SeqStatus.DECODE
        seq.join_g, seq.n0, seq.out0 = g, computed, out
        seq.finish_g = g + seq.target - out
        seq.residue = (g - computed) % self.block_size
        seq.epoch += 1
        self.count += 1
        if self.per_tenant:
            tenant = seq.req.tenant
            self.tenants[tenant] = self.tenants.get(tenant, 0) + 1
        self.kv_base += computed - g + 1
        self.residue_count[seq.residue] += 1
        self._seqno += 1
        heapq.heappush(self._heap, (seq.finish_g, self._seqno, seq.epoch, seq))

    def leave(self, seq: Seq, g: int) -> tuple[int, int]:
        """Take ``seq`` out at step ``g``; returns its (computed, out) tokens then.

        The caller sets the sequence's new status and counts.
        """
        computed = seq.n0 + g - seq.join_g
        out = seq.out0 + g - seq.join_g
        self.count -= 1
        if self.per_tenant:
            self.tenants[seq.req.tenant] -= 1
        self.kv_base -= seq.n0 - seq.join_g + 1
        self.residue_count[seq.residue] -= 1
        seq.epoch += 1  # invalidates its heap entry
        return computed, out

    def next_finish_g(self) -> int:
        """The step at which the next decode finishes (the set must not be empty)."""
        heap = self._heap
        while heap[0][3].epoch != heap[0][2]:
            heapq.heappop(heap)  # stale entries of sequences that left
        return heap[0][0]

    def finishing(self, g: int) -> list[Seq]:
        """The decodes that finish at step ``g``, in running order (still in the set)."""
        heap = self._heap
        if not heap or heap[0][0] > g:
            return _NONE  # most steps: no allocation (measured ~1% of a 1M-request run)
        done: list[Seq] = []
        while heap and heap[0][0] <= g:
            finish_g, _, epoch, seq = heapq.heappop(heap)
            if seq.epoch != epoch:
                continue  # stale: the sequence left
            assert finish_g == g, "a decode run overshot a completion"
            done.append(seq)
        if len(done) > 1:
            done.sort(key=admit_order)
        return done

    def blocks_at(self, g: int) -> int:
        """New KV blocks the decodes need at step ``g``."""
        return self.residue_count[g % self.block_size]

    def blocks_between(self, g: int, k: int) -> int:
        """New KV blocks the decodes need at steps ``g + 1 .. g + k - 1``.

        ``count`` per full cycle of ``block_size`` steps, then a partial cycle
        of residues.
        """
        bs, counts = self.block_size, self.residue_count
        blocks = ((k - 1) // bs) * self.count
        rest = (k - 1) % bs
        if rest:
            first = (g + 1) % bs
            last = first + rest
            blocks += sum(counts[first:last])
            if last > bs:
                blocks += sum(counts[: last - bs])
        return blocks

    def steps_within_blocks(self, g: int, free: int) -> int:
        """Decode steps from ``g`` on (``g`` included) whose allocations fit in ``free``.

        Step ``g``'s blocks are already allocated; step ``g'`` after it takes
        ``blocks_at(g')``, ``count`` per full cycle of ``block_size`` steps.
        """
        b, bs, counts = self.count, self.block_size, self.residue_count
        cycles = free // b
        left = free - cycles * b
        start = g + 1
        for i in range(bs):
            left -= counts[(start + i) % bs]
            if left < 0:
                return 1 + cycles * bs + i
        raise AssertionError("a full cycle allocates count blocks")

    def check(self, members: list[Seq]) -> None:
        """Assert the aggregates match ``members`` (tests)."""
        assert self.count == len(members), (self.count, len(members))
        assert sum(self.residue_count) == self.count
        assert self.kv_base == sum(s.n0 - s.join_g + 1 for s in members)
