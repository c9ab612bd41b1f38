from __future__ import annotations

import random

from core.features import build_features
from core.types import BackendView, Endpoint, FleetSnapshot, Health, RoutingRequest
from policies.baselines.presets import NoParams, round_robin


def view(name: str, models: set[str], health: Health = Health.READY) -> BackendView:
    return BackendView(
        backend_id=name,
        models=frozenset(models),
        gpu_class="h100",
        weight=1.0,
        max_concurrency=None,
        health=health,
        in_flight_requests=0,
        awaiting_first_byte=0,
        in_flight_prompt_tokens=0,
        in_flight_predicted_decode_tokens=0.0,
    )


def request(model: str) -> RoutingRequest:
    return RoutingRequest(
        build_features(
            request_id="r",
            endpoint=Endpoint.CHAT,
            body={"model": model, "messages": []},
            route="d",
            tenant="t",
            priority="p",
            arrival_s=0.0,
        )
    )


def test_rotates_over_healthy_backends_of_the_model() -> None:
    snap = FleetSnapshot(
        (view("a", {"m"}), view("b", {"m"}), view("c", {"other"}), view("d", {"m"}, Health.DOWN)), 0.0
    )
    policy = round_robin(NoParams())
    rng = random.Random(0)
    picks = [policy.route(request("m"), snap, 0.0, rng).ranked for _ in range(3)]
    assert picks == [("a", "b"), ("b", "a"), ("a", "b")]


def test_no_candidate_gives_reason_not_exception() -> None:
    decision = round_robin(NoParams()).route(
        request("nope"), FleetSnapshot((view("a", {"m"}),), 0.0), 0.0, random.Random()
    )
    assert decision.ranked == () and decision.chosen is None
    assert "nope" in (decision.reason or "")
