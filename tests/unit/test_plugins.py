"""Table-driven tests of each filter, scorer and picker against the formula in its docstring."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from core.types import BackendCostEstimate, OutputLengthEstimate, Predictions, RoutingRequest, SLOTargets
from core.yaml_source import SourceMap
from policies.context import RouteContext
from policies.registry import BuildContext, registered
from tests.unit.policy_builders import features, ids, request, snapshot, view

CTX = BuildContext(SourceMap("<test>"), ())


def build(kind: str, type_: str, **params: Any) -> Any:
    spec = registered(kind)[type_]  # type: ignore[arg-type]
    return spec.factory(spec.params_model(**params), CTX)


def costs(**ttft_tpot: tuple[float, float]) -> Predictions:
    per_backend = {
        b: BackendCostEstimate(b, 0.0, ttft, ttft, tpot, ttft + 99 * tpot, 0)
        for b, (ttft, tpot) in ttft_tpot.items()
    }
    return Predictions(OutputLengthEstimate(100.0, 100.0), per_backend)


def approx(mapping: dict[str, float]) -> Any:
    return pytest.approx(mapping, abs=1e-9)


# --- scorers --------------------------------------------------------------------------------------

PROMPT_1600 = features("x" * 6_384)  # chat rendering adds "user\n" + "\n\n": 6,391 chars ~ 1,598 tokens

SCORER_CASES: list[tuple[str, str, dict[str, Any], list[Any], RoutingRequest, dict[str, float]]] = [
    (
        "queue min-max",
        "least_requests",
        {},
        [view("a", in_flight_requests=2), view("b", in_flight_requests=6), view("c", in_flight_requests=4)],
        request(),
        {"a": 1.0, "b": 0.0, "c": 0.5},
    ),
    (
        "queue per weight",
        "least_requests",
        {"per_weight": True},
        [view("a", in_flight_requests=6, weight=3.0), view("b", in_flight_requests=4)],
        request(),
        {"a": 1.0, "b": 0.0},
    ),
    ("queue all equal", "least_requests", {}, [view("a"), view("b")], request(), {"a": 1.0, "b": 1.0}),
    (
        "tokens prompt + decode",
        "least_tokens",
        {},
        [
            view("a", in_flight_prompt_tokens=1_000, in_flight_predicted_decode_tokens=1_000.0),
            view("b", in_flight_prompt_tokens=500, in_flight_predicted_decode_tokens=0.0),
            view("c", in_flight_prompt_tokens=0, in_flight_predicted_decode_tokens=1_250.0),
        ],
        request(),
        {"a": 0.0, "b": 1.0, "c": 0.5},
    ),
    (
        "kv free, stale neutral",
        "kv_cache",
        {},
        [
            view("a", kv_usage_frac=0.25, metrics_stale=False),
            view("b", kv_usage_frac=0.9, metrics_stale=True),
            view("c", metrics_stale=False),
        ],
        request(),
        {"a": 0.75, "b": 0.5, "c": 0.5},
    ),
    (
        "prefix ratio",
        "prefix_match",
        {},
        [view("a"), view("b")],
        request(PROMPT_1600, matched={"a": 800}),
        {"a": 800 / 1_598, "b": 0.0},
    ),
    (
        "prefix absolute squared",
        "prefix_match",
        {"absolute_weight": 1.0, "saturation_tokens": 1_000},
        [view("a"), view("b")],
        request(PROMPT_1600, matched={"a": 500, "b": 1_598}),
        {"a": 0.25, "b": 1.0},
    ),
    (
        "dynamo: cached prefix beats small queue",
        "dynamo_cost",
        {},
        # a: prefill (1598-1584)/16 = 0.875, decode 3200/16 + 100 = 300 -> 300.875
        # b: prefill 1598/16 = 99.875, decode 0 + 100 -> 199.875 ... b wins
        [view("a", in_flight_prompt_tokens=3_200), view("b")],
        request(PROMPT_1600, matched={"a": 1_584}),
        {"a": 0.0, "b": 1.0},
    ),
    (
        "prodstack: hit minus relative load",
        "prodstack_loadaware",
        {"beta": 1.0},
        # mean load 4: a raw = 0.5 - (6-4)/4 = 0.0; b raw = 0 - (2-4)/4 = 0.5
        [view("a", in_flight_requests=6), view("b", in_flight_requests=2)],
        request(PROMPT_1600, matched={"a": 799}),
        {"a": 0.0, "b": 1.0},
    ),
    (
        "predicted ttft ratio",
        "predicted_cost",
        {"objective": "ttft"},
        [view("a"), view("b")],
        request(predictions=costs(a=(100.0, 10.0), b=(400.0, 1.0))),
        {"a": 1.0, "b": 0.25},
    ),
    (
        "predicted e2e charges decode at backend speed",
        "predicted_cost",
        {"objective": "e2e"},
        # L = 100: a = 100 + 99*10 = 1090, b = 400 + 99*1 = 499
        [view("a"), view("b")],
        request(predictions=costs(a=(100.0, 10.0), b=(400.0, 1.0))),
        {"a": 499 / 1_090, "b": 1.0},
    ),
    (
        "predicted slo: TPOT is the filter's constraint, the score is TTFT",
        "predicted_cost",
        {"objective": "slo"},
        # TTFT 2 s, TPOT 100 ms: both meet TPOT; a has a tenth of b's TTFT
        [view("a"), view("b")],
        request(
            predictions=costs(a=(100.0, 90.0), b=(1_000.0, 20.0)),
            slo=SLOTargets(ttft_ms=2_000.0, tpot_ms=100.0),
        ),
        {"a": 1.0, "b": 0.1},
    ),
    (
        "predicted slo: a TPOT-only route scores TTFT",
        "predicted_cost",
        {"objective": "slo"},
        [view("a"), view("b")],
        request(predictions=costs(a=(100.0, 90.0), b=(1_000.0, 20.0)), slo=SLOTargets(tpot_ms=100.0)),
        {"a": 1.0, "b": 0.1},
    ),
    (
        "predicted slo: a TTFT-only route is the ttft objective",
        "predicted_cost",
        {"objective": "slo"},
        [view("a"), view("b")],
        request(predictions=costs(a=(100.0, 10.0), b=(400.0, 1.0)), slo=SLOTargets(ttft_ms=2_000.0)),
        {"a": 1.0, "b": 0.25},
    ),
    (
        "predicted slo: an E2E bound charges decode at backend speed",
        "predicted_cost",
        {"objective": "slo"},
        # L = 100: E2E a = 1090, b = 499 (of 5 s); TTFT a = 100, b = 400 (of 2 s) -> a 0.218, b 0.2
        [view("a"), view("b")],
        request(
            predictions=costs(a=(100.0, 10.0), b=(400.0, 1.0)),
            slo=SLOTargets(ttft_ms=2_000.0, e2e_ms=5_000.0),
        ),
        {"a": 0.2 / 0.218, "b": 1.0},
    ),
    (
        "predicted slo: a route without an SLO falls back to e2e",
        "predicted_cost",
        {"objective": "slo"},
        [view("a"), view("b")],
        request(predictions=costs(a=(100.0, 10.0), b=(400.0, 1.0))),
        {"a": 499 / 1_090, "b": 1.0},
    ),
]


@pytest.mark.parametrize(
    ("case", "type_", "params", "views", "req", "expected"), SCORER_CASES, ids=[c[0] for c in SCORER_CASES]
)
def test_scorer(
    case: str,
    type_: str,
    params: dict[str, Any],
    views: list[Any],
    req: RoutingRequest,
    expected: dict[str, float],
) -> None:
    snap = snapshot(*views)
    scorer = build("scorer", type_, **params)
    assert scorer.score(RouteContext(req, snap, 0.0), views) == approx(expected)


def test_dynamo_overlap_weight_zero_is_pure_load_balancing() -> None:
    views = [view("a", in_flight_prompt_tokens=3_200), view("b", in_flight_prompt_tokens=1_600)]
    req = request(PROMPT_1600, matched={"a": 1_584})
    scorer = build("scorer", "dynamo_cost", overlap_score_weight=0.0)
    assert scorer.score(RouteContext(req, snapshot(*views), 0.0), views) == approx({"a": 0.0, "b": 1.0})
    assert build("scorer", "dynamo_cost").logits(RouteContext(req, snapshot(*views), 0.0), views) == approx(
        {"a": 14 / 16 + 200 + 100, "b": 1_598 / 16 + 100 + 100}
    )


# --- filters --------------------------------------------------------------------------------------

FILTER_CASES: list[tuple[str, str, dict[str, Any], list[Any], RoutingRequest, list[str]]] = [
    (
        "slo: drop the backend that misses TTFT",
        "slo_headroom",
        {},
        [view("a"), view("b"), view("c")],
        request(
            predictions=costs(a=(500.0, 20.0), b=(2_500.0, 5.0), c=(1_900.0, 20.0)), slo=SLOTargets(2_000.0)
        ),
        ["a", "c"],
    ),
    (
        "slo: margin tightens the limit",
        "slo_headroom",
        {"margin_frac": 0.1},
        [view("a"), view("c")],
        request(predictions=costs(a=(500.0, 20.0), c=(1_900.0, 20.0)), slo=SLOTargets(2_000.0)),
        ["a"],
    ),
    (
        "slo: TPOT too, when some meet both",
        "slo_headroom",
        {},
        [view("a"), view("b")],
        request(predictions=costs(a=(500.0, 150.0), b=(900.0, 50.0)), slo=SLOTargets(2_000.0, 100.0)),
        ["b"],
    ),
    (
        "slo: TTFT-only survivors when none meets TPOT",
        "slo_headroom",
        {},
        [view("a"), view("b")],
        request(predictions=costs(a=(500.0, 150.0), b=(3_000.0, 150.0)), slo=SLOTargets(2_000.0, 100.0)),
        ["a"],
    ),
    (
        "slo: keeps everyone when nobody meets it",
        "slo_headroom",
        {},
        [view("a"), view("b")],
        request(predictions=costs(a=(5_000.0, 1.0), b=(3_000.0, 1.0)), slo=SLOTargets(2_000.0)),
        ["a", "b"],
    ),
    (
        "slo: sacrifice sends a request that meets it nowhere to the slowest backend",
        "slo_headroom",
        {"when_infeasible": "sacrifice"},
        [view("a"), view("b"), view("c")],
        request(
            predictions=costs(a=(3_000.0, 1.0), b=(9_000.0, 1.0), c=(2_500.0, 1.0)), slo=SLOTargets(2_000.0)
        ),
        ["b"],
    ),
    (
        "slo: sacrifice changes nothing while a backend meets it",
        "slo_headroom",
        {"when_infeasible": "sacrifice"},
        [view("a"), view("b")],
        request(predictions=costs(a=(1_500.0, 1.0), b=(9_000.0, 1.0)), slo=SLOTargets(2_000.0)),
        ["a"],
    ),
    (
        "slo: no objective, no removal",
        "slo_headroom",
        {},
        [view("a"), view("b")],
        request(predictions=costs(a=(5_000.0, 1.0), b=(3.0, 1.0))),
        ["a", "b"],
    ),
    (
        "guard: runaway backend removed",
        "imbalance_guard",
        {"abs_threshold": 10, "rel_threshold": 2.0, "signal": "in_flight_requests"},
        [view("a", in_flight_requests=5), view("b", in_flight_requests=16), view("c", in_flight_requests=14)],
        request(),
        ["a", "c"],
    ),
    (
        "guard: both conditions needed",
        "imbalance_guard",
        {"abs_threshold": 10, "rel_threshold": 2.0, "signal": "in_flight_requests"},
        [view("a", in_flight_requests=100), view("b", in_flight_requests=150)],
        request(),
        ["a", "b"],
    ),
    (
        "guard: load is per weight",
        "imbalance_guard",
        {"abs_threshold": 10, "rel_threshold": 2.0, "signal": "in_flight_requests"},
        [view("a", in_flight_requests=5), view("b", in_flight_requests=40, weight=4.0)],
        request(),
        ["a", "b"],
    ),
    (
        "max_concurrency: full backends out",
        "max_concurrency",
        {},
        [
            view("a", max_concurrency=4, in_flight_requests=4),
            view("b", max_concurrency=4, in_flight_requests=3),
        ],
        request(),
        ["b"],
    ),
    (
        "max_concurrency: all full empties",
        "max_concurrency",
        {},
        [view("a", max_concurrency=1, in_flight_requests=1)],
        request(),
        [],
    ),
    (
        "max_concurrency: fail open",
        "max_concurrency",
        {"fail_open": True},
        [view("a", max_concurrency=1, in_flight_requests=1)],
        request(),
        ["a"],
    ),
]


@pytest.mark.parametrize(
    ("case", "type_", "params", "views", "req", "expected"), FILTER_CASES, ids=[c[0] for c in FILTER_CASES]
)
def test_filter(
    case: str, type_: str, params: dict[str, Any], views: list[Any], req: RoutingRequest, expected: list[str]
) -> None:
    flt = build("filter", type_, **params)
    assert ids(flt.filter(RouteContext(req, snapshot(*views), 0.0), views)) == expected


# --- pickers --------------------------------------------------------------------------------------

ORDER = ["a", "b", "c", "d"]
TOTALS = {"a": 1.0, "b": 0.95, "c": 0.5, "d": 0.1}
CTX_ROUTE = RouteContext(request(), snapshot(*(view(b) for b in ORDER)), 0.0)


def winners(picker: Any, n: int = 400) -> Counter[str]:
    return Counter(picker.pick(CTX_ROUTE, ORDER, TOTALS, random.Random(seed))[0] for seed in range(n))


def test_max_score_keeps_the_score_order() -> None:
    assert build("picker", "max_score").pick(CTX_ROUTE, ORDER, TOTALS, random.Random(0)) == tuple(ORDER)


def test_random_is_uniform_over_candidates() -> None:
    counts = winners(build("picker", "random"), 2_000)
    assert set(counts) == set(ORDER)
    assert all(400 <= c <= 600 for c in counts.values())


def test_p2c_never_picks_the_worst_and_favours_the_best() -> None:
    counts = winners(build("picker", "p2c"), 1_200)
    assert counts["d"] == 0  # the worst loses every pair
    assert 500 <= counts["a"] <= 700  # the best is in 1/2 of the pairs of 4
    ranked = build("picker", "p2c").pick(CTX_ROUTE, ORDER, TOTALS, random.Random(1))
    assert sorted(ranked) == ORDER and list(ranked[1:]) == [b for b in ORDER if b != ranked[0]]


def test_p2c_near_best_confines_randomness_to_near_ties() -> None:
    picker = build("picker", "p2c", top_k=3, near_best_frac=0.9)
    # Eligible {a, b} (c is far behind): both are always drawn, so the better one always wins.
    assert winners(picker) == Counter({"a": 400})
    near_ties = {"a": 1.0, "b": 0.97, "c": 0.95, "d": 0.94}
    counts = Counter(picker.pick(CTX_ROUTE, ORDER, near_ties, random.Random(s))[0] for s in range(600))
    # Top 3 are near-ties: P2C gives a 2/3, b 1/3, never the third or the one outside top_k.
    assert set(counts) == {"a", "b"} and 330 <= counts["a"] <= 470


def test_p2c_prefer_prefix_breaks_near_ties_by_the_longest_cached_prefix() -> None:
    picker = build("picker", "p2c", top_k=3, near_best_frac=0.9, prefer_prefix=True)
    near_ties = {"a": 1.0, "b": 0.97, "c": 0.95, "d": 0.5}
    views = snapshot(*(view(b) for b in ORDER))

    def picks(matched: dict[str, int]) -> Counter[str]:
        ctx = RouteContext(request(matched=matched), views, 0.0)
        return Counter(picker.pick(ctx, ORDER, near_ties, random.Random(s))[0] for s in range(300))

    # The conversation's history is cached on c (within the band): it stays there.
    assert picks({"b": 1000, "c": 3000}) == Counter({"c": 300})
    # A deeper match outside the band (d is clearly worse) gives nothing away.
    assert set(picks({"d": 9000})) == {"a", "b"}
    # Equal matches: the usual P2C draw among them (c loses every pair it is drawn in).
    assert set(picks({"a": 2000, "b": 2000, "c": 2000})) == {"a", "b"}
    ranked = picker.pick(
        RouteContext(request(matched={"c": 1}), views, 0.0), ORDER, near_ties, random.Random(0)
    )
    assert ranked[0] == "c" and sorted(ranked) == ORDER


def test_softmax_prefers_high_scores_and_temperature_zero_is_max_score() -> None:
    counts = winners(build("picker", "softmax", temperature=0.2), 2_000)
    assert counts["a"] > counts["b"] > counts["c"] > counts["d"]
    cold = build("picker", "softmax", temperature=0.0)
    assert cold.pick(CTX_ROUTE, ORDER, TOTALS, random.Random(0)) == tuple(ORDER)


def test_round_robin_cycles_per_model_ignoring_scores() -> None:
    picker = build("picker", "round_robin")
    picks = [picker.pick(CTX_ROUTE, ["c", "a", "b"], TOTALS, random.Random(0))[0] for _ in range(4)]
    assert picks == ["a", "b", "c", "a"]


def test_subset_keeps_the_deepest_prefix_holders_and_samples_the_rest() -> None:
    fleet = [view(f"b{i}") for i in range(10)]
    req = request(
        PROMPT_1600, matched={"b7": 800, "b3": 800, "b5": 16, **{f"b{i}": 16 for i in range(10, 20)}}
    )
    flt = build("filter", "subset", size=4, keep_prefix_matches=2)
    seen: set[str] = set()
    for seed in range(40):
        ctx = RouteContext(req, snapshot(*fleet), 0.0, random.Random(seed))
        kept = ids(flt.filter(ctx, fleet))
        assert len(kept) == 4 and len(set(kept)) == 4
        assert {"b7", "b3"} <= set(kept)
        seen.update(kept)
    assert len(seen) == 10  # the other two places are a random sample of everyone else
    small = fleet[:4]
    assert flt.filter(RouteContext(req, snapshot(*small), 0.0), small) is small
    only_one = build("filter", "subset", size=3, keep_prefix_matches=1)
    kept = ids(only_one.filter(RouteContext(req, snapshot(*fleet), 0.0, random.Random(0)), fleet))
    assert len({"b7", "b3"} & set(kept)) >= 1


def test_predictive_on_a_large_fleet_records_the_unsampled_backends() -> None:
    from core.config import PolicyConfig
    from policies import build_policy

    fleet = snapshot(*(view(f"b{i:02d}") for i in range(40)))
    decision = build_policy(PolicyConfig(name="sluice_predictive")).route(
        request(), fleet, 0.0, random.Random(0)
    )
    assert len(decision.ranked) == 16
    assert len(decision.removed) == 24 and set(decision.removed.values()) == {"subset"}
