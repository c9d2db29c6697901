"""The paged KV cache of one engine: a block pool with a prefix cache.

Blocks are counted, not stored: a sequence holds a number of private blocks
plus references to shared prefix-cache entries. An entry is a run of
``prefix_block_tokens`` prompt tokens identified by a chained hash (the hash
names the whole prefix up to and including the block). An entry nobody
references stays cached and counts as free; it is evicted, least recently
released first, only when a new block is needed and no truly free block is
left (vLLM's free-block queue with lazy eviction).
"""

from __future__ import annotations

from collections import deque
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
        entry = CacheEntry(key, blocks)
        self._entries[key] = entry
        return entry

    def check(self) -> None:
        """Assert the pool's invariants (tests and debug runs)."""
        live = [e for s, e in self._lru if not e.ref and e.stamp == s]
        assert len(live) == len({id(e) for e in live}) == self.evictable_entries
        assert sum(e.blocks for e in live) == self.evictable_blocks, self.evictable_blocks
        unreferenced = [e for e in self._entries.values() if not e.ref]
        assert len(unreferenced) == self.evictable_entries
        assert 0 <= self.used_blocks + self.evictable_blocks <= self.total_blocks
