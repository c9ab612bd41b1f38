"""The prefix index: matches, eviction (LRU, TTL, fair share), the memory bound, backend corrections."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.tokens import prefix_chunk_hashes
from state.prefix_index import CHUNK_TOKENS, PrefixIndex


def chain(*chunks: str) -> tuple[int, ...]:
    """Hashes of a prompt made of 64-character chunks, each chunk named by a short label."""
    return prefix_chunk_hashes("".join(c.ljust(64, ".") for c in chunks))


SYSTEM = chain("sys1", "sys2")
CONVERSATION = chain("sys1", "sys2", "u1", "a1", "u2")


def test_match_is_longest_routed_prefix_per_backend() -> None:
    index = PrefixIndex(max_entries=1_000, ttl_s=100.0)
    index.record_routed("m", "a", CONVERSATION, now_s=0.0)
    index.record_routed("m", "b", SYSTEM, now_s=0.0)
    follow_up = chain("sys1", "sys2", "u1", "a1", "u2", "a2", "u3")
    assert index.match("m", follow_up, now_s=1.0) == {"a": 5 * CHUNK_TOKENS, "b": 2 * CHUNK_TOKENS}
    assert index.match("m", chain("other", "sys2"), now_s=1.0) == {}
    assert index.match("other-model", follow_up, now_s=1.0) == {}
    assert index.match("m", (), now_s=1.0) == {}
    assert index.indexed_tokens("m") == {"a": 5 * CHUNK_TOKENS, "b": 2 * CHUNK_TOKENS}
    assert dict(index.indexed_tokens("nope")) == {}


def test_match_is_capped_at_max_match_chunks() -> None:
    index = PrefixIndex(max_entries=1_000, ttl_s=100.0, max_match_chunks=3)
    index.record_routed("m", "a", CONVERSATION, now_s=0.0)
    assert len(index) == 3  # only the first 3 chunks are indexed
    assert index.match("m", CONVERSATION, now_s=0.0) == {"a": 3 * CHUNK_TOKENS}


def test_lru_eviction_trims_prefixes_from_the_tail_and_keeps_the_bound() -> None:
    index = PrefixIndex(max_entries=4, ttl_s=100.0)
    index.record_routed("m", "a", CONVERSATION, now_s=0.0)  # 5 chunks into a bound of 4
    assert len(index) == 4
    assert index.match("m", CONVERSATION, now_s=0.0) == {"a": 4 * CHUNK_TOKENS}
    index.record_routed("m", "a", chain("x1", "x2"), now_s=1.0)
    assert len(index) == 4
    # The older conversation lost its tail, never its head.
    assert index.match("m", CONVERSATION, now_s=1.0) == {"a": 2 * CHUNK_TOKENS}
    assert index.stats.evicted_lru == 3


def test_fair_share_protects_a_quiet_backend_from_a_busy_one() -> None:
    index = PrefixIndex(max_entries=10, ttl_s=100.0)
    index.record_routed("m", "quiet", SYSTEM, now_s=0.0)
    for i in range(20):
        index.record_routed("m", "busy", chain(f"busy{i}", "x", "y"), now_s=1.0 + i)
    assert index.match("m", SYSTEM, now_s=30.0) == {"quiet": 2 * CHUNK_TOKENS}
    assert len(index) == 10


def test_ttl_expires_prefixes_not_routed_again() -> None:
    index = PrefixIndex(max_entries=100, ttl_s=80.0)
    index.record_routed("m", "a", SYSTEM, now_s=0.0)
    index.record_routed("m", "b", SYSTEM, now_s=50.0)
    # The sweep runs at most every ttl/8 = 10 s, so expiry lags by at most that.
    assert index.match("m", SYSTEM, now_s=91.0) == {"b": 2 * CHUNK_TOKENS}
    assert index.stats.evicted_ttl == 2
    assert index.match("m", SYSTEM, now_s=200.0) == {}
    assert len(index) == 0


def test_a_reported_miss_removes_what_the_backend_must_have_evicted() -> None:
    index = PrefixIndex(max_entries=100, ttl_s=1_000.0)
    index.record_routed("m", "a", chain("old1", "old2"), now_s=0.0)
    index.record_routed("m", "a", CONVERSATION, now_s=10.0)
    index.record_routed("m", "a", chain("new1"), now_s=20.0)
    routed = index.record_routed("m", "a", CONVERSATION, now_s=30.0)
    assert routed.predicted_chunks == 5
    # The backend says only 2 of the 5 chunks were cached: chunk 2 (last routed at t=10) was evicted,
    # so everything routed to it at or before t=10 is gone as well.
    index.correct(routed, cached_fraction=2 / 5)
    assert index.stats.corrections == 1
    assert index.match("m", chain("old1", "old2"), now_s=31.0) == {}
    assert index.match("m", chain("new1"), now_s=31.0) == {"a": CHUNK_TOKENS}
    # This request refilled its own chunks; they stay.
    assert index.match("m", CONVERSATION, now_s=31.0) == {"a": 5 * CHUNK_TOKENS}
    assert index.stats.predicted_hit_tokens == 5 * CHUNK_TOKENS
    assert index.stats.confirmed_hit_tokens == 2 * CHUNK_TOKENS


@pytest.mark.parametrize("cached_fraction", [1.0, 0.95, 0.8])
def test_a_confirmed_hit_changes_nothing(cached_fraction: float) -> None:
    index = PrefixIndex(max_entries=100, ttl_s=1_000.0)
    index.record_routed("m", "a", CONVERSATION, now_s=0.0)
    routed = index.record_routed("m", "a", CONVERSATION, now_s=1.0)
    index.correct(routed, cached_fraction)  # within one chunk of the prediction
    assert index.stats.corrections == 0
    assert len(index) == 5


def test_remove_backend_frees_its_entries_and_slot() -> None:
    index = PrefixIndex(max_entries=100, ttl_s=100.0)
    index.record_routed("m", "a", CONVERSATION, now_s=0.0)
    index.record_routed("m2", "a", SYSTEM, now_s=0.0)
    index.record_routed("m", "b", SYSTEM, now_s=0.0)
    index.remove_backend("a")
    assert len(index) == 2
    assert index.match("m", CONVERSATION, now_s=0.0) == {"b": 2 * CHUNK_TOKENS}
    index.record_routed("m", "c", CONVERSATION, now_s=1.0)  # reuses the freed slot
    assert index.match("m", CONVERSATION, now_s=1.0) == {"c": 5 * CHUNK_TOKENS, "b": 2 * CHUNK_TOKENS}


def test_invalid_bounds_are_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        PrefixIndex(max_entries=0, ttl_s=1.0)


@pytest.mark.slow
def test_bound_holds_over_one_million_requests() -> None:
    """1M routed requests (multi-turn sessions sharing system prompts, 16 backends) against a
    20k-entry bound: the bound is reached and never exceeded, and eviction keeps up."""
    index = PrefixIndex(max_entries=20_000, ttl_s=30.0)
    rng = random.Random(7)
    systems = [rng.getrandbits(64) for _ in range(8)]
    pool = [
        (f"b{session % 16}", (systems[session % 8], *((session << 8) + k for k in range(depth))))
        for session in range(12_000)
        for depth in range(1, 6)
    ]
    largest = 0
    for i in range(1_000_000):
        backend_id, hashes = pool[(i * 7_919) % len(pool)]
        index.record_routed("m", backend_id, hashes, i * 0.001)
        largest = max(largest, len(index))
    assert largest == index.max_entries == 20_000
    assert index.stats.evicted_lru > 500_000


def _brute_force_match(index: PrefixIndex, model: str, hashes: tuple[int, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    model_index = index._models.get(model)
    if model_index is None:
        return out
    for backend_id, partition in model_index.partitions.items():
        k = 0
        while k < min(len(hashes), index.max_match_chunks) and hashes[k] in partition.entries:
            k += 1
        if k:
            out[backend_id] = k * CHUNK_TOKENS
    return out


def _check_invariants(index: PrefixIndex) -> None:
    assert len(index) <= index.max_entries
    total = 0
    for model_index in index._models.values():
        derived: dict[int, int] = {}
        for partition in model_index.partitions.values():
            total += len(partition.entries)
            for chunk in partition.entries:
                derived[chunk] = derived.get(chunk, 0) | (1 << partition.slot)
            times = list(partition.entries.values())
            assert times == sorted(times)  # least recently routed first
        assert derived == model_index.holders
    assert total == len(index)


_operation = st.tuples(
    st.sampled_from(["route", "route", "route", "correct", "advance", "remove"]),
    st.sampled_from(["m", "m2"]),
    st.sampled_from(["a", "b", "c"]),
    st.lists(st.integers(0, 5), min_size=1, max_size=12),
    st.floats(0.0, 1.0),
)


@settings(max_examples=150, deadline=None)
@given(
    max_entries=st.integers(1, 30),
    ttl_s=st.floats(1.0, 50.0),
    operations=st.lists(_operation, max_size=60),
)
def test_property_bound_consistency_and_exact_matching(
    max_entries: int, ttl_s: float, operations: list[tuple[str, str, str, list[int], float]]
) -> None:
    """Any sequence of routes, corrections, time steps and removals keeps the index within bound and
    consistent, and ``match`` equals a brute-force longest-held-prefix search."""
    index = PrefixIndex(max_entries=max_entries, ttl_s=ttl_s, max_match_chunks=8)
    now_s = 0.0
    last_routed = None
    for kind, model, backend, labels, fraction in operations:
        hashes = prefix_chunk_hashes("".join(str(x) * 64 for x in labels))
        if kind == "route":
            last_routed = index.record_routed(model, backend, hashes, now_s)
        elif kind == "correct" and last_routed is not None:
            index.correct(last_routed, fraction)
        elif kind == "advance":
            now_s += fraction * ttl_s
        elif kind == "remove":
            index.remove_backend(backend)
        _check_invariants(index)
        got = index.match(model, hashes, now_s)
        _check_invariants(index)  # match may sweep expired entries
        assert list(got.items()) == _in_match_order(index, model, _brute_force_match(index, model, hashes))


def _in_match_order(index: PrefixIndex, model: str, matches: dict[str, int]) -> list[tuple[str, int]]:
    """``matches`` in the order ``match`` promises: the deepest match first, then the backends' slot order."""
    if not matches:
        return []
    slots = {backend_id: p.slot for backend_id, p in index._models[model].partitions.items()}
    return sorted(matches.items(), key=lambda item: (-item[1], slots[item[0]]))


def test_match_over_many_backends_and_shared_prefixes() -> None:
    """70 backends (masks beyond 64 bits) holding conversations that share system prompts and branch at
    every depth, with eviction: ``match`` equals the brute-force search, in its promised order."""
    rng = random.Random(11)
    index = PrefixIndex(max_entries=3_000, ttl_s=1e9, max_match_chunks=40)
    systems = [[rng.getrandbits(20) for _ in range(rng.randint(1, 6))] for _ in range(3)]
    conversations = [
        rng.choice(systems) + [rng.getrandbits(20) for _ in range(rng.randint(0, 40))] for _ in range(60)
    ]
    for step in range(2_500):
        labels = rng.choice(conversations)[: rng.randint(1, 50)]
        hashes = prefix_chunk_hashes("".join(f"{x:064d}" for x in labels))
        if rng.random() < 0.7:
            index.record_routed("m", f"b{rng.randrange(70)}", hashes, step * 0.01)
        got = index.match("m", hashes, step * 0.01)
        assert list(got.items()) == _in_match_order(index, "m", _brute_force_match(index, "m", hashes))
