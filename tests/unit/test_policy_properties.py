"""Hypothesis properties over every registered policy and plugin, on random fleets and requests.

- filters never add candidates;
- every scorer's raw scores are finite and in [0, 1] for exactly the candidates;
- a decision ranks a permutation of the surviving candidates, and survivors plus
  removed backends are exactly the candidates; an empty ranking carries a reason.
"""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from core.types import (
    BackendCostEstimate,
    BackendView,
    FleetSnapshot,
    Health,
    OutputLengthEstimate,
    Predictions,
    RoutingRequest,
    SLOTargets,
)
from core.yaml_source import SourceMap
from policies.context import RouteContext
from policies.registry import BuildContext, registered
from tests.unit.policy_builders import MODEL, features, view

CTX = BuildContext(SourceMap("<test>"), ())


@st.composite
def backend_views(draw: st.DrawFn, name: str) -> BackendView:
    in_flight = draw(st.integers(0, 300))
    return view(
        name,
        models=frozenset(draw(st.sampled_from([{MODEL}, {MODEL}, {MODEL, "x"}, {"x"}]))),
        gpu_class=draw(st.sampled_from(["h100", "a100", "l4", "mystery"])),
        weight=draw(st.floats(0.1, 8.0)),
        max_concurrency=draw(st.none() | st.integers(1, 256)),
        health=draw(
            st.sampled_from([Health.READY, Health.READY, Health.READY, Health.DOWN, Health.DRAINING])
        ),
        in_flight_requests=in_flight,
        awaiting_first_byte=draw(st.integers(0, in_flight)),
        in_flight_prompt_tokens=draw(st.integers(0, 2_000_000)),
        in_flight_predicted_decode_tokens=draw(st.floats(0.0, 500_000.0)),
        engine_running=draw(st.none() | st.integers(0, 300)),
        kv_usage_frac=draw(st.none() | st.floats(0.0, 1.0)),
        metrics_stale=draw(st.booleans()),
        ewma_tpot_ms=draw(st.none() | st.floats(0.5, 500.0)),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[RoutingRequest, FleetSnapshot]:
    n = draw(st.integers(1, 8))
    views = tuple(draw(backend_views(f"b{i}")) for i in range(n))
    prompt = "x" * draw(st.integers(0, 20_000))
    feats = features(
        prompt,
        session=draw(st.none() | st.text(min_size=1, max_size=8)),
        max_tokens=draw(st.none() | st.integers(1, 4_096)),
    )
    ids = [v.backend_id for v in views]
    matched = {b: draw(st.integers(0, feats.prompt_tokens)) for b in ids if draw(st.booleans())}
    indexed = {b: draw(st.integers(0, 10**6)) for b in ids if draw(st.booleans())}
    predictions = None
    if draw(st.booleans()):
        per_backend = {}
        for b in ids:
            if draw(st.booleans()):
                ttft = draw(st.floats(0.0, 1e5))
                tpot = draw(st.floats(0.0, 1e3))
                per_backend[b] = BackendCostEstimate(b, 0.0, ttft, ttft, tpot, ttft + 100 * tpot, 0)
        p50 = draw(st.floats(1.0, 2_000.0))
        predictions = Predictions(OutputLengthEstimate(p50, p50 * draw(st.floats(1.0, 10.0))), per_backend)
    slo = SLOTargets(
        ttft_ms=draw(st.none() | st.floats(1.0, 10_000.0)), tpot_ms=draw(st.none() | st.floats(1.0, 500.0))
    )
    request = RoutingRequest(feats, matched, predictions, indexed, slo)
    return request, FleetSnapshot(views, taken_at_s=0.0)


def _plugins(kind: str) -> list[object]:
    return [spec.factory(spec.params_model(), CTX) for spec in registered(kind).values()]  # type: ignore[arg-type]


FILTERS = _plugins("filter")
SCORERS = _plugins("scorer")
POLICIES = {name: spec.factory(spec.params_model(), CTX) for name, spec in registered("policy").items()}


@settings(max_examples=200, deadline=None)
@given(scenario=scenarios())
def test_filters_never_add_and_scorers_stay_in_range(scenario: tuple[RoutingRequest, FleetSnapshot]) -> None:
    request, snap = scenario
    candidates = snap.serving(MODEL)
    ctx = RouteContext(request, snap, 0.0)
    for flt in FILTERS:
        kept = flt.filter(ctx, candidates)  # type: ignore[attr-defined]
        assert {v.backend_id for v in kept} <= {v.backend_id for v in candidates}, flt
    if not candidates:
        return  # the pipeline never scores an empty set
    for scorer in SCORERS:
        scores = scorer.score(ctx, candidates)  # type: ignore[attr-defined]
        assert set(scores) == {v.backend_id for v in candidates}, scorer
        for value in scores.values():
            assert math.isfinite(value) and 0.0 <= value <= 1.0, (scorer, value)


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_every_policy_ranks_a_permutation_of_the_survivors(
    scenario: tuple[RoutingRequest, FleetSnapshot], seed: int
) -> None:
    request, snap = scenario
    candidates = {v.backend_id for v in snap.serving(MODEL)}
    for name, policy in POLICIES.items():
        decision = policy.route(request, snap, 0.0, random.Random(seed))
        assert len(set(decision.ranked)) == len(decision.ranked), name
        assert set(decision.ranked) | set(decision.removed) == candidates, name
        assert not set(decision.ranked) & set(decision.removed), name
        if not decision.ranked:
            assert decision.reason, name
        for scores in decision.scores.values():
            assert set(scores) == set(decision.ranked), name
            assert all(0.0 <= s <= 1.0 for s in scores.values()), name
