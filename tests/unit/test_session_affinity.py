"""``session_affinity``: one session, one backend; stable when other backends come and go."""

from __future__ import annotations

import random

from core.features import build_features
from core.types import BackendView, Endpoint, FleetSnapshot, Health, RoutingRequest
from policies import registered
from policies.baselines.session_affinity import SessionAffinityPolicy


def view(name: str, health: Health = Health.READY, model: str = "m") -> BackendView:
    return BackendView(
        backend_id=name,
        models=frozenset({model}),
        gpu_class="h100",
        weight=1.0,
        max_concurrency=None,
        health=health,
        in_flight_requests=0,
        awaiting_first_byte=0,
        in_flight_prompt_tokens=0,
        in_flight_predicted_decode_tokens=0.0,
    )


def request(session_key: str | None, model: str = "m") -> RoutingRequest:
    return RoutingRequest(
        build_features(
            request_id="r",
            endpoint=Endpoint.CHAT,
            body={"model": model, "messages": []},
            route="d",
            tenant="t",
            priority="p",
            arrival_s=0.0,
            session_key=session_key,
        )
    )


def snapshot(*views: BackendView) -> FleetSnapshot:
    return FleetSnapshot(views, 0.0)


def test_a_session_always_goes_to_the_same_backend_and_sessions_spread() -> None:
    policy, rng = SessionAffinityPolicy(), random.Random(0)
    fleet = snapshot(*(view(f"b{i}") for i in range(4)))
    firsts = {}
    for i in range(200):
        picks = {policy.route(request(f"s{i}"), fleet, 0.0, rng).ranked for _ in range(3)}
        assert len(picks) == 1
        ranked = picks.pop()
        assert sorted(ranked) == ["b0", "b1", "b2", "b3"]  # the rest is the retry order
        firsts[f"s{i}"] = ranked[0]
    counts = [list(firsts.values()).count(f"b{i}") for i in range(4)]
    assert min(counts) >= 30, counts  # 200 sessions over 4 backends: none starved


def test_only_the_sessions_of_a_lost_backend_move() -> None:
    policy, rng = SessionAffinityPolicy(), random.Random(0)
    full = snapshot(*(view(f"b{i}") for i in range(4)))
    degraded = snapshot(*(view(f"b{i}", Health.DOWN if i == 2 else Health.READY) for i in range(4)))
    for i in range(200):
        before = policy.route(request(f"s{i}"), full, 0.0, rng).ranked
        after = policy.route(request(f"s{i}"), degraded, 0.0, rng).ranked
        assert after == tuple(b for b in before if b != "b2")


def test_without_a_session_key_it_is_round_robin_and_without_backends_a_reason() -> None:
    policy, rng = SessionAffinityPolicy(), random.Random(0)
    fleet = snapshot(view("a"), view("b"), view("c", model="other"))
    picks = [policy.route(request(None), fleet, 0.0, rng).ranked for _ in range(3)]
    assert picks == [("a", "b"), ("b", "a"), ("a", "b")]
    empty = policy.route(request("s", model="nope"), fleet, 0.0, rng)
    assert empty.ranked == () and "nope" in (empty.reason or "")
    assert empty.policy == "session_affinity"


def test_registered_under_its_config_name() -> None:
    assert "session_affinity" in registered()
