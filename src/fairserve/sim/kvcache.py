"""The paged KV cache of one engine: a block pool with a prefix cache.

Blocks are counted, not stored: a sequence holds a number of private blocks
plus references to shared prefix-cache entries. An entry is a run of
``prefix_block_tokens`` prompt tokens identified by a chained hash (the hash
names the whole prefix up to and including the block). An entry nobody
references stays cached and counts as free; it is evicted, least recently
released first, only when a new block is needed and no truly free block is
left (vLLM's free-block queue with lazy eviction).

Optional tiers behind the GPU pool (``KVTier``: host memory, then a remote
store) keep what the GPU evicts: an evicted entry moves down one tier, and a
prefix lookup that misses on the GPU walks on through the tiers; a hit there
is moved back into GPU blocks (the engine prices the transfer). A block run is
in at most one tier at a time (the tiers are exclusive, a victim cache).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence


class CacheEntry:
    """One cached prefix block run: its hash, its reference count and its size.

    ``stamp`` is the release count at which it last became unreferenced (None
    while it never was, or once evicted); the LRU queue may hold stale copies
    of it (see ``BlockPool``).
    """

    __slots__ = ("blocks", "key", "ref", "stamp")

    def __init__(self, key: int, blocks: int) -> None:
        self.key = key
        self.blocks = blocks
        self.ref = 1
        self.stamp: int | None = None


class BlockPool:
    """Counts of used, cached-free and truly free KV blocks of one engine.

    The LRU order of unreferenced cached entries is a queue of
    ``(stamp, entry)`` appended on release and never searched: an entry that is
    referenced again simply stays in the queue, stale, and eviction skips any
    item whose stamp is not the entry's current one (or whose entry is
    referenced). Releasing and re-acquiring a hot prefix is then two counter
    updates and an append per block instead of two ordered-dict moves
    (measured 5.0 -> 1.9 us for a 16-block prefix). The queue is compacted when
    stale items outnumber live ones, so its size stays within twice the
    cached entries.
    """

    __slots__ = (
        "_entries",
        "_lru",
        "_stamp",
        "evictable_blocks",
        "evictable_entries",
        "evictions",
        "spill",
        "total_blocks",
        "used_blocks",
    )

    def __init__(self, total_blocks: int) -> None:
        if total_blocks < 1:
            raise ValueError(f"total_blocks must be >= 1, got {total_blocks}")
        self.total_blocks = total_blocks
        self.used_blocks = 0  # referenced by some sequence
        self.evictable_blocks = 0  # cached, referenced by none
        self.evictable_entries = 0
        self.evictions = 0
        self._entries: dict[int, CacheEntry] = {}
        self._lru: deque[tuple[int, CacheEntry]] = deque()
        self._stamp = 0
        # The tier evicted entries move to (None: they are gone, the GPU-only cache).
        self.spill: KVTier | None = None

    @property
    def free_blocks(self) -> int:
        """Blocks a new allocation may take (truly free plus evictable cached)."""
        return self.total_blocks - self.used_blocks

    def allocate(self, n: int) -> None:
        """Take ``n`` new private blocks, evicting cached ones if needed."""
        truly_free = self.total_blocks - self.used_blocks - self.evictable_blocks
        if n > truly_free:
            if n > self.total_blocks - self.used_blocks:
                raise AssertionError(f"allocate({n}) with only {self.free_blocks} free blocks")
            self._evict(n - truly_free)
        self.used_blocks += n

    def release(self, n: int) -> None:
        """Return ``n`` private blocks."""
        self.used_blocks -= n
        if self.used_blocks < 0:
            raise AssertionError("released more blocks than were allocated")

    def _evict(self, n: int) -> None:
        lru, entries = self._lru, self._entries
        while n > 0:
            stamp, entry = lru.popleft()
            if entry.ref or entry.stamp != stamp:
                continue  # stale: referenced again, or released again later
            del entries[entry.key]
            entry.stamp = None
            self.evictable_blocks -= entry.blocks
            self.evictable_entries -= 1
            self.evictions += 1
            n -= entry.blocks
            if self.spill is not None:
                self.spill.put(entry.key, entry.blocks)

    def lookup(self, hashes: Sequence[int], max_entries: int) -> tuple[list[CacheEntry], int]:
        """The cached entries of the longest cached prefix of ``hashes`` (at most
        ``max_entries``), and the blocks acquiring them takes out of the free count
        (those of unreferenced hits)."""
        found = list(map(self._entries.get, hashes[:max_entries]))
        if None in found:
            found = found[: found.index(None)]
        hits: list[CacheEntry] = found  # type: ignore[assignment]
        touch = 0
        for entry in hits:
            if not entry.ref:
                touch += entry.blocks
        return hits, touch

    def acquire(self, hits: Sequence[CacheEntry]) -> None:
        """Reference cached entries (hits of a prefix lookup)."""
        for entry in hits:
            if not entry.ref:
                self.evictable_blocks -= entry.blocks
                self.evictable_entries -= 1
                self.used_blocks += entry.blocks
            entry.ref += 1

    def release_entries(self, held: Sequence[CacheEntry]) -> None:
        """Drop references; entries nobody holds become evictable, deepest first."""
        lru = self._lru
        stamp = self._stamp
        for entry in reversed(held):
            entry.ref -= 1
            if not entry.ref:
                stamp += 1
                entry.stamp = stamp
                self.used_blocks -= entry.blocks
                self.evictable_blocks += entry.blocks
                self.evictable_entries += 1
                lru.append((stamp, entry))
        self._stamp = stamp
        if len(lru) > 2 * self.evictable_entries + 64:
            self._compact()

    def _compact(self) -> None:
        self._lru = deque(
            item for item in self._lru if not item[1].ref and item[1].stamp == item[0]
        )

    def register(self, key: int, blocks: int) -> CacheEntry | None:
        """Turn ``blocks`` private blocks just computed into a cached entry.

        Returns the new entry (held once by the caller), or ``None`` when the key
        is already cached (the caller keeps its blocks private, as vLLM keeps a
        duplicate block uncached).
        """
        if key in self._entries:
            return None
        if self.spill is not None:
            # Computed again (the lookup stopped short of it): the GPU copy supersedes.
            self.spill.discard(key)
        entry = CacheEntry(key, blocks)
        self._entries[key] = entry
        return entry

    def lookup_below(
        self, hashes: Sequence[int], start: int, stop: int
    ) -> tuple[list[CacheEntry], int, list[tuple[int, KVTier]]]:
        """Past a GPU lookup's hits (``hashes[:start]``), walk on through the GPU and the
        tiers below up to ``stop``: the GPU entries found on the way, their unreferenced
        blocks, and the ``(key, tier)`` of each run to bring back, in prefix order; the walk
        ends at the first key no tier holds (the hashes are chained)."""
        entries, top = self._entries, self.spill
        more: list[CacheEntry] = []
        touch = 0
        loads: list[tuple[int, KVTier]] = []
        for key in hashes[start:stop]:
            entry = entries.get(key)
            if entry is not None:
                more.append(entry)
                if not entry.ref:
                    touch += entry.blocks
                continue
            tier = top
            while tier is not None and key not in tier.runs:
                tier = tier.lower
            if tier is None:
                break
            loads.append((key, tier))
        return more, touch, loads

    def bring_back(self, loads: Sequence[tuple[int, KVTier]]) -> int:
        """Move the runs ``loads`` names out of their tiers into new GPU blocks, each a
        cached entry held once by the caller (as ``register``); the blocks they took."""
        taken = [(key, tier.take(key)) for key, tier in loads]
        blocks = sum(b for _, b in taken)
        # Taken out first: evictions the allocation causes cannot push these runs down.
        self.allocate(blocks)
        entries = self._entries
        for key, b in taken:
            entries[key] = CacheEntry(key, b)
        return blocks

    def held(self, hashes: Sequence[int], n: int) -> list[CacheEntry]:
        """The GPU entries of ``hashes[:n]`` (every one of them must be cached)."""
        entries = self._entries
        return [entries[key] for key in hashes[:n]]

    def is_cached(self, key: int) -> bool:
        """Whether the run ``key`` is cached on the GPU."""
        return key in self._entries

    def cached_keys(self) -> set[int]:
        """Keys of the GPU-cached entries (tests)."""
        return set(self._entries)

    def check(self) -> None:
        """Assert the pool's invariants (tests and debug runs)."""
        live = [e for s, e in self._lru if not e.ref and e.stamp == s]
        assert len(live) == len({id(e) for e in live}) == self.evictable_entries
        assert sum(e.blocks for e in live) == self.evictable_blocks, self.evictable_blocks
        unreferenced = [e for e in self._entries.values() if not e.ref]
        assert len(unreferenced) == self.evictable_entries
        assert 0 <= self.used_blocks + self.evictable_blocks <= self.total_blocks


class KVTier:
    """One KV tier below the GPU (host memory, a remote store): block runs by key.

    What the tier above evicts is ``put`` here, least recently put first out
    (to ``lower``, else gone) when the ``total_blocks`` capacity is reached; a
    lookup hit is ``take``-n out again (moved back to the GPU, exclusive tiers).
    Blocks here are all cached, none referenced: cached + free = capacity.
    Loads cost ``latency_s`` plus their bytes over ``bandwidth_bytes_s`` each.
    Counters: runs put and evicted, blocks loaded, and (kept by the engine)
    prompt tokens served from the tier at first admission and the seconds of
    transfer.
    """

    __slots__ = (
        "bandwidth_bytes_s",
        "block_bytes",
        "evictions",
        "hit_tokens",
        "latency_s",
        "loaded_blocks",
        "lower",
        "name",
        "puts",
        "runs",
        "total_blocks",
        "transfer_s",
        "used_blocks",
    )

    def __init__(
        self,
        name: str,
        total_blocks: int,
        block_bytes: int,
        bandwidth_bytes_s: float,
        latency_s: float = 0.0,
        lower: KVTier | None = None,
    ) -> None:
        if total_blocks < 0 or block_bytes < 1 or not bandwidth_bytes_s > 0:
            raise ValueError(
                f"tier {name}: total_blocks >= 0, block_bytes >= 1 and bandwidth > 0 needed"
            )
        self.name = name
        self.total_blocks = total_blocks
        self.block_bytes = block_bytes
        self.bandwidth_bytes_s = bandwidth_bytes_s
        self.latency_s = latency_s
        self.lower = lower
        self.runs: OrderedDict[int, int] = OrderedDict()  # key -> blocks, LRU first
        self.used_blocks = 0
        self.puts = self.evictions = self.loaded_blocks = self.hit_tokens = 0
        self.transfer_s = 0.0

    def put(self, key: int, blocks: int) -> None:
        """Keep a run the tier above evicted, making room least recently put first."""
        self.puts += 1
        if blocks > self.total_blocks:
            self._down(key, blocks)  # cannot fit here at all
            return
        runs = self.runs
        while self.used_blocks + blocks > self.total_blocks:
            old, old_blocks = runs.popitem(last=False)
            self.used_blocks -= old_blocks
            self._down(old, old_blocks)
        runs[key] = blocks
        self.used_blocks += blocks

    def _down(self, key: int, blocks: int) -> None:
        self.evictions += 1
        if self.lower is not None:
            self.lower.put(key, blocks)

    def take(self, key: int) -> int:
        """Remove the run ``key`` (a lookup hit, moved up); its blocks."""
        blocks = self.runs.pop(key)
        self.used_blocks -= blocks
        self.loaded_blocks += blocks
        return blocks

    def discard(self, key: int) -> None:
        """Drop ``key`` from this tier or the ones below (a fresher copy exists above)."""
        tier: KVTier | None = self
        while tier is not None:
            blocks = tier.runs.pop(key, None)
            if blocks is not None:
                tier.used_blocks -= blocks
                return
            tier = tier.lower

    def load_s(self, blocks: int) -> float:
        """Seconds to bring ``blocks`` blocks up from this tier (one transfer)."""
        return self.latency_s + blocks * self.block_bytes / self.bandwidth_bytes_s

    @property
    def loaded_bytes(self) -> int:
        """Bytes brought back up from this tier."""
        return self.loaded_blocks * self.block_bytes

    def check(self) -> None:
        """Assert the tier's invariants: its blocks are its runs' and within capacity."""
        assert self.used_blocks == sum(self.runs.values()), (self.name, self.used_blocks)
        assert 0 <= self.used_blocks <= self.total_blocks, (self.name, self.used_blocks)


def tier_chain(top: KVTier | None) -> list[KVTier]:
    """The tiers from ``top`` down."""
    chain: list[KVTier] = []
    while top is not None:
        chain.append(top)
        top = top.lower
    return chain


def prefix_match(pool: BlockPool, hashes: Sequence[int], block_tokens: int) -> tuple[int, int, int]:
    """Tokens of the prefix ``hashes`` names (runs of ``block_tokens``) that ``pool`` and
    its tiers hold: (GPU, first tier, tiers below it), up to the first key none holds."""
    gpu = cpu = remote = 0
    top = pool.spill
    for key in hashes:
        if pool.is_cached(key):
            gpu += 1
        elif top is not None and key in top.runs:
            cpu += 1
        else:
            tier = top.lower if top is not None else None
            while tier is not None and key not in tier.runs:
                tier = tier.lower
            if tier is None:
                break
            remote += 1
    return gpu * block_tokens, cpu * block_tokens, remote * block_tokens


def check_tiers(pool: BlockPool) -> None:
    """Assert the invariants of a pool and its tiers: each tier's own, and every key in
    at most one of the GPU and the tiers."""
    pool.check()
    seen = pool.cached_keys()
    count = len(seen)
    for tier in tier_chain(pool.spill):
        tier.check()
        seen.update(tier.runs)
        count += len(tier.runs)
        assert len(seen) == count, f"a key is in two tiers ({tier.name})"
