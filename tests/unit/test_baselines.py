"""The peer baselines, by config name, behave as their sources describe."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from core.config import PolicyConfig
from core.protocols import RoutingPolicy
from core.types import FleetSnapshot, RoutingRequest
from policies import build_policy
from tests.unit.policy_builders import features, request, snapshot, view


def policy(name: str, **params: Any) -> RoutingPolicy:
    return build_policy(PolicyConfig(name=name, params=params))


def chosen_counts(p: RoutingPolicy, req: RoutingRequest, snap: FleetSnapshot, n: int = 300) -> Counter[str]:
    return Counter(p.route(req, snap, 0.0, random.Random(seed)).chosen or "" for seed in range(n))


LOADED = snapshot(
    view("a", in_flight_requests=9, in_flight_prompt_tokens=100),
    view("b", in_flight_requests=3, in_flight_prompt_tokens=9_000),
    view("c", in_flight_requests=5, in_flight_prompt_tokens=50, in_flight_predicted_decode_tokens=60.0),
)


def test_random_spreads_uniformly() -> None:
    counts = chosen_counts(policy("random"), request(), LOADED, 900)
    assert set(counts) == {"a", "b", "c"} and all(240 <= c <= 360 for c in counts.values())


def test_least_outstanding_and_least_tokens() -> None:
    assert policy("least_outstanding").route(request(), LOADED, 0.0, random.Random(0)).ranked == (
        "b",
        "c",
        "a",
    )
    # a: 100 tokens, b: 9,000, c: 110 -> a first.
    assert policy("least_tokens").route(request(), LOADED, 0.0, random.Random(0)).ranked == ("a", "c", "b")


def test_power_of_two_never_picks_the_most_loaded() -> None:
    counts = chosen_counts(policy("power_of_two"), request(), LOADED, 600)
    assert counts["a"] == 0
    assert 330 <= counts["b"] <= 470  # the least loaded wins 2 of the 3 pairs


FLEET6 = snapshot(*(view(f"b{i}") for i in range(6)))


def session_request(key: str | None) -> RoutingRequest:
    return request(features(session=key))


def test_consistent_hash_is_sticky_and_moves_few_sessions_when_a_backend_leaves() -> None:
    p = policy("consistent_hash")
    keys = [f"user-{i}" for i in range(300)]
    before = {
        k: p.route(session_request(k), FLEET6, 0.0, random.Random(i)).chosen for i, k in enumerate(keys)
    }
    again = {k: p.route(session_request(k), FLEET6, 0.0, random.Random(99)).chosen for k in keys}
    assert before == again  # the rng plays no part when there is a key
    assert len(set(before.values())) == 6
    smaller = snapshot(*(view(f"b{i}") for i in range(5)))
    after = {k: p.route(session_request(k), smaller, 0.0, random.Random(0)).chosen for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == "b5" for k in moved)  # only the departed backend's sessions move
    # A second instance (another proxy replica) builds the same ring.
    other = policy("consistent_hash")
    assert {k: other.route(session_request(k), FLEET6, 0.0, random.Random(0)).chosen for k in keys} == before


def test_consistent_hash_bounded_load_skips_a_full_backend() -> None:
    p = policy("consistent_hash", load_factor=1.25)
    home = p.route(session_request("alice"), FLEET6, 0.0, random.Random(0)).chosen
    # Total 10 in flight on 6 backends: capacity ceil(1.25 * 11 / 6) = 3; the home backend holds 10.
    busy = snapshot(*(view(f"b{i}", in_flight_requests=10 if f"b{i}" == home else 0) for i in range(6)))
    decision = p.route(session_request("alice"), busy, 0.0, random.Random(0))
    assert decision.chosen != home and decision.ranked[-1] == home


def test_consistent_hash_without_a_key_is_random() -> None:
    counts = chosen_counts(policy("consistent_hash"), session_request(None), FLEET6, 600)
    assert len(counts) == 6


PROMPT = features("q" * 4_000)  # 4,007 chars ~ 1,002 tokens


def test_sglang_balanced_hit_goes_to_the_best_match() -> None:
    snap = snapshot(view("a", in_flight_requests=10), view("b", in_flight_requests=2))
    # match rate a = 400*4/4007 = 0.40 > 0.3 -> a, although busier.
    req = request(PROMPT, matched={"a": 400, "b": 16}, indexed={"a": 10**6, "b": 0})
    assert policy("sglang_cache_aware").route(req, snap, 0.0, random.Random(0)).ranked == ("a", "b")


def test_sglang_miss_goes_to_the_smallest_tree_not_the_shortest_queue() -> None:
    snap = snapshot(view("a", in_flight_requests=30), view("b", in_flight_requests=2), view("c"))
    # best match rate 272*4/4007 = 0.27 <= 0.3 -> smallest tree: a.
    req = request(PROMPT, matched={"b": 272}, indexed={"a": 100, "b": 5_000, "c": 9_000})
    assert policy("sglang_cache_aware").route(req, snap, 0.0, random.Random(0)).chosen == "a"
    # A stricter threshold turns the same request into a hit on b.
    strict = policy("sglang_cache_aware", cache_threshold=0.2)
    assert strict.route(req, snap, 0.0, random.Random(0)).chosen == "b"


def test_sglang_imbalance_overrides_cache_affinity() -> None:
    # max - min = 70 > 64 and 80 > 1.5 * 10 -> shortest queue, whatever the match.
    snap = snapshot(
        view("a", in_flight_requests=80), view("b", in_flight_requests=10), view("c", in_flight_requests=30)
    )
    req = request(PROMPT, matched={"a": 1_000})
    assert policy("sglang_cache_aware").route(req, snap, 0.0, random.Random(0)).ranked == ("b", "c", "a")
    # Relative condition not met (max 80 <= 1.5 * 60): stays cache-aware.
    snap = snapshot(view("a", in_flight_requests=80), view("b", in_flight_requests=60))
    assert (
        policy("sglang_cache_aware", balance_abs_threshold=10).route(req, snap, 0.0, random.Random(0)).chosen
        == "a"
    )


def test_dynamo_temperature_zero_is_argmin_and_positive_temperature_samples() -> None:
    snap = snapshot(
        view("a", in_flight_prompt_tokens=800), view("b"), view("c", in_flight_prompt_tokens=2_000)
    )
    req = request(PROMPT, matched={"a": 992})
    # logits: a = 10/16 + 50 + 63 = 113.6; b = 1002/16 + 0 + 63 = 125.6; c = 62.6 + 125 + 63 = 250.6
    assert policy("dynamo_cost").route(req, snap, 0.0, random.Random(0)).ranked == ("a", "b", "c")
    counts = chosen_counts(policy("dynamo_cost", temperature=0.5), req, snap, 600)
    assert counts["a"] > counts["b"] > counts["c"] > 0


def test_prodstack_loadaware_trades_hit_ratio_against_relative_load() -> None:
    snap = snapshot(view("a", in_flight_requests=6), view("b", in_flight_requests=2))
    # mean 4: a = 0.8 - 0.5 = 0.3, b = 0 + 0.5 = 0.5 -> b; with beta 0.25: a = 0.675, b = 0.125 -> a.
    req = request(PROMPT, matched={"a": 802})
    assert policy("prodstack_loadaware").route(req, snap, 0.0, random.Random(0)).chosen == "b"
    assert policy("prodstack_loadaware", beta=0.25).route(req, snap, 0.0, random.Random(0)).chosen == "a"
