"""The simulator's engine model run on the wall clock, one step at a time.

``RealtimeEngine`` drives a :class:`~fairserve.sim.stepper.StepEngine` (the
per-step engine: every token reported as it is sampled, requests cancellable
mid-flight) from an asyncio task: a request is added at
``now = (loop.time() - t0) / time_scale``, the task sleeps until the engine's
next step ends (``wake_s``), calls ``advance()``, and hands every token that
step produced to its request's :class:`TokenStream`. Steps are scheduled on
absolute times, so a late wake-up is caught up and timing errors do not add up.

``time_scale`` is wall seconds per modelled second: 1 is real time, 4 runs
everything four times slower (steps of a few ms become long enough for a
loaded 2-core machine to keep to them).
"""

from __future__ import annotations

import asyncio
import contextlib

from fairserve.core.model import Request
from fairserve.metrics.records import RequestRecords
from fairserve.sim.config import EngineConfig
from fairserve.sim.cost import CostModel
from fairserve.sim.stepper import StepEngine


class TokenStream:
    """The tokens of one request as the engine samples them."""

    __slots__ = ("_event", "done", "failed_reason", "produced", "req")

    def __init__(self, req: Request) -> None:
        self.req = req
        self.produced = 0
        self.done = False
        self.failed_reason: str | None = None
        self._event = asyncio.Event()

    def _push(self, produced: int) -> None:
        self.produced = produced
        if produced >= self.req.output_tokens:
            self.done = True
        self._event.set()

    async def wait(self, seen: int) -> int:
        """Wait until more than ``seen`` tokens exist (or the stream ended); the count."""
        while self.produced <= seen and not self.done:
            self._event.clear()
            await self._event.wait()
        return self.produced


class RealtimeEngine:
    """A simulated vLLM-like engine that produces tokens at the modelled times."""

    def __init__(
        self,
        cost: CostModel,
        config: EngineConfig,
        *,
        time_scale: float = 1.0,
        index: int = 0,
    ) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.records = RequestRecords()
        self.engine = StepEngine(index, cost, config, self.records)
        self.engine.on_token = self._on_token
        self.time_scale = time_scale
        self._streams: dict[int, TokenStream] = {}
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0
        self.tokens_total = 0

    # ----------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the stepping task on the running loop."""
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        self._task = loop.create_task(self._run(), name="fairserve-engine")

    async def stop(self) -> None:
        """Stop stepping; end every open stream as failed."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for stream in list(self._streams.values()):
            stream.failed_reason = "engine stopped"
            stream.done = True
            stream._event.set()
        self._streams.clear()

    def now(self) -> float:
        """Modelled seconds since start."""
        return (asyncio.get_running_loop().time() - self._t0) / self.time_scale

    # ----------------------------------------------------------- requests
    @property
    def num_running(self) -> int:
        """Requests in the batch."""
        return self.engine.num_running

    @property
    def num_waiting(self) -> int:
        """Requests queued (including preempted ones)."""
        return self.engine.num_waiting

    @property
    def kv_usage(self) -> float:
        """Fraction of KV blocks in use."""
        pool = self.engine.pool
        return 1.0 - pool.free_blocks / pool.total_blocks

    def submit(self, req: Request) -> TokenStream:
        """Add ``req``; its stream ends failed at once if it can never fit."""
        stream = TokenStream(req)
        self.engine.add(req, self.now())
        if req not in self.engine.seqs:  # rejected: longer than the model or the KV cache
            stream.failed_reason = self.records.failure_reasons.get(req.id, "request does not fit")
            stream.done = True
            return stream
        self._streams[id(req)] = stream
        self._kick.set()
        return stream

    def cancel(self, stream: TokenStream) -> None:
        """Drop a request that is no longer wanted (client gone); frees its KV blocks."""
        if self._streams.pop(id(stream.req), None) is not None:
            self.engine.cancel(stream.req, self.now())

    # ----------------------------------------------------------- stepping
    def _on_token(self, req: Request, produced: int) -> None:
        self.tokens_total += 1
        stream = self._streams.get(id(req))
        if stream is not None:
            stream._push(produced)
            if stream.done:
                del self._streams[id(req)]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        engine = self.engine
        while True:
            wake = engine.wake_s
            if wake is None:
                self._kick.clear()
                await self._kick.wait()
                continue
            delay = self._t0 + wake * self.time_scale - loop.time()
            # Behind schedule: step at once, but still let the HTTP side run.
            await asyncio.sleep(delay if delay > 0 else 0)
            engine.advance()
