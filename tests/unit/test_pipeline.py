"""The pipeline contract: filters only remove, scores clamped and weighted, ties random, 503 reasons."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

import pytest
from pydantic import ValidationError

from core.clock import ManualClock
from core.config import load_config_text
from core.types import (
    BackendCostEstimate,
    BackendId,
    BackendView,
    Health,
    OutputLengthEstimate,
    Predictions,
    SLOTargets,
)
from core.yaml_source import ConfigError
from decision.engine import DecisionEngine
from policies.context import RouteContext
from policies.pickers.max_score import MaxScorePicker
from policies.pipeline import Pipeline
from tests.unit.policy_builders import request, snapshot, view


class FixedScorer:
    consumes = ()

    def __init__(self, name: str, values: Mapping[BackendId, float]) -> None:
        self.name = name
        self._values = values

    def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]:
        return self._values


class DropFilter:
    consumes = ()
    reason = "dropped on purpose"

    def __init__(self, name: str, drop: set[str], add: BackendView | None = None) -> None:
        self.name = name
        self._drop = drop
        self._add = add

    def filter(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Sequence[BackendView]:
        kept = [v for v in candidates if v.backend_id not in self._drop]
        return [*kept, self._add] if self._add is not None else kept


class BrokenPicker:
    name = "broken"

    def pick(self, ctx, by_score, totals, rng):  # type: ignore[no-untyped-def]
        return tuple(by_score[:1])


FLEET = snapshot(view("a"), view("b"), view("c"))


def test_scores_are_clamped_weighted_and_recorded() -> None:
    pipeline = Pipeline(
        "p",
        (),
        (
            (FixedScorer("wild", {"a": 2.0, "b": -1.0, "c": math.nan}), 1.0),
            (FixedScorer("mild", {"a": 0.0, "b": 0.5}), 3.0),  # c missing -> 0
        ),
        MaxScorePicker(),
    )
    decision = pipeline.route(request(), FLEET, 0.0, random.Random(0))
    assert decision.scores == {"wild": {"a": 1.0, "b": 0.0, "c": 0.0}, "mild": {"a": 0.0, "b": 0.5, "c": 0.0}}
    assert decision.ranked == ("b", "a", "c")  # b: 1.5, a: 1.0, c: 0
    assert decision.policy == "p" and decision.reason is None


def test_filters_only_remove_and_removals_are_attributed() -> None:
    intruder = view("intruder")
    pipeline = Pipeline(
        "p",
        (DropFilter("first", {"a"}, add=intruder), DropFilter("second", {"b"})),
        (),
        MaxScorePicker(),
    )
    decision = pipeline.route(request(), FLEET, 0.0, random.Random(0))
    assert decision.ranked == ("c",)
    assert decision.removed == {"a": "first", "b": "second"}


class ReorderingFilter:
    """Keeps all but the last candidate, in reverse order and as copies of the views."""

    consumes = ()
    reason = "reordered"
    name = "reorder"

    def filter(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Sequence[BackendView]:
        return [replace(v, weight=v.weight) for v in reversed(candidates[:-1])]


def test_a_filters_order_and_copies_never_replace_the_snapshots_views() -> None:
    """Kept backends stay in snapshot order and are the snapshot's own views, whatever a filter returns
    (the pipeline takes a filter's answer as it is only when it is an in-order subset of its input)."""
    by_id = {"a": 0.9, "b": 0.5, "c": 0.1}
    pipeline = Pipeline("p", (ReorderingFilter(),), ((FixedScorer("s", by_id), 1.0),), MaxScorePicker())
    decision = pipeline.route(request(), FLEET, 0.0, random.Random(0))
    assert decision.ranked == ("a", "b")
    assert decision.removed == {"c": "reorder"}
    seen: list[list[BackendView]] = []

    class Recording(FixedScorer):
        def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]:
            seen.append(list(candidates))
            return super().score(ctx, candidates)

    Pipeline("p", (ReorderingFilter(),), ((Recording("s", by_id), 1.0),), MaxScorePicker()).route(
        request(), FLEET, 0.0, random.Random(0)
    )
    assert [v.backend_id for v in seen[0]] == ["a", "b"]
    assert all(any(v is w for w in FLEET.backends) for v in seen[0])


def test_everything_filtered_gives_an_empty_ranking_with_the_reason() -> None:
    pipeline = Pipeline("p", (DropFilter("nope", {"a", "b", "c"}),), (), MaxScorePicker())
    decision = pipeline.route(request(), FLEET, 0.0, random.Random(0))
    assert decision.ranked == () and decision.chosen is None
    assert decision.removed == {"a": "nope", "b": "nope", "c": "nope"}
    assert (
        decision.reason is not None
        and "'nope'" in decision.reason
        and "dropped on purpose" in decision.reason
    )


def test_no_serving_backend_gives_a_reason() -> None:
    fleet = snapshot(view("a", health=Health.DOWN), view("b", models=frozenset({"other"})))
    decision = Pipeline("p", (), (), MaxScorePicker()).route(request(), fleet, 0.0, random.Random(0))
    assert decision.ranked == ()
    assert decision.reason == "no healthy backend serves 'm'"


def test_ties_are_broken_at_random_by_the_injected_rng() -> None:
    pipeline = Pipeline(
        "p", (), ((FixedScorer("flat", {"a": 0.5, "b": 0.5, "c": 0.5}), 1.0),), MaxScorePicker()
    )
    winners = {pipeline.route(request(), FLEET, 0.0, random.Random(seed)).chosen for seed in range(60)}
    assert winners == {"a", "b", "c"}
    again = [pipeline.route(request(), FLEET, 0.0, random.Random(5)).ranked for _ in range(3)]
    assert len(set(again)) == 1  # same seed, same decision


def test_a_picker_that_breaks_the_contract_is_caught() -> None:
    with pytest.raises(RuntimeError, match="not a permutation"):
        Pipeline("p", (), (), BrokenPicker()).route(request(), FLEET, 0.0, random.Random(0))


def test_predicted_latency_of_the_chosen_backend_is_reported() -> None:
    estimate = BackendCostEstimate("a", 1.0, 2.0, 3.0, 4.0, 50.0, 0)
    predictions = Predictions(OutputLengthEstimate(10, 20), {"a": estimate})
    pipeline = Pipeline("p", (), ((FixedScorer("s", {"a": 1.0}), 1.0),), MaxScorePicker())
    decision = pipeline.route(request(predictions=predictions), FLEET, 0.0, random.Random(0))
    assert (decision.chosen, decision.predicted_ttft_ms, decision.predicted_e2e_ms) == ("a", 3.0, 50.0)


BACKENDS = """\
backends:
  - {name: a, url: "http://127.0.0.1:1", models: [m]}
  - {name: b, url: "http://127.0.0.1:2", models: [m]}
routes:
  - name: r
"""


def engine_for(policy_yaml: str, path: str = "p.yaml") -> DecisionEngine:
    loaded = load_config_text(BACKENDS + policy_yaml, path)
    return DecisionEngine.from_config(loaded, ManualClock(), random.Random(0))


def test_a_pipeline_is_assembled_from_config() -> None:
    engine = engine_for(
        "    policy:\n"
        "      name: pipeline\n"
        "      params:\n"
        "        filters: [{type: max_concurrency, params: {fail_open: true}}]\n"
        "        scorers:\n"
        "          - {type: prefix_match, weight: 3}\n"
        "          - {type: least_requests, weight: 2, name: queue}\n"
        "        picker: {type: p2c, params: {top_k: 2}}\n"
    )
    policy = engine.policy_for("r")
    assert isinstance(policy, Pipeline)
    assert policy.plugins == ("max_concurrency", "prefix_match", "queue", "p2c")


@pytest.mark.parametrize(
    ("policy_yaml", "line", "fragment"),
    [
        (
            "    policy: {name: sglang_cache_awar}\n",
            6,
            "routes[0].policy.name: unknown policy 'sglang_cache_awar'",
        ),
        (
            "    policy:\n      name: sglang_cache_aware\n      params: {cache_treshold: 0.5}\n",
            8,
            "routes[0].policy.params.cache_treshold: unknown key",
        ),
        (
            "    policy:\n      name: dynamo_cost\n      params:\n        temperature: -1\n",
            9,
            "routes[0].policy.params.temperature: Input should be greater than or equal to 0",
        ),
        (
            "    policy:\n      name: pipeline\n      params:\n        scorers:\n"
            "          - {type: least_requests}\n          - {type: prefix_macth, weight: 2}\n",
            11,
            "routes[0].policy.params.scorers[1].type: unknown scorer 'prefix_macth'",
        ),
        (
            "    policy:\n      name: pipeline\n      params:\n        picker:\n"
            "          type: p2c\n          params:\n            top_k: 0\n",
            12,
            "routes[0].policy.params.picker.params.top_k: Input should be greater than or equal to 1",
        ),
        (
            "    policy:\n      name: pipeline\n      params:\n        filters:\n"
            "          - type: slo_headroom\n            params: {margin: 0.1}\n",
            11,
            "routes[0].policy.params.filters[0].params.margin: unknown key",
        ),
        (
            "    policy:\n      name: pipeline\n      params:\n        scorers:\n"
            "          - {type: least_requests}\n          - {type: least_requests}\n",
            11,
            "routes[0].policy.params.scorers[1]: name 'least_requests' is used twice",
        ),
        (
            "    policy:\n      name: pipeline\n      params:\n        scorers:\n"
            "          - {type: least_requests, wieght: 2}\n",
            10,
            "routes[0].policy.params.scorers[0].wieght: unknown key",
        ),
    ],
)
def test_bad_policy_config_fails_at_start_up_with_file_and_line(
    policy_yaml: str, line: int, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        engine_for(policy_yaml)
    message = str(info.value)
    assert message.startswith(f"p.yaml:{line}: "), message
    assert fragment in message, message


def test_filters_that_promise_order_return_an_in_order_subset_of_their_own_input() -> None:
    """``keeps_order`` lets the pipeline take a filter's answer unchecked (policies.base): every built-in
    filter that sets it must return its input itself or some of its views, each once, in their order."""
    from policies.registry import registered
    from tests.unit.test_plugins import CTX, costs

    rng = random.Random(7)
    slo = SLOTargets(ttft_ms=2_000, tpot_ms=100)
    promised = 0
    for type_, spec in registered("filter").items():
        flt = spec.factory(spec.params_model(), CTX)
        if type_ == "subset":
            flt = spec.factory(spec.params_model(size=rng.randrange(1, 9), keep_prefix_matches=2), CTX)
        if not getattr(flt, "keeps_order", False):
            continue
        promised += 1
        for trial in range(200):
            n = rng.randrange(1, 30)
            fleet = [
                view(
                    f"b{i}",
                    in_flight_requests=rng.randrange(0, 40),
                    awaiting_first_byte=rng.randrange(0, 60),
                    max_concurrency=rng.choice((None, 5, 30)),
                )
                for i in range(n)
            ]
            matched = {f"b{i}": rng.choice((16, 800)) for i in rng.sample(range(n), rng.randrange(0, n + 1))}
            predictions = costs(**{f"b{i}": (rng.uniform(1, 3_000), rng.uniform(1, 150)) for i in range(n)})
            req = request(matched=matched, predictions=predictions, slo=slo)
            candidates = fleet[rng.randrange(0, 3) :] or fleet
            kept = flt.filter(RouteContext(req, snapshot(*fleet), 0.0, random.Random(trial)), candidates)
            if kept is candidates:
                continue
            position = {id(v): i for i, v in enumerate(candidates)}
            rows = [position.get(id(v), -1) for v in kept]
            assert -1 not in rows, (type_, "returned a view that was not a candidate")
            assert rows == sorted(set(rows)), (type_, "out of order or repeated", rows)
    assert promised == 4  # subset, imbalance_guard, slo_headroom, max_concurrency


class MappingOnly:
    """A third-party scorer with the Mapping method only (no ``score_values``), wrapping another."""

    consumes = ()

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.name = inner.name  # type: ignore[attr-defined]

    def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]:
        return self._inner.score(ctx, candidates)  # type: ignore[attr-defined, no-any-return]


def _random_fleet_and_request(rng: random.Random) -> tuple[list[BackendView], object]:
    from tests.unit.test_plugins import costs

    n = rng.randrange(1, 24)
    fleet = [
        view(f"b{i}", in_flight_requests=rng.randrange(0, 40), awaiting_first_byte=rng.randrange(0, 60))
        for i in range(n)
    ]
    matched = {f"b{i}": rng.choice((16, 800)) for i in rng.sample(range(n), rng.randrange(0, n + 1))}
    # Equal costs now and then, so ties (and the random lead among them) are exercised too.
    pairs = {f"b{i}": (rng.choice((100.0, rng.uniform(1, 3_000))), rng.uniform(1, 150)) for i in range(n)}
    slo = rng.choice(
        (SLOTargets(ttft_ms=2_000, tpot_ms=100), SLOTargets(ttft_ms=900, e2e_ms=9_000), SLOTargets())
    )
    return fleet, request(matched=matched, predictions=costs(**pairs), slo=slo)


def test_scorers_with_score_values_decide_as_their_mapping_does() -> None:
    """``score_values`` (policies.base) is a faster form of ``score``: a pipeline of the built-in scorers
    and the same pipeline seeing only their Mapping method give the same rankings, scores and draws."""
    from policies.params import LeastRequestsParams, P2CParams, PredictedCostParams
    from policies.pickers.p2c import P2CPicker
    from policies.scorers.least_requests import LeastRequestsScorer  # a Mapping-only built-in
    from policies.scorers.predicted_cost import PredictedCostScorer

    rng = random.Random(11)
    for trial in range(300):
        objective = ("ttft", "e2e", "slo")[trial % 3]
        cost = PredictedCostScorer(
            PredictedCostParams(objective=objective, tail_weight=rng.choice((0.0, 1.0)))
        )
        weights = (rng.choice((1.0, 0.5, 2.0)), rng.choice((0.0, 1.0, 3.0)))
        fast = Pipeline(
            "p",
            (),
            ((cost, weights[0]), (LeastRequestsScorer(LeastRequestsParams()), weights[1])),
            P2CPicker(P2CParams(top_k=3, near_best_frac=0.9)),
        )
        slow = Pipeline(
            "p",
            (),
            ((MappingOnly(cost), weights[0]), (LeastRequestsScorer(LeastRequestsParams()), weights[1])),
            P2CPicker(P2CParams(top_k=3, near_best_frac=0.9)),
        )
        fleet, req = _random_fleet_and_request(rng)
        ctx = RouteContext(req, snapshot(*fleet), 0.0)  # type: ignore[arg-type]
        values = cost.score_values(ctx, fleet)
        assert values == [cost.score(ctx, fleet)[v.backend_id] for v in fleet]
        a = fast.route(req, snapshot(*fleet), 0.0, random.Random(trial))  # type: ignore[arg-type]
        b = slow.route(req, snapshot(*fleet), 0.0, random.Random(trial))  # type: ignore[arg-type]
        assert a == b or (a.ranked, dict(a.scores)) == (b.ranked, dict(b.scores))
        assert [(k, list(v.items())) for k, v in a.scores.items()] == [
            (k, list(v.items())) for k, v in b.scores.items()
        ]


def test_the_scores_mapping_reads_like_the_dicts_it_stands_for() -> None:
    """``RoutingDecision.scores`` is built when read: equal to, ordered and printed as the plain dicts."""
    pipeline = Pipeline(
        "p",
        (),
        ((FixedScorer("one", {"c": 0.25, "a": 1.0}), 1.0), (FixedScorer("two", {"b": 0.5}), 2.0)),
        MaxScorePicker(),
    )
    scores = pipeline.route(request(), FLEET, 0.0, random.Random(0)).scores
    expected = {"one": {"a": 1.0, "b": 0.0, "c": 0.25}, "two": {"a": 0.0, "b": 0.5, "c": 0.0}}
    assert scores == expected and dict(scores) == expected
    assert list(scores) == ["one", "two"] and len(scores) == 2 and "one" in scores and "three" not in scores
    assert list(scores["one"].items()) == [("a", 1.0), ("b", 0.0), ("c", 0.25)]  # candidate (snapshot) order
    assert repr(scores) == repr(expected)
    with pytest.raises(KeyError):
        scores["three"]


def test_pickers_that_promise_a_permutation_return_one() -> None:
    """``returns_permutation`` lets the pipeline skip its check (policies.base): every built-in picker
    that sets it must return each candidate exactly once, whatever the scores and the draws."""
    from policies.registry import registered
    from tests.unit.test_plugins import CTX

    rng = random.Random(5)
    promised = 0
    for type_, spec in registered("picker").items():
        for params in ({}, {"top_k": 2, "near_best_frac": 0.5, "prefer_prefix": True}, {"temperature": 0.3}):
            try:
                picker = spec.factory(spec.params_model(**params), CTX)
            except ValidationError:  # params of another picker
                continue
            if not getattr(picker, "returns_permutation", False):
                continue
            promised += 1
            for trial in range(200):
                fleet, req = _random_fleet_and_request(rng)
                ids = [v.backend_id for v in fleet]
                rng.shuffle(ids)
                totals = {b: rng.choice((0.0, 1.0, rng.random())) for b in ids}
                ctx = RouteContext(req, snapshot(*fleet), 0.0, random.Random(trial))  # type: ignore[arg-type]
                ranked = picker.pick(ctx, ids, totals, random.Random(trial))
                assert sorted(ranked) == sorted(ids), (type_, params, ranked)
    assert promised >= 5  # max_score, p2c (twice), random, round_robin, softmax


def test_an_unpromised_picker_is_still_checked() -> None:
    class Unflagged(BrokenPicker):
        returns_permutation = "yes"  # only ``True`` itself is a promise

    pipeline = Pipeline("p", (), (), Unflagged())
    with pytest.raises(RuntimeError, match="not a permutation"):
        pipeline.route(request(), FLEET, 0.0, random.Random(0))


def test_subset_keeps_what_a_scan_of_the_candidates_would_keep() -> None:
    """The subset filter finds the deepest prefix holders' rows through a memo of the last candidates;
    against the plain scan (the reference below), with fleets that change between calls (backends
    leave, come back, reorder), holders that are not candidates and all-zero matches."""
    from policies.filters.subset import SubsetFilter
    from policies.params import SubsetParams
    from policies.sampling import sample

    def reference(size: int, keep: int, req: object, candidates: list[BackendView], seed: int) -> list[str]:
        rng = random.Random(seed)
        n = len(candidates)
        if n <= size:
            return [v.backend_id for v in candidates]
        matched = req.prefix_matched_tokens  # type: ignore[attr-defined]
        chosen = None
        if matched and keep:
            deepest = max(matched.values())
            rows = [i for i, v in enumerate(candidates) if matched.get(v.backend_id, 0) == deepest]
            if rows:
                holders = rows if len(rows) <= keep else sample(rng, rows, keep)
                holders.sort()
                rest = [i for i in range(n) if i not in holders]
                chosen = holders + rng.sample(rest, size - len(holders))
        if chosen is None:
            chosen = rng.sample(range(n), size)
        return [candidates[i].backend_id for i in sorted(chosen)]

    rng = random.Random(3)
    every = [view(f"b{i}") for i in range(40)]
    for size, keep in ((4, 2), (8, 4), (16, 4), (5, 0), (3, 3)):
        flt = SubsetFilter(SubsetParams(size=size, keep_prefix_matches=keep))
        for trial in range(400):
            candidates = (
                rng.sample(every, rng.randrange(1, 41))
                if rng.random() < 0.3
                else every[: rng.randrange(30, 41)]
            )
            depths = (0,) if rng.random() < 0.1 else (16, 32, 800)
            matched = {f"b{i}": rng.choice(depths) for i in rng.sample(range(48), rng.randrange(0, 48))}
            # Every other trial through a read-only mapping: the filter's path for a non-dict answer.
            req = request(matched=matched)
            if trial % 2:
                req = replace(req, prefix_matched_tokens=MappingProxyType(matched))
            kept = flt.filter(RouteContext(req, snapshot(*every), 0.0, random.Random(trial)), candidates)
            assert [v.backend_id for v in kept] == reference(size, keep, req, candidates, trial), (
                size,
                keep,
                trial,
            )


class RecordingPicker:
    """Keeps the totals it was handed; ranks by score (a compiled picker cannot be subclassed)."""

    name = "recording"

    def __init__(self) -> None:
        self.totals: dict[BackendId, float] = {}

    def pick(self, ctx, by_score, totals, rng):  # type: ignore[no-untyped-def]
        self.totals = dict(totals)
        return tuple(by_score)


def test_totals_start_at_zero_whatever_the_weight_and_the_sign_of_a_zero_score() -> None:
    """A total is 0.0 + Σ weight·score: with a weight of 1.0 the pipeline may hand the scores' own floats
    on as totals, but a -0.0 score must still total +0.0, and other weights are multiplied."""
    for weight in (1.0, 2.0, 0.5):
        picker = RecordingPicker()
        values = {"a": -0.0, "b": 0.25, "c": 1.0}
        Pipeline("p", (), ((FixedScorer("s", values), weight),), picker).route(
            request(), FLEET, 0.0, random.Random(0)
        )
        expected = {b: 0.0 + weight * v for b, v in values.items()}
        assert picker.totals == expected
        assert math.copysign(1.0, picker.totals["a"]) == 1.0  # +0.0, not the score's -0.0
        assert [math.copysign(1.0, t) for t in picker.totals.values()] == [1.0, 1.0, 1.0]
    # A Mapping scorer's ints total as floats (0.0 + 1.0·1 is 1.0), as before the list copy existed.
    picker = RecordingPicker()
    Pipeline("p", (), ((FixedScorer("s", {"a": 1, "b": 1, "c": 1}), 1.0),), picker).route(
        request(), FLEET, 0.0, random.Random(0)
    )
    assert [type(t) for t in picker.totals.values()] == [float, float, float]


def _plain_slo_filter(
    params: dict[str, object], slo: SLOTargets, pairs: list[tuple[float, float]], n: int
) -> list[int]:
    """The slo_headroom rule (policies/filters/slo_headroom.py) written plainly: kept rows."""
    keep_frac = 1.0 - float(params.get("margin_frac", 0.0))  # type: ignore[arg-type]
    ttft_limit = slo.ttft_ms * keep_frac if slo.ttft_ms is not None else None
    check_tpot = params.get("check_tpot", True)
    tpot_limit = slo.tpot_ms * keep_frac if slo.tpot_ms is not None and check_tpot else None
    if ttft_limit is None and tpot_limit is None:
        return list(range(n))
    meets_ttft = [i for i in range(n) if ttft_limit is None or not pairs[i][0] > ttft_limit]
    meets_both = [i for i in meets_ttft if tpot_limit is None or pairs[i][1] <= tpot_limit]
    if meets_both:
        return meets_both
    if meets_ttft:
        return meets_ttft
    if params.get("when_infeasible") == "sacrifice":
        slowest, slowest_ttft = 0, -1.0
        for i in range(n):
            if pairs[i][0] > slowest_ttft:
                slowest, slowest_ttft = i, pairs[i][0]
        return [slowest]
    return list(range(n))


def test_slo_filter_guard_and_cost_scorer_follow_their_rules_on_random_fleets() -> None:
    """The SLO filter, the imbalance guard and the cost scorer against their rules written plainly, on
    random fleets where everything, some or nothing meets each bound, and the costs the filter hands the
    context (``remember_pairs``) are those of the backends it keeps."""
    from policies.filters.imbalance_guard import ImbalanceGuardFilter
    from policies.filters.slo_headroom import SLOHeadroomFilter
    from policies.params import ImbalanceGuardParams, PredictedCostParams, SLOHeadroomParams
    from policies.scorers.predicted_cost import PredictedCostScorer
    from tests.unit.test_plugins import costs

    rng = random.Random(5)
    slos = (
        SLOTargets(ttft_ms=2_000, tpot_ms=100),
        SLOTargets(ttft_ms=900, e2e_ms=9_000),
        SLOTargets(tpot_ms=60),
        SLOTargets(e2e_ms=5_000),
        SLOTargets(),
    )
    for trial in range(600):
        n = rng.randrange(1, 20)
        fleet = [
            view(
                f"b{i}",
                in_flight_requests=rng.randrange(0, 120),
                awaiting_first_byte=rng.randrange(0, 90),
                weight=rng.choice((1.0, 1.0, 3.0, 0.5)),
            )
            for i in range(n)
        ]
        pairs = [
            (rng.choice((100.0, 2_500.0, rng.uniform(0.0, 4_000))), rng.choice((50.0, rng.uniform(1, 200))))
            for _ in range(n)
        ]
        slo = rng.choice(slos)
        req = request(predictions=costs(**{f"b{i}": pairs[i] for i in range(n)}), slo=slo)
        snap = snapshot(*fleet)

        params: dict[str, object] = {
            "margin_frac": rng.choice((0.0, 0.2)),
            "check_tpot": rng.choice((True, False)),
            "when_infeasible": rng.choice(("keep", "sacrifice")),
        }
        ctx = RouteContext(req, snap, 0.0)
        kept = SLOHeadroomFilter(SLOHeadroomParams(**params)).filter(ctx, fleet)  # type: ignore[arg-type]
        expected = _plain_slo_filter(params, slo, pairs, n)
        assert [v.backend_id for v in kept] == [f"b{i}" for i in expected], (trial, params, slo, pairs)
        assert ctx.ttft_tpot_all(kept) == [pairs[i] for i in expected]

        signal = rng.choice(("awaiting_first_byte", "in_flight_requests"))
        abs_threshold, rel_threshold = rng.choice((0.0, 8.0, 32.0)), rng.choice((1.0, 1.5, 3.0))
        guard = ImbalanceGuardFilter(
            ImbalanceGuardParams(signal=signal, abs_threshold=abs_threshold, rel_threshold=rel_threshold)
        )
        loads = [getattr(v, signal) / v.weight for v in fleet]
        limit = max(min(loads) + abs_threshold, min(loads) * rel_threshold)
        guarded = guard.filter(RouteContext(req, snap, 0.0), fleet)
        expected_ids = [v.backend_id for v, load in zip(fleet, loads, strict=True) if load <= limit]
        assert [v.backend_id for v in guarded] == expected_ids

        objective = rng.choice(("ttft", "e2e", "slo"))
        scorer = PredictedCostScorer(PredictedCostParams(objective=objective, tail_weight=rng.random()))
        ctx = RouteContext(req, snap, 0.0)
        cost_values = scorer.cost_values(ctx, fleet)
        assert scorer.score_values(ctx, fleet) == [min(cost_values) / c for c in cost_values]
