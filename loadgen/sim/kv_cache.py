"""Paged KV cache with prefix caching, as vLLM v1 keeps it (``block_pool.py``, ``kv_cache_manager.py``).

Blocks are the integers ``0 .. num_blocks-1``, 16 tokens each. Rules, all from vLLM v1:

- A block is *referenced* while at least one running request holds it (``ref count > 0``).
- Unreferenced blocks sit in the **free queue**, least recently freed first. A block in the free
  queue may still carry its hash: it is an evictable cached block, counted as free.
- A full block gets the hash of its content; the hash -> block map lets a later request reuse it
  (a prefix hit), also straight out of the free queue, which takes it out of the queue.
- Allocation pops the head of the free queue; if that block carries a hash, the hash is dropped:
  LRU eviction of unreferenced cached blocks.
- A finished or preempted request frees its blocks tail first, so within one request the tail is
  evicted before the shared head.

Hashes are chained (``core.tokens.prefix_chunk_hashes``), so a hit on block ``i`` implies the whole
prefix up to ``i`` matches; the lookup stops at the first miss. If two blocks ever get the same hash
(computed concurrently), the first keeps it and the second stays anonymous, a simplification of
vLLM's hash -> {block id} map that only matters until the first one is evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence


class BlockPool:
    __slots__ = ("_block_of", "_free", "_hash_of", "_ref", "evictions_total", "num_blocks")

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError("num_blocks must be positive")
        self.num_blocks = num_blocks
        self._ref = [0] * num_blocks
        self._hash_of: list[int | None] = [None] * num_blocks
        self._block_of: dict[int, int] = {}
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.evictions_total = 0

    @property
    def num_free(self) -> int:
        """Blocks that can be allocated now (never used, or cached but unreferenced)."""
        return len(self._free)

    @property
    def num_cached(self) -> int:
        """Blocks carrying a hash, referenced or not."""
        return len(self._block_of)

    @property
    def usage_frac(self) -> float:
        """vLLM's ``kv_cache_usage_perc``: referenced blocks / all blocks."""
        return 1.0 - len(self._free) / self.num_blocks

    def cached_prefix(self, hashes: Iterable[int]) -> list[int]:
        """Blocks holding the longest cached prefix of ``hashes`` (stops at the first miss)."""
        blocks: list[int] = []
        block_of = self._block_of
        for h in hashes:
            block = block_of.get(h)
            if block is None:
                break
            blocks.append(block)
        return blocks

    def num_evictable(self, blocks: Iterable[int]) -> int:
        """How many of ``blocks`` are unreferenced, i.e. counted in ``num_free``."""
        ref = self._ref
        return sum(1 for b in blocks if ref[b] == 0)

    def touch(self, blocks: Iterable[int]) -> None:
        """Take a reference on cached blocks (a prefix hit), pulling free ones out of the queue."""
        ref = self._ref
        free = self._free
        for b in blocks:
            if ref[b] == 0:
                del free[b]
            ref[b] += 1

    def allocate(self, n: int) -> list[int]:
        """Pop ``n`` blocks from the free queue head, evicting their hashes. Caller checks ``num_free``."""
        if n > len(self._free):
            raise RuntimeError(f"allocate({n}) with only {len(self._free)} free blocks")
        out: list[int] = []
        free = self._free
        hash_of = self._hash_of
        ref = self._ref
        for _ in range(n):
            b, _none = free.popitem(last=False)
            h = hash_of[b]
            if h is not None:
                del self._block_of[h]
                hash_of[b] = None
                self.evictions_total += 1
            ref[b] = 1
            out.append(b)
        return out

    def cache(self, block: int, block_hash: int) -> None:
        """Publish a full block under its hash so later requests can hit it."""
        if block_hash in self._block_of or self._hash_of[block] is not None:
            return
        self._block_of[block_hash] = block
        self._hash_of[block] = block_hash

    def free(self, blocks: Sequence[int]) -> None:
        """Drop one reference per block, tail first; unreferenced blocks join the free queue's tail."""
        ref = self._ref
        free = self._free
        for b in reversed(blocks):
            ref[b] -= 1
            if ref[b] == 0:
                free[b] = None

    def is_cached(self, block_hash: int) -> bool:
        return block_hash in self._block_of

    def check_invariants(self) -> None:
        """Consistency check used by tests: refs, free queue and hash maps agree."""
        for b in range(self.num_blocks):
            if self._ref[b] < 0:
                raise AssertionError(f"block {b} has negative refs")
            if (self._ref[b] == 0) != (b in self._free):
                raise AssertionError(f"block {b}: ref {self._ref[b]} but in free queue: {b in self._free}")
            h = self._hash_of[b]
            if h is not None and self._block_of.get(h) != b:
                raise AssertionError(f"block {b}: hash map disagrees")
        if len(self._block_of) != sum(1 for h in self._hash_of if h is not None):
            raise AssertionError("hash map size disagrees")
