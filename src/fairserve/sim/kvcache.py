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

from collections import OrderedDict
from collections.abc import Sequence


class CacheEntry:
    """One cached prefix block run: its hash, its reference count and its size."""

    __slots__ = ("blocks", "key", "ref")

    def __init__(self, key: int, blocks: int) -> None:
        self.key = key
        self.blocks = blocks
        self.ref = 1


class BlockPool:
    """Counts of used, cached-free and truly free KV blocks of one engine."""

    __slots__ = ("_entries", "_lru", "evictable_blocks", "evictions", "total_blocks", "used_blocks")

    def __init__(self, total_blocks: int) -> None:
        if total_blocks < 1:
            raise ValueError(f"total_blocks must be >= 1, got {total_blocks}")
        self.total_blocks = total_blocks
        self.used_blocks = 0  # referenced by some sequence
        self.evictable_blocks = 0  # cached, referenced by none
        self.evictions = 0
        self._entries: dict[int, CacheEntry] = {}
        self._lru: OrderedDict[int, CacheEntry] = OrderedDict()

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
            key, entry = lru.popitem(last=False)
            del entries[key]
            self.evictable_blocks -= entry.blocks
            self.evictions += 1
            n -= entry.blocks

    def lookup(self, hashes: Sequence[int], max_entries: int) -> list[CacheEntry]:
        """The cached entries of the longest cached prefix of ``hashes`` (at most ``max_entries``)."""
        entries = self._entries
        hits: list[CacheEntry] = []
        for key in hashes[:max_entries]:
            entry = entries.get(key)
            if entry is None:
                break
            hits.append(entry)
        return hits

    @staticmethod
    def blocks_to_touch(hits: Sequence[CacheEntry]) -> int:
        """Blocks that acquiring ``hits`` takes out of the free count (unreferenced hits)."""
        return sum(e.blocks for e in hits if e.ref == 0)

    def acquire(self, hits: Sequence[CacheEntry]) -> None:
        """Reference cached entries (hits of a prefix lookup)."""
        lru = self._lru
        for entry in hits:
            if entry.ref == 0:
                del lru[entry.key]
                self.evictable_blocks -= entry.blocks
                self.used_blocks += entry.blocks
            entry.ref += 1

    def release_entries(self, held: Sequence[CacheEntry]) -> None:
        """Drop references; entries nobody holds become evictable, deepest first."""
        lru = self._lru
        for entry in reversed(held):
            entry.ref -= 1
            if entry.ref == 0:
                self.used_blocks -= entry.blocks
                self.evictable_blocks += entry.blocks
                lru[entry.key] = entry

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
        cached_free = sum(e.blocks for e in self._lru.values())
        assert cached_free == self.evictable_blocks, (cached_free, self.evictable_blocks)
        assert all(e.ref == 0 for e in self._lru.values())
        assert 0 <= self.used_blocks + self.evictable_blocks <= self.total_blocks
