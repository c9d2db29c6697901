"""The engine's state of one request: where it is and how many tokens it has."""

from __future__ import annotations

from enum import Enum

from fairserve.core.model import Request
from fairserve.metrics.records import NAN
from fairserve.sim.kvcache import CacheEntry


class SeqStatus(Enum):
    """Where a sequence is in the engine."""

    WAITING = "waiting"  # queued, new or preempted; holds no KV blocks
    PREFILL = "prefill"  # running, its prompt (or its recomputation) not finished
    DECODE = "decode"  # running, one token a step; counts kept by the decode set
    PAUSED = "paused"  # a decode left out of the step in flight (after a preemption)
    DONE = "done"


class Seq:
    """One request inside the engine.

    Outside the decode set ``computed`` and ``out`` are exact. Inside it they
    are not kept: the decode set derives them from the engine's step counter
    ``g`` and the fields it set at the join (``join_g``, ``n0``, ``out0``), see
    ``computed_at`` and ``out_at``.
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
        "slice_out",
        "status",
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
        self.status = SeqStatus.WAITING
        self.entries: list[CacheEntry] = []
        self.shared_blocks = 0  # KV blocks held through ``entries``
        self.hashed = 0  # prompt hash blocks already looked at for registration
        # Decode-set fields: first decode step, computed and output tokens then,
        # the step it finishes at, its block-boundary residue, and a counter
        # that invalidates its finish-heap entry when it leaves.
        self.join_g = self.n0 = self.out0 = self.finish_g = self.residue = 0
        self.epoch = 0
        self.admit_no = 0  # position in the running order (admission order)
        self.first_sched_s = NAN
        self.first_token_s = NAN
        self.preemptions = 0
        self.slice_out = 0  # output tokens when it was last scheduled (the service quantum)
        # Prompt tokens served from the prefix cache at the first admission.
        self.cached_tokens: int | None = None

    def computed_at(self, g: int) -> int:
        """Tokens computed as of step ``g`` (derived while decoding)."""
        return self.n0 + g - self.join_g if self.status is SeqStatus.DECODE else self.computed

    def out_at(self, g: int) -> int:
        """Output tokens generated as of step ``g`` (derived while decoding)."""
        return self.out0 + g - self.join_g if self.status is SeqStatus.DECODE else self.out


def admit_order(seq: Seq) -> int:
    """Sort key: the running order (admission order)."""
    return seq.admit_no
