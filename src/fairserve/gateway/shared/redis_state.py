"""The gateway's shared state on Redis (``state: {backend: redis, url: ...}``).

Keys, all under ``{<namespace>}:`` (one namespace per deployment; the braces
are Redis Cluster's hash tag, so a deployment's keys share one slot and
every script runs on one node): ``rate:<tenant>`` (a tenant's buckets), ``leases:<backend>`` and
``waiters:<backend>`` (engine slots), ``counters``, ``queued``, ``replicas``,
``seen``, ``epoch``, ``settle``, ``learned`` (a stream of the predictors'
updates); the pub/sub channel ``wake``. Backends are
keyed by their URL, so replicas with the same backends list share the same
slots.

Per request, on the request path: one round trip for the rate limit (only for
a tenant with ``requests_per_min`` or ``tokens_per_min``) and one for the
engine slot; the slot's return is sent in the background, and wakes the
replica waiting next for that backend (a message on ``wake``; waiting
replicas otherwise ask again every ``poll_interval_s``). Every
``sync_interval_s``, one round trip merges the fair-queuing counters and
queue lengths (:mod:`.lua` has the scripts, their keys and their answers),
and a second one sends this replica's predictor updates and reads the
others' (a stream, trimmed to the last ``_LEARNED_KEPT``).

When Redis cannot be reached (a timeout or a connection error, one
``timeout_s`` at most), the replica marks it down and tries again every
``retry_interval_s`` without stalling requests meanwhile: with
``on_unavailable: open`` it decides alone (its own buckets, its own
``max_concurrency``), counting each such decision in
``fairserve_shared_state_local_decisions_total``; with ``closed`` it answers
503 to new requests, and queued ones wait for Redis (or their deadline). A
charge is never retried (a lost answer may mean it was applied: the request
is then decided as if Redis were down, never charged twice). Leases taken
while Redis was down, and those a restarted Redis lost, are asserted again
when it answers (:data:`.lua.RENEW`); grants wait out the settle window.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from fairserve.core.policies import FleetCounters
from fairserve.core.predict import SharedLearning
from fairserve.gateway.config import StateConfig
from fairserve.gateway.shared import lua
from fairserve.gateway.shared.base import StateUnavailable
from fairserve.gateway.shared.memory import take_local

#: What a lost or broken Redis raises: redis-py's own errors, the socket's, a
#: timeout, and two that redis-py lets through from a connection a restarted
#: node closed under it: AttributeError (its cluster client hands out a
#: connection without its writer) and RuntimeError (asyncio's "unable to
#: perform operation on <TCPTransport closed=True>"). Each marks the state
#: down (logged) and reconnects; none ends a worker.
REDIS_OUTAGE = (RedisError, OSError, TimeoutError, AttributeError, RuntimeError)

if TYPE_CHECKING:
    from fairserve.core.policies.base import Policy
    from fairserve.core.predict import Predictor
    from fairserve.gateway.backends.state import BackendState
    from fairserve.gateway.dispatch import Scheduler
    from fairserve.gateway.metrics import GatewayMetrics
    from fairserve.gateway.tenants import Tenants, TenantState

log = logging.getLogger("fairserve.gateway.shared")
T = TypeVar("T")

#: Seconds a round trip is expected to take at most (histogram buckets).
_RTT_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: Slots asked for in one round trip at most (a deep local queue fills faster).
_MAX_GRANT = 8
#: Predictor updates the stream keeps (a starting replica learns from these),
#: read per merge at most, and held while Redis is away (the oldest dropped).
_LEARNED_KEPT = 10_000
_LEARNED_READ = 1000
_LEARNED_HELD = 10_000


class _StateMetrics:
    """``fairserve_shared_state_*`` on the gateway's registry."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        r = metrics.registry
        self.up = Gauge("fairserve_shared_state_up", "1 while the shared state (Redis) answers.",
                        registry=r)  # fmt: skip
        self.errors = Counter("fairserve_shared_state_errors",
                              "Shared-state round trips that failed, by operation.", ["op"],
                              registry=r)  # fmt: skip
        self.local = Counter("fairserve_shared_state_local_decisions",
                             "Decisions taken on this replica's own state because the shared "
                             "state was unavailable (on_unavailable: open), by kind.", ["kind"],
                             registry=r)  # fmt: skip
        self.learned = Counter("fairserve_shared_state_predictor_updates",
                               "Predictor updates sent to the other replicas (sent) and "
                               "applied from them (applied).", ["direction"],
                               registry=r)  # fmt: skip
        self.wakes = Counter("fairserve_shared_state_wakes",
                             "Wake messages received: a released engine slot is held for this replica.",
                             registry=r)  # fmt: skip
        self.rtt = Histogram("fairserve_shared_state_round_trip_seconds",
                             "Shared-state round trips, by operation.", ["op"],
                             buckets=_RTT_BUCKETS_S, registry=r)  # fmt: skip


class _Leases:
    """The engine slots this replica holds on one backend: idle (granted) and busy."""

    __slots__ = ("busy", "idle", "key", "waiters")

    def __init__(self, key: str, waiters: str) -> None:
        self.key = key
        self.waiters = waiters
        self.idle: list[str] = []
        self.busy: list[str] = []

    def held(self) -> list[str]:
        """Every lease this replica holds here."""
        return self.idle + self.busy


class RedisState:
    """Rate limits and engine slots shared exactly, counters every ``sync_interval_s``."""

    shared = True

    def __init__(self, config: StateConfig, replica: str | None = None) -> None:
        self.config = config
        self.replica = replica or uuid.uuid4().hex[:12]
        self.up = False
        self.epoch = ""  # the epoch last seen ("" before the first answer)
        self._ns = "{" + config.namespace + "}"
        self._names = (f"{self.replica}:{i}" for i in itertools.count())
        self._client: aioredis.Redis | RedisCluster | None = None
        self._scripts: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._leases: dict[int, _Leases] = {}
        self._wanted: set[int] = set()  # backends the dispatcher waits for a slot of
        self._waiting: set[int] = set()  # backends whose waiters this replica is among
        self._releases: dict[int, list[str]] = {}
        self._synced: dict[str, float] = {}  # tenant -> fleet counter at the last merge
        self._lifted: dict[str, float] = {}  # tenant -> the policy's ``lifted`` then
        self._fleet_queued: dict[str, tuple[int, int]] = {}  # tenant -> (fleet, ours) then
        self._learner: SharedLearning | None = None
        self._outbox: deque[tuple[str, float]] = deque(maxlen=_LEARNED_HELD)
        self._learned_id = "0-0"  # the last stream entry read (from the start: learn the past)
        self._renewed_s = -1.0
        # Renewals and returns of leases go one at a time: a renewal sent before a
        # return but arriving after it would bring the returned lease back to life.
        self._lease_lock = asyncio.Lock()
        self._reconnecting: asyncio.Task[None] | None = None
        self._scheduler: Scheduler | None = None
        self._policy: Policy | None = None
        self._tenants: Tenants | None = None
        self._metrics: _StateMetrics | None = None

    # ------------------------------------------------------------ wiring
    def bind(
        self,
        scheduler: Scheduler,
        policy: Policy,
        tenants: Tenants,
        metrics: GatewayMetrics,
        predictor: Predictor | None = None,
    ) -> None:
        """Attach to the gateway's dispatcher, policy, tenants, metrics registry and predictor."""
        self._scheduler, self._policy, self._tenants = scheduler, policy, tenants
        self._metrics = _StateMetrics(metrics)
        if isinstance(predictor, SharedLearning):
            self._learner = predictor
        for b in scheduler.backends:
            key = f"{self._ns}:leases:{b.url}"
            self._leases[b.index] = _Leases(key, f"{self._ns}:waiters:{b.url}")
            self._releases[b.index] = []

    async def start(self) -> None:
        """Connect (a failure here is an outage like any other) and start the workers."""
        cfg = self.config
        assert cfg.url is not None and self._scheduler is not None
        self._wake = asyncio.Event()
        self._lease_lock = asyncio.Lock()
        # No retries inside the client: a failed round trip is an outage the
        # replica handles (a charge must never be sent twice).
        options: dict[str, Any] = dict(
            decode_responses=True, socket_timeout=cfg.timeout_s,
            socket_connect_timeout=cfg.timeout_s, retry=Retry(NoBackoff(), 0),
        )  # fmt: skip
        if cfg.cluster:
            self._client = RedisCluster.from_url(cfg.url, **options)
        else:
            self._client = aioredis.Redis.from_url(cfg.url, **options)
        for name in ("RATE", "ACQUIRE", "RELEASE", "RENEW", "SYNC"):
            self._scripts[name] = self._client.register_script(getattr(lua, name))
        if not await self._connect():
            self._down("connect", None)
        self._tasks = [asyncio.create_task(self._slot_worker()),
                       asyncio.create_task(self._sync_worker()),
                       asyncio.create_task(self._wake_worker())]  # fmt: skip

    async def close(self) -> None:
        """Stop the workers, send the predictor updates not yet sent, give back every
        lease held, close the connections."""
        for task in [*self._tasks, self._reconnecting]:
            if task is not None:
                task.cancel()
                # A worker that already died of an error the client raised (seen
                # after a cluster node restart: a connection without its writer)
                # must not stop the shutdown and leak every connection.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.up:
            with contextlib.suppress(*REDIS_OUTAGE):
                await self.exchange_learned()
            for index, leases in self._leases.items():
                self._releases[index] += leases.held()
                leases.idle.clear()
            with contextlib.suppress(*REDIS_OUTAGE):
                await self._flush_releases()
        if self._client is not None:
            with contextlib.suppress(*REDIS_OUTAGE):
                await self._client.aclose()

    # ------------------------------------------------------------ round trips
    async def _call(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        """One round trip, timed; raises on failure (the caller decides)."""
        assert self._metrics is not None
        start = time.perf_counter()
        try:
            result = await call()
        except REDIS_OUTAGE:
            self._metrics.errors.labels(op).inc()
            raise
        self._metrics.rtt.labels(op).observe(time.perf_counter() - start)
        return result

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        return self._scripts[name](keys=keys, args=args)

    def _key(self, name: str) -> str:
        return f"{self._ns}:{name}"

    def _settle_ms(self) -> int:
        cfg = self.config
        return round(1000 * (cfg.retry_interval_s + 2 * cfg.sync_interval_s + 2 * cfg.timeout_s))

    def _waiter_ttl_ms(self) -> int:
        # A waiter not heard from in this long gave up (or died): its turn passes on.
        cfg = self.config
        return round(1000 * (max(0.05, 10 * cfg.poll_interval_s) + cfg.timeout_s))

    def _common(self) -> tuple[list[str], list[Any]]:
        ttl_ms = round(self.config.lease_ttl_s * 1000)
        keys = [self._key("epoch"), self._key("settle")]
        return keys, [self.replica, self.epoch, ttl_ms, self._settle_ms()]

    # ------------------------------------------------------------ availability
    def _down(self, op: str, exc: BaseException | None) -> None:
        if self.up or self._reconnecting is None:
            log.warning("shared state unavailable (%s): %s; on_unavailable=%s", op, exc,
                        self.config.on_unavailable)  # fmt: skip
        self.up = False
        if self._metrics is not None:
            self._metrics.up.set(0)
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())
        self._dispatch_soon()

    async def _connect(self) -> bool:
        """Renew (re-assert) every lease held; True once Redis answered."""
        try:
            await self._renew()
            await self._flush_releases()
        except REDIS_OUTAGE:
            return False
        self.up = True
        assert self._metrics is not None
        self._metrics.up.set(1)
        return True

    async def _reconnect(self) -> None:
        # Pooled connections to a Redis that went away are dead even once it is back:
        # drop them all, so no request meets one later.
        client = self._client
        assert client is not None
        with contextlib.suppress(*REDIS_OUTAGE):
            if isinstance(client, RedisCluster):
                await client.aclose()  # (the next command maps the cluster again)
            else:
                await client.connection_pool.disconnect()
        while not await self._connect():
            await asyncio.sleep(self.config.retry_interval_s)
        log.warning("shared state reachable again")
        self._wake.set()
        self._dispatch_soon()

    def _dispatch_soon(self) -> None:
        if self._scheduler is not None:
            asyncio.get_running_loop().call_soon(self._scheduler.dispatch)

    def check_available(self) -> None:
        """Closed mode: refuse while Redis is down."""
        if not self.up and self.config.on_unavailable == "closed":
            raise StateUnavailable()

    # ------------------------------------------------------------ rate limits
    async def take_rate(self, tenant: TenantState, cost_tokens: int, now_s: float) -> float:
        """Both buckets checked and charged in one script; the tenant's local buckets mirror it."""
        rq, tk = tenant.requests, tenant.tokens
        if rq is None and tk is None:
            return 0.0
        if not self.up:
            return self._rate_locally(tenant, cost_tokens, now_s)
        # Seeds: this replica's last view, for buckets a restarted Redis lost (not full ones).
        args = [rq.capacity if rq else 0, tk.capacity if tk else 0, cost_tokens,
                _seed(rq, now_s), _seed(tk, now_s), 180]  # fmt: skip
        try:
            taken, wait, rl, tl = await self._call(
                "rate", lambda: self._script("RATE", [self._key(f"rate:{tenant.name}")], args)
            )
        except REDIS_OUTAGE as exc:
            self._down("rate", exc)
            return self._rate_locally(tenant, cost_tokens, now_s)
        if rq is not None:
            rq.level, rq.stamp_s = float(rl), now_s
        if tk is not None:
            tk.level, tk.stamp_s = float(tl), now_s
        return 0.0 if int(taken) else float(wait)

    def _rate_locally(self, tenant: TenantState, cost_tokens: int, now_s: float) -> float:
        if self.config.on_unavailable == "closed":
            raise StateUnavailable()
        assert self._metrics is not None
        self._metrics.local.labels("rate").inc()
        return take_local(tenant, cost_tokens, now_s)

    # ------------------------------------------------------------ queue lengths
    def queued(self, tenant: TenantState) -> int:
        """The fleet's count at the last merge, with this replica's own as it is now."""
        fleet, ours = self._fleet_queued.get(tenant.name, (0, 0))
        return max(tenant.queued, fleet - ours + tenant.queued)

    # ------------------------------------------------------------ engine slots
    def has_slot(self, backend: BackendState) -> bool:
        """A granted, unused lease; else ask for one in the background (up), or decide alone."""
        if not self.up:
            return self.config.on_unavailable == "open"
        if self._leases[backend.index].idle:
            return True
        self._wanted.add(backend.index)
        self._wake.set()
        return False

    def take_slot(self, backend: BackendState) -> None:
        """Use an idle lease; while Redis is down (open), a lease asserted when it is back."""
        leases = self._leases[backend.index]
        if leases.idle:
            leases.busy.append(leases.idle.pop())
            return
        assert not self.up, "take_slot without has_slot"
        assert self._metrics is not None
        self._metrics.local.labels("slot").inc()
        leases.busy.append(next(self._names))

    def give_slot(self, backend: BackendState) -> None:
        """The lease goes back to the fleet at once (sent in the background)."""
        leases = self._leases[backend.index]
        self._releases[backend.index].append(leases.busy.pop())
        self._wake.set()

    async def _slot_worker(self) -> None:
        """Return freed leases; ask for slots the dispatcher is waiting for, in turn."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.up:
                continue
            try:
                # Returns first: a slot freed here is then free for this very ask.
                await self._flush_releases()
                granted = await self._acquire_wanted()
                self._release_unused()
                # Leaves the waiters of backends no longer waited for: the turn passes on.
                await self._flush_releases(frozenset(self._waiting - self._wanted))
            except REDIS_OUTAGE as exc:
                self._down("slot", exc)
                continue
            if self._wanted and not granted:
                # Still waiting: a freed slot wakes this worker (the wake channel);
                # the poll is the fallback for a wake that did not come.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.poll_interval_s)
            if self._wanted:
                self._wake.set()

    async def _acquire_wanted(self) -> bool:
        wanted, self._wanted = sorted(self._wanted), set()
        if not wanted:
            return False
        assert self._scheduler is not None
        want = max(1, min(_MAX_GRANT, self._scheduler.queued))
        keys, args = self._common()
        keys.append(self._key("seen"))
        args += [self._waiter_ttl_ms(), repr(self._head_rank()), self._key("wake")]
        for index in wanted:
            keys += [self._leases[index].key, self._leases[index].waiters]
        by_index = {b.index: b for b in self._scheduler.backends}
        args += [len(wanted), *(by_index[i].config.max_concurrency for i in wanted)]
        names = [next(self._names) for _ in range(want)]
        status, epoch, pos, count = await self._call(
            "acquire", lambda: self._script("ACQUIRE", keys, [*args, *names])
        )
        if int(status) == -1:  # Redis lost what it knew: assert ours before asking again
            self.epoch = epoch
            await self._renew()
            self._wanted.update(wanted)
            return False
        self.epoch = epoch
        if int(status) != 1:
            self._wanted.update(wanted)  # wait for a turn (or the settle window)
            if int(status) == 0:
                self._waiting.update(wanted)
            return False
        self._waiting.clear()  # the script took this replica out of every waiters set
        self._leases[wanted[int(pos) - 1]].idle += names[: int(count)]
        self._scheduler.dispatch()  # uses them now; re-marks what it still waits for
        return True

    def _head_rank(self) -> float:
        """Where this replica's next request stands in the fleet's order (lower: sooner).

        Under a policy with merged counters (``FleetCounters``: ``vtc``,
        ``wrr``, ``fair-sjf``, ``uwfq``) its ``fleet_rank``, on the fleet's
        counters as of the last merge, so the fleet serves the tenant with the
        least service first whichever replica holds its request. Other
        policies rank by arrival (wall clock, comparable across replicas).
        """
        assert self._scheduler is not None and self._policy is not None
        policy = self._policy
        now = self._scheduler.clock()
        head = policy.peek(now)
        if head is None:  # only retries wait: they go first
            return float("-inf")
        if isinstance(policy, FleetCounters):
            return policy.fleet_rank(head)
        return time.time() - (now - head.arrival_s)

    def _release_unused(self) -> None:
        for index, leases in self._leases.items():
            if leases.idle and index not in self._wanted:
                self._releases[index] += leases.idle
                leases.idle = []

    async def _flush_releases(self, leave: frozenset[int] = frozenset()) -> None:
        """Give back the leases freed here, and leave the waiters of ``leave``, in one script."""
        async with self._lease_lock:
            pending = {i: list(names) for i, names in self._releases.items() if names}
            if not pending and not leave:
                return
            keys: list[str] = []
            args: list[Any] = [self.replica, self._key("wake")]
            for index in sorted(pending.keys() | leave):
                names = pending.get(index, [])
                keys += [self._leases[index].key, self._leases[index].waiters]
                args += [int(index in leave), len(names), *names]
            await self._call("release", lambda: self._script("RELEASE", keys, args))
            for index, names in pending.items():
                del self._releases[index][: len(names)]
            self._waiting -= leave

    async def _wake_worker(self) -> None:
        """Listen on the wake channel: a slot freed for this replica wakes its slot worker."""
        client = self._client
        assert client is not None
        while True:
            if isinstance(client, RedisCluster):
                # a cluster's pub/sub picks its node from the client's slot map
                try:
                    await client.initialize()
                except REDIS_OUTAGE:
                    await asyncio.sleep(self.config.retry_interval_s)
                    continue
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._key("wake"))
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and self.replica in str(message["data"]).split():
                        assert self._metrics is not None
                        self._metrics.wakes.inc()
                        self._wake.set()
            except Exception as exc:
                # Redis is away (the other workers see it too), or the pub/sub
                # connection broke in a way the client does not wrap in a
                # RedisError (a cluster node restarted under it). Wakes only
                # hurry the slot worker, whose poll covers missed ones: listen
                # again, whatever it was.
                if not isinstance(exc, REDIS_OUTAGE):
                    log.warning("wake listener: %r; subscribing again", exc)
                await asyncio.sleep(self.config.retry_interval_s)
            finally:
                with contextlib.suppress(*REDIS_OUTAGE):
                    await pubsub.aclose()

    async def _renew(self) -> None:
        async with self._lease_lock:
            keys, args = self._common()
            for leases in self._leases.values():
                held = leases.held()
                keys.append(leases.key)
                args += [len(held), *held]
            self.epoch = await self._call("renew", lambda: self._script("RENEW", keys, args))
            self._renewed_s = time.monotonic()

    # ------------------------------------------------------------ counters
    async def _sync_worker(self) -> None:
        """Every ``sync_interval_s``: merge counters and queue lengths; renew leases when due."""
        while True:
            await asyncio.sleep(self.config.sync_interval_s)
            if not self.up:
                continue
            try:
                await self.sync()
                await self.exchange_learned()
                if time.monotonic() - self._renewed_s > self.config.lease_ttl_s / 4:
                    await self._renew()
            except REDIS_OUTAGE as exc:
                self._down("sync", exc)

    async def sync(self) -> None:
        """One merge of this replica's counter changes and queue lengths with the fleet's."""
        assert self._tenants is not None and self._policy is not None
        policy = self._policy
        shared = policy if isinstance(policy, FleetCounters) else None
        tenants = self._tenants.by_name
        if shared is None:  # (a policy is falsy while its queue is empty: no ``if shared``)
            names, before, lifted = list(tenants), [0.0] * len(tenants), {}
        else:
            names = shared.counter_names(list(tenants))
            before = [shared.counter(n) for n in names]
            lifted = shared.lifted
        lifts = [lifted.get(n, 0.0) - self._lifted.get(n, 0.0) for n in names]
        queued = [tenants[n].queued if n in tenants else 0 for n in names]
        keys, args = self._common()
        keys += [self._key("counters"), self._key("replicas"), self._key("queued")]
        for n, full, lift, q in zip(names, before, lifts, queued, strict=True):
            t = tenants.get(n)
            # a counter that is no tenant's (uwfq's clock) has no buckets
            keys.append(self._key(f"rate:{n}") if t else self._key("counters"))
            buckets = (t.requests, t.tokens) if t else (None, None)
            caps = [b.capacity if b is not None else 0 for b in buckets]
            charged = full - self._synced.get(n, 0.0) - lift
            args += [n, charged, full, 1 if lift > 0 else 0, q, *caps]
        reply = await self._call("sync", lambda: self._script("SYNC", keys, args))
        assert self._scheduler is not None
        now_s = self._scheduler.clock()
        epoch = reply[0]
        if self.epoch and epoch != self.epoch:
            self.epoch = epoch
            await self._renew()
        self.epoch = epoch
        for i, n in enumerate(names):
            counter_s, fleet_queued, requests, tokens = reply[1 + 4 * i : 5 + 4 * i]
            fleet = float(counter_s)
            if shared is not None and fleet != before[i]:
                shared.add_to_counter(n, fleet - before[i])  # changes since ``before`` stay
            self._synced[n] = fleet
            self._lifted[n] = self._lifted.get(n, 0.0) + lifts[i]
            t = tenants.get(n)
            if t is None:
                continue
            self._fleet_queued[n] = (int(fleet_queued), queued[i])
            # the buckets' fleet levels: what this replica seeds a restarted Redis with
            for bucket, value in ((t.requests, requests), (t.tokens, tokens)):
                if bucket is not None and value != "":
                    bucket.level, bucket.stamp_s = float(value), now_s
        if shared is not None:
            self._scheduler_dispatch()

    # ------------------------------------------------------------ predictor updates
    def learned(self, cls: str, value: float) -> None:
        """Held until the next merge sends it (kept while Redis is away, up to a bound)."""
        if self._learner is not None:
            self._outbox.append((cls, value))

    async def exchange_learned(self) -> None:
        """Send the updates made here; apply the other replicas' since the last read."""
        if self._learner is None:
            return
        assert self._client is not None and self._metrics is not None
        client, key = self._client, self._key("learned")
        sent, self._outbox = self._outbox, deque(maxlen=_LEARNED_HELD)

        async def send() -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for cls, value in sent:
                    fields = {"r": self.replica, "c": cls, "v": repr(value)}
                    pipe.xadd(key, fields, maxlen=_LEARNED_KEPT, approximate=True)  # type: ignore[arg-type]
                pipe.xread({key: self._learned_id}, count=_LEARNED_READ)
                return list(await pipe.execute())

        try:
            replies = await self._call("learned", send)
        except BaseException:
            # Not sent (or not known to be): held for the next merge, oldest first.
            # (A lost answer may mean they were added: then each is learned twice,
            # one EMA step more; none is lost.)
            sent.extend(self._outbox)
            self._outbox = sent
            raise
        self._metrics.learned.labels("sent").inc(len(sent))
        applied = 0
        for _, batch in replies[-1] or []:  # XREAD: [[stream, [(id, fields), ...]]]
            for entry_id, fields in batch:
                self._learned_id = entry_id
                if fields.get("r") != self.replica:
                    self._learner.learn(fields["c"], float(fields["v"]))
                    applied += 1
        self._metrics.learned.labels("applied").inc(applied)

    def _scheduler_dispatch(self) -> None:
        # A merge can change the order of the tenants; the head may be another now.
        if self._scheduler is not None and len(self._scheduler.policy):
            self._scheduler.dispatch()


def _seed(bucket: Any, now_s: float) -> float:
    """A bucket's level refilled to now (0 when the tenant has no such limit)."""
    if bucket is None:
        return 0.0
    bucket.wait_s(0, now_s)
    return float(bucket.level)
