"""The DecisionEngine around policies: prefix index hooks, SLOs, predictor facade, decision log."""

from __future__ import annotations

import random

from core.clock import ManualClock
from core.config import load_config_text
from core.types import (
    BackendView,
    FleetSnapshot,
    Outcome,
    OutputLengthEstimate,
    Predictions,
    RequestFeatures,
    RoutingDecision,
    RoutingRequest,
)
from decision.engine import MAX_PENDING_REQUESTS, DecisionEngine
from state.prefix_index import CHUNK_TOKENS
from tests.unit.policy_builders import features, snapshot, view

CONFIG = """\
backends:
  - {name: a, url: "http://127.0.0.1:1", models: [m]}
  - {name: b, url: "http://127.0.0.1:2", models: [m]}
routes:
  - name: chat
    policy: {name: sglang_cache_aware}
    slo: {ttft_ms: 2000, tpot_ms: 100}
prefix_index: {max_entries: 1000, ttl_s: 600}
"""
FLEET = snapshot(view("a"), view("b"))
SYSTEM_PROMPT = "You are a careful assistant. " * 40  # 1,160 characters, shared by every session


def chat(request_id: str, *turns: str) -> RequestFeatures:
    return features(SYSTEM_PROMPT + "".join(turns), request_id=request_id, route="chat")


def outcome(feats: RequestFeatures, backend_id: str, cached_tokens: int | None) -> Outcome:
    return Outcome(
        request_id=feats.request_id,
        backend_id=backend_id,
        route=feats.route,
        model=feats.model,
        tenant=feats.tenant,
        status_code=200,
        prompt_tokens=feats.prompt_tokens,
        output_tokens=10,
        cached_prompt_tokens=cached_tokens,
        ttft_ms=50.0,
        e2e_ms=200.0,
    )


def make_engine(text: str = CONFIG, **kwargs: object) -> tuple[DecisionEngine, ManualClock]:
    clock = ManualClock(100.0)
    return DecisionEngine.from_config(load_config_text(text), clock, random.Random(0), **kwargs), clock  # type: ignore[arg-type]


def serve(engine: DecisionEngine, feats: RequestFeatures, fleet: FleetSnapshot = FLEET) -> RoutingDecision:
    decision = engine.route(feats, fleet)
    assert decision.chosen is not None
    engine.on_routed(feats, decision, decision.chosen)
    return decision


def test_routed_prefixes_are_matched_for_later_requests() -> None:
    engine, clock = make_engine()
    first = chat("r1", "user: hello there")
    chosen = serve(engine, first).chosen
    clock.advance(1.0)
    second = chat("r2", "user: hello there", "assistant: hi", "user: more please" * 10)
    decision = engine.route(second, FLEET)
    # The sglang rule sees a match rate above 0.3 on the backend that served the first turn.
    assert decision.chosen == chosen
    record = engine.decisions.recent(limit=1)[0]
    assert record["request_id"] == "r2"
    matched = {row["backend"]: row["prefix_matched_tokens"] for row in record["ranked"]}
    assert matched[chosen] == len(first.prefix_hashes) * CHUNK_TOKENS


def test_route_slo_reaches_the_policy() -> None:
    engine, _ = make_engine()
    seen: list[RoutingRequest] = []

    class Spy:
        name = "spy"

        def route(self, request, snapshot, now_s, rng):  # type: ignore[no-untyped-def]
            seen.append(request)
            return RoutingDecision(ranked=("a",), policy="spy")

    engine._policies_by_route["chat"] = engine._default_policy = Spy()
    engine.route(chat("r1"), FLEET)
    assert seen[0].slo.ttft_ms == 2000 and seen[0].slo.tpot_ms == 100
    engine.route(features(request_id="r2", route="unknown-route"), FLEET)
    assert seen[1].slo.ttft_ms is None


def test_a_reported_miss_corrects_the_index() -> None:
    engine, clock = make_engine()
    warm = chat("r1", "user: question one")
    backend = serve(engine, warm).chosen
    engine.observe(outcome(warm, backend or "", cached_tokens=0))
    clock.advance(5.0)
    repeat = chat("r2", "user: question one")
    decision = engine.route(repeat, FLEET)
    engine.on_routed(repeat, decision, backend or "")
    index = engine.prefix_index
    assert index is not None
    # The backend says it had nothing cached although the index predicted the whole prompt.
    engine.observe(outcome(repeat, backend or "", cached_tokens=0))
    assert index.stats.corrections == 1
    assert index.stats.predicted_hit_tokens == len(repeat.prefix_hashes) * CHUNK_TOKENS
    assert index.stats.confirmed_hit_tokens == 0


def test_outcomes_for_another_backend_or_errors_do_not_correct() -> None:
    engine, _ = make_engine()
    feats = chat("r1", "user: hi")
    serve(engine, feats)
    again = chat("r2", "user: hi")
    decision = serve(engine, again)
    other = "b" if decision.chosen == "a" else "a"
    engine.observe(outcome(again, other, cached_tokens=0))  # a retry moved it; no word about the index
    assert engine.prefix_index is not None and engine.prefix_index.stats.corrections == 0


def test_predictor_facade_is_consulted_and_fed() -> None:
    class FakePredictor:
        def __init__(self) -> None:
            self.requests: list[RoutingRequest] = []
            self.observed: list[tuple[Outcome, RequestFeatures, BackendView | None]] = []

        def predict(self, request: RoutingRequest, snapshot: FleetSnapshot) -> Predictions:
            self.requests.append(request)
            return Predictions(OutputLengthEstimate(50.0, 50.0))

        def observe(
            self,
            outcome: Outcome,
            features: RequestFeatures,
            view_at_dispatch: BackendView | None,
            prefix_matched_tokens: int = 0,
            view_at_end: BackendView | None = None,
        ) -> None:
            self.observed.append((outcome, features, view_at_dispatch, view_at_end))

    predictor = FakePredictor()
    engine, _ = make_engine(predictor=predictor)
    feats = chat("r1", "user: hi")
    decision = serve(engine, feats)
    assert decision.predicted_output_tokens == 50.0
    engine.observe(outcome(feats, decision.chosen or "", cached_tokens=None))
    assert predictor.requests[0].slo.ttft_ms == 2000
    ((done, done_features, dispatched_view, end_view),) = predictor.observed
    assert done.request_id == "r1"
    assert done_features is feats and dispatched_view is not None
    assert dispatched_view.backend_id == decision.chosen
    # The latest snapshot's view of the same backend: the load the request decoded with at its end.
    assert end_view is not None and end_view.backend_id == decision.chosen


def test_without_a_predictor_the_expected_length_comes_from_the_prior() -> None:
    engine, _ = make_engine(CONFIG + "predictors: {enabled: false}\n")
    decision = engine.route(chat("r1"), FLEET)
    assert decision.predicted_output_tokens is not None and 190 < decision.predicted_output_tokens < 210


def test_the_configured_predictor_is_loaded_by_default() -> None:
    """A config that says nothing about predictors gets the bundled model: a prompt-specific length."""
    engine, _ = make_engine()
    short = engine.route(chat("r1", "Answer yes or no: is 7 prime?"), FLEET).predicted_output_tokens
    long = engine.route(
        chat("r2", "Write a detailed 2000-word essay on the history of the Roman empire."), FLEET
    ).predicted_output_tokens
    assert short is not None and long is not None and long > 2 * short


def test_all_backends_filtered_is_an_empty_decision_with_a_reason() -> None:
    text = CONFIG.replace(
        "policy: {name: sglang_cache_aware}",
        "policy: {name: pipeline, params: {filters: [{type: max_concurrency}]}}",
    )
    engine, _ = make_engine(text)
    full = snapshot(
        view("a", max_concurrency=1, in_flight_requests=1), view("b", max_concurrency=2, in_flight_requests=2)
    )
    decision = engine.route(chat("r1"), full)
    assert decision.ranked == ()
    assert decision.reason is not None and "max_concurrency" in decision.reason
    assert engine.decisions.recent()[0]["reason"] == decision.reason


def test_pending_requests_are_bounded() -> None:
    """Requests whose outcome never arrives cannot grow the engine without bound."""
    engine = DecisionEngine(
        load_config_text(CONFIG).config,
        {},
        make_engine()[0]._default_policy,
        ManualClock(),
        random.Random(0),
        max_pending_requests=3,
    )
    for i in range(10):
        engine.on_routed(chat(f"r{i}"), RoutingDecision(ranked=("a",), policy="x"), "a")
    assert list(engine._pending) == ["r7", "r8", "r9"]
    assert MAX_PENDING_REQUESTS >= 10_000
