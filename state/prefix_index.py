"""Approximate per-backend index of the prompt prefixes routed to each backend, with a hard memory bound.

What it answers: "how many leading tokens of this prompt are probably still in
backend b's KV cache?" - from Sluice's own routing history, without engine KV
events (the approximate mode of SGLang, Dynamo ``--no-kv-events``, llm-d).

Keys: ``RequestFeatures.prefix_hashes``, chained 64-bit hashes of 64-character
chunks (``core.tokens``): two prompts share their first k hashes iff they
share their first k chunks, so "backend b holds hash k" means "b has seen
this exact first k+1 chunks" and one hash lookup tests a whole prefix. One
chunk is ``64 / CHARS_PER_TOKEN`` = 16 estimated tokens = one vLLM KV block.

Layout, per model (KV caches are per model): ``holders[hash]`` is a bitmask of
the backends holding it, and each (model, backend) *partition* keeps an
``OrderedDict[hash -> last routed time]`` in least-recently-routed order.

- **Insert** (post-route hook, ``record_routed``): touch the request's chunks
  last-to-first, so a prompt's *first* chunks are its most recent entries and
  eviction trims prefixes from the tail, as a radix tree evicts leaves.
- **Match** (``match``): because presence is monotone along a prompt (a
  backend holding chunk k holds chunks < k), the longest match of every
  backend is found by binary search over the prompt, once per distinct match
  length: O(L · log n) hash lookups for L distinct lengths, independent of
  the number of backends. Capped at ``max_match_chunks`` chunks.
- **Bound** (``max_entries`` (backend, chunk) pairs in total, never
  exceeded): before adding an entry, evict the least-recently-routed entry of
  the partition being written when it holds at least its fair share
  (``max_entries / partitions``), else of the largest partition.
- **TTL**: entries not routed again within ``ttl_s`` are dropped by a sweep of
  partition heads, at most every ``ttl_s / 8`` (so expiry lags by at most that).
- **Correction** (``correct``): when a backend reports fewer cached prompt
  tokens than the index predicted (usage ``cached_tokens``), its cache is
  smaller than the index assumed. The first chunk it missed was last routed
  at ``t_miss``; as KV caches evict least-recently-used blocks first,
  everything of that backend routed at or before ``t_miss`` is gone too and is
  removed. (The request itself has just refilled its own chunks, which stay.)

Not thread-safe: owned by one DecisionEngine on one event loop.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from core.tokens import CHARS_PER_TOKEN, PREFIX_CHUNK_CHARS
from core.types import BackendId

CHUNK_TOKENS = PREFIX_CHUNK_CHARS // CHARS_PER_TOKEN
_SWEEPS_PER_TTL = 8
_MAX_MEMO_MASKS = 4_096


@dataclass(slots=True)
class _Partition:
    """One backend's entries for one model, least recently routed first."""

    slot: int
    entries: OrderedDict[int, float] = field(default_factory=OrderedDict)


@dataclass(slots=True)
class _ModelIndex:
    holders: dict[int, int] = field(default_factory=dict)
    partitions: dict[BackendId, _Partition] = field(default_factory=dict)


class RoutedPrefix:
    """What ``record_routed`` saw, kept by the engine until the request's outcome arrives (read-only).

    A plain class, not a frozen dataclass: one is built per routed request, and a dataclass's
    generated ``__init__`` stays interpreted code in the compiled build (docs/compiled.md).
    """

    __slots__ = ("backend_id", "model", "predicted_chunks", "prior_routed_s", "total_chunks")

    def __init__(
        self,
        model: str,
        backend_id: BackendId,
        predicted_chunks: int,
        total_chunks: int,
        prior_routed_s: array[float],
    ) -> None:
        self.model: Final = model
        self.backend_id: Final = backend_id
        self.predicted_chunks: Final = predicted_chunks
        self.total_chunks: Final = total_chunks
        # The last routed time of each predicted chunk before this request.
        self.prior_routed_s: Final = prior_routed_s

    def __repr__(self) -> str:
        return (
            f"RoutedPrefix(model={self.model!r}, backend_id={self.backend_id!r}, "
            f"predicted_chunks={self.predicted_chunks}, total_chunks={self.total_chunks})"
        )


@dataclass(slots=True)
class PrefixIndexStats:
    entries: int = 0
    evicted_lru: int = 0
    evicted_ttl: int = 0
    evicted_by_correction: int = 0
    corrections: int = 0
    predicted_hit_tokens: int = 0
    confirmed_hit_tokens: int = 0


class _IndexedTokens(Mapping[BackendId, int]):
    """Lazy view: tokens the index holds per backend for one model (computed only when read)."""

    __slots__ = ("_partitions",)

    def __init__(self, partitions: Mapping[BackendId, _Partition]) -> None:
        self._partitions = partitions

    def __getitem__(self, backend_id: BackendId) -> int:
        return len(self._partitions[backend_id].entries) * CHUNK_TOKENS

    def __iter__(self) -> Iterator[BackendId]:
        return iter(self._partitions)

    def __len__(self) -> int:
        return len(self._partitions)


_NO_PARTITIONS: dict[BackendId, _Partition] = {}

# A chunk hash or a routed time as the loops over a prompt's chunks hold them: a Python object, never
# unboxed. Why: compiled (docs/compiled.md), an ``int`` below 2**62 or a ``float`` local is unboxed,
# and every dict operation on it then boxes it again, i.e. allocates a new object (~77 chunks per
# prompt, several operations each), and every entry written would hold its own copy of the time.
_Key = Any


class PrefixIndex:
    def __init__(self, max_entries: int, ttl_s: float, max_match_chunks: int = 1_024) -> None:
        if max_entries < 1 or ttl_s <= 0 or max_match_chunks < 1:
            raise ValueError("max_entries, ttl_s and max_match_chunks must be positive")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.max_match_chunks = max_match_chunks
        self.stats = PrefixIndexStats()
        self._models: dict[str, _ModelIndex] = {}
        self._slot_of: dict[BackendId, int] = {}
        self._backend_of: dict[int, BackendId] = {}
        self._free_slots: list[int] = []
        self._mask_members: dict[int, tuple[BackendId, ...]] = {}
        self._size = 0
        self._partition_count = 0
        self._next_sweep_s = float("-inf")

    def __len__(self) -> int:
        """Entries held: (model, backend, chunk) triples; never above ``max_entries``."""
        return self._size

    # -- reading ---------------------------------------------------------------------------------

    def match(self, model: str, hashes: Sequence[int], now_s: float) -> dict[BackendId, int]:
        """Estimated cached prompt tokens per backend (backends with no match are absent)."""
        self._maybe_sweep(now_s)
        index = self._models.get(model)
        n = min(len(hashes), self.max_match_chunks)
        if index is None or n == 0:
            return {}
        holders: dict[_Key, int] = index.holders
        chunks: Sequence[_Key] = hashes
        result: dict[BackendId, int] = {}
        if chunks[0] not in holders:
            return result
        # The deepest chunk held by any backend: while no backend has a match length yet, "held by a
        # remaining backend" is "in holders" (a stored mask is never 0), a lookup without int operations
        # (with 64 backends most masks exceed 2**62, and each ``&`` of such ints allocates a new one).
        last = n - 1
        if chunks[last] in holders:
            deepest = last
        else:  # invariant: chunk `low` is held, chunk `high` is not
            low, high = 0, last
            while high - low > 1:
                mid = (low + high) >> 1
                if chunks[mid] in holders:
                    low = mid
                else:
                    high = mid
            deepest = low
        level = holders[chunks[deepest]]
        remaining = ~level  # every backend not yet assigned a match length
        while True:
            tokens = (deepest + 1) * CHUNK_TOKENS
            for backend_id in self._backends_in(level):
                result[backend_id] = tokens
            end = deepest  # longest match still possible for the remaining backends
            if end == 0 or not holders.get(chunks[0], 0) & remaining:
                return result
            last = end - 1
            if holders.get(chunks[last], 0) & remaining:
                deepest = last
            else:  # invariant: chunk `low` held by some remaining backend, chunk `high` by none
                low, high = 0, last
                while high - low > 1:
                    mid = (low + high) >> 1
                    if holders.get(chunks[mid], 0) & remaining:
                        low = mid
                    else:
                        high = mid
                deepest = low
            level = holders.get(chunks[deepest], 0) & remaining
            remaining &= ~level

    def indexed_tokens(self, model: str) -> Mapping[BackendId, int]:
        """Tokens of prefixes held per backend for ``model`` (SGLang's "tree size"); a lazy view."""
        index = self._models.get(model)
        return _IndexedTokens(index.partitions if index is not None else _NO_PARTITIONS)

    # -- writing ---------------------------------------------------------------------------------

    def record_routed(
        self, model: str, backend_id: BackendId, hashes: Sequence[int], now_s: float
    ) -> RoutedPrefix:
        """Note that ``hashes`` were sent to ``backend_id``; returns what ``correct`` needs later."""
        self._maybe_sweep(now_s)
        index = self._models.get(model)
        if index is None:
            index = self._models[model] = _ModelIndex()
        partition = index.partitions.get(backend_id)
        if partition is None:
            partition = index.partitions[backend_id] = _Partition(self._slot(backend_id))
            self._partition_count += 1
        n = min(len(hashes), self.max_match_chunks)
        entries = partition.entries
        chunks: Sequence[_Key] = hashes
        stamp: _Key = now_s  # one object for every entry this request touches (see _Key)
        prior = array("d")
        append_prior = prior.append
        get = entries.get
        for i in range(n):
            routed_s = get(chunks[i])
            if routed_s is None:
                break
            append_prior(routed_s)
        holders = index.holders
        bit = 1 << partition.slot
        victim: _Partition | None = None
        victim_index = index
        evicted = 0
        move_to_end = entries.move_to_end
        for i in range(n - 1, -1, -1):
            chunk = chunks[i]
            if chunk in entries:
                entries[chunk] = stamp
                move_to_end(chunk)
                continue
            if self._size >= self.max_entries:
                if victim is None or not victim.entries:
                    victim, victim_index = self._choose_victim(index, partition)
                old_chunk, _ = victim.entries.popitem(last=False)
                rest = victim_index.holders[old_chunk] & ~(1 << victim.slot)
                if rest:
                    victim_index.holders[old_chunk] = rest
                else:
                    del victim_index.holders[old_chunk]
                self._size -= 1
                evicted += 1
            entries[chunk] = stamp
            holders[chunk] = holders.get(chunk, 0) | bit
            self._size += 1
        self.stats.evicted_lru += evicted
        self.stats.entries = self._size
        return RoutedPrefix(model, backend_id, len(prior), n, prior)

    def correct(self, routed: RoutedPrefix, cached_fraction: float) -> None:
        """Apply a backend's report that ``cached_fraction`` of the request's prompt was a cache hit."""
        actual_chunks = int(max(0.0, min(1.0, cached_fraction)) * routed.total_chunks + 1e-9)
        predicted = routed.predicted_chunks
        self.stats.predicted_hit_tokens += predicted * CHUNK_TOKENS
        self.stats.confirmed_hit_tokens += min(actual_chunks, predicted) * CHUNK_TOKENS
        # One chunk of slack: engines count whole blocks and tokenizers differ from the estimate.
        if actual_chunks >= predicted - 1:
            return
        index = self._models.get(routed.model)
        partition = index.partitions.get(routed.backend_id) if index is not None else None
        if index is None or partition is None:
            return
        self.stats.corrections += 1
        missed_at_s = routed.prior_routed_s[actual_chunks]
        gone: list[_Key] = []  # the oldest entries, up to the missed one (read first, then removed)
        entries: OrderedDict[_Key, float] = partition.entries
        for chunk, routed_s in entries.items():
            if routed_s > missed_at_s:
                break
            gone.append(chunk)
        self._drop_all(index, partition, gone)
        self.stats.evicted_by_correction += len(gone)
        self.stats.entries = self._size

    def remove_backend(self, backend_id: BackendId) -> None:
        """Forget everything about a backend (removed from the fleet)."""
        for index in self._models.values():
            partition = index.partitions.get(backend_id)
            if partition is not None:
                while partition.entries:
                    self._drop(index, partition, next(iter(partition.entries)))
                del index.partitions[backend_id]
                self._partition_count -= 1
        slot = self._slot_of.pop(backend_id, None)
        if slot is not None:
            del self._backend_of[slot]
            self._free_slots.append(slot)
            self._mask_members.clear()  # the slot's bit will name another backend
        self.stats.entries = self._size

    # -- internals -------------------------------------------------------------------------------

    def _backends_in(self, mask: int) -> tuple[BackendId, ...]:
        """Backend ids of the bits of ``mask``; memoised, as the same holder sets recur (shared prompts)."""
        found = self._mask_members.get(mask)
        if found is None:
            members: list[BackendId] = []
            rest = mask
            while rest:
                low_bit = rest & -rest
                members.append(self._backend_of[low_bit.bit_length() - 1])
                rest ^= low_bit
            found = tuple(members)
            if len(self._mask_members) >= _MAX_MEMO_MASKS:
                self._mask_members.clear()
            self._mask_members[mask] = found
        return found

    def _slot(self, backend_id: BackendId) -> int:
        slot = self._slot_of.get(backend_id)
        if slot is None:
            slot = self._free_slots.pop() if self._free_slots else len(self._slot_of)
            self._slot_of[backend_id] = slot
            self._backend_of[slot] = backend_id
        return slot

    def _drop(self, index: _ModelIndex, partition: _Partition, chunk: int) -> None:
        del partition.entries[chunk]
        remaining = index.holders[chunk] & ~(1 << partition.slot)
        if remaining:
            index.holders[chunk] = remaining
        else:
            del index.holders[chunk]
        self._size -= 1

    def _drop_all(self, index: _ModelIndex, partition: _Partition, chunks: list[_Key]) -> None:
        """``_drop`` of each of ``chunks`` (held by ``partition``), in one loop."""
        entries: OrderedDict[_Key, float] = partition.entries
        holders: dict[_Key, int] = index.holders
        keep = ~(1 << partition.slot)
        for chunk in chunks:
            del entries[chunk]
            remaining = holders[chunk] & keep
            if remaining:
                holders[chunk] = remaining
            else:
                del holders[chunk]
        self._size -= len(chunks)

    def _choose_victim(self, index: _ModelIndex, writing: _Partition) -> tuple[_Partition, _ModelIndex]:
        """The partition to evict from: the one being written if it has its fair share, else the largest."""
        fair_share = self.max_entries / max(1, self._partition_count)
        if len(writing.entries) >= fair_share:
            return writing, index
        best: tuple[_Partition, _ModelIndex] = (writing, index)
        for model_index in self._models.values():
            for partition in model_index.partitions.values():
                if len(partition.entries) > len(best[0].entries):
                    best = (partition, model_index)
        return best

    def _maybe_sweep(self, now_s: float) -> None:
        if now_s < self._next_sweep_s:
            return
        self._next_sweep_s = now_s + self.ttl_s / _SWEEPS_PER_TTL
        oldest_kept_s = now_s - self.ttl_s
        for index in self._models.values():
            for partition in index.partitions.values():
                entries = partition.entries
                while entries:
                    chunk, routed_s = next(iter(entries.items()))
                    if routed_s >= oldest_kept_s:
                        break
                    self._drop(index, partition, chunk)
                    self.stats.evicted_ttl += 1
        self.stats.entries = self._size
