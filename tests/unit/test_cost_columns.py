"""The request path's cost table equals ``LatencyModel.estimate_all`` exactly, through fleet changes.

``cost_table`` keeps per-backend columns and recomputes only changed rows; a
stale row would silently mis-route, so every step of a random evolution
(views replaced, health and models changed, coefficients re-learned, fleet
resized) is compared value for value with the reference formula, on fleets
small enough for the row-by-row path (``SMALL_FLEET_ROWS``) and large enough
for the column path.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from core.cost_table import CostTable
from core.types import BackendView, Health
from predictors.latency import LatencyModel
from tests.unit.length_fixtures import chat_features


def _view(i: int, rng: random.Random) -> BackendView:
    in_flight = rng.randrange(0, 80)
    awaiting = rng.randrange(0, in_flight + 1)
    return BackendView(
        backend_id=f"b{i}",
        models=frozenset({"m"} if i % 5 else {"m", "other"}),
        gpu_class="h100",
        weight=1.0,
        max_concurrency=None,
        health=Health.READY,
        in_flight_requests=in_flight,
        awaiting_first_byte=awaiting,
        in_flight_prompt_tokens=in_flight * rng.randrange(100, 2_000),
        in_flight_predicted_decode_tokens=in_flight * rng.uniform(10.0, 400.0),
        engine_running=rng.choice((None, in_flight - awaiting, in_flight + 3)),
        engine_waiting=rng.choice((None, awaiting, awaiting + 2)),
        kv_usage_frac=rng.choice((None, rng.random(), 0.95)),
        kv_capacity_tokens=rng.choice((None, 50_000)),
        prefix_hit_rate=rng.choice((None, 0.0, rng.random(), 1.0)),
        metrics_stale=rng.random() < 0.3,
        awaiting_prompt_tokens=rng.choice((None, awaiting * 500)),
    )


def _assert_same(table: CostTable, reference: dict[str, object]) -> None:
    assert list(table) == list(reference)
    assert len(table) == len(reference)
    for backend_id, expected in reference.items():
        assert table[backend_id] == expected  # dataclass equality: every float bit for bit
        assert table.ttft_tpot(backend_id) == (expected.ttft_ms, expected.tpot_ms)  # type: ignore[attr-defined]
        assert table.ttft_e2e(backend_id) == (expected.ttft_ms, expected.e2e_ms)  # type: ignore[attr-defined]
    best = min((e.ttft_ms for e in reference.values()), default=None)  # type: ignore[attr-defined]
    assert table.best_ttft_ms == best
    assert table.ttft_tpot("absent") is None
    assert table.ttft_e2e("absent") is None
    assert "absent" not in table


def _assert_same_list(table: CostTable, views: tuple[BackendView, ...], rng: random.Random) -> None:
    """``ttft_tpot_list`` (the filters' and scorers' read, its own loop) equals ``ttft_tpot`` per view."""
    held = [view for view in views if view.backend_id in table]
    some = rng.sample(held, rng.randrange(0, len(held) + 1))
    assert table.ttft_tpot_list(some) == [table.ttft_tpot(view.backend_id) for view in some]
    absent = [view for view in views if view.backend_id not in table]
    if absent:
        assert table.ttft_tpot_list([*some, absent[0]]) is None


@pytest.mark.parametrize("n_backends", [3, 24])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_table_equals_estimate_all_while_the_fleet_changes(seed: int, n_backends: int) -> None:
    rng = random.Random(seed)
    pick_rng = random.Random(seed + 1)  # the list reads' own draws: the fleet's changes stay those of rng
    model = LatencyModel()
    views = [_view(i, rng) for i in range(n_backends)]
    features = chat_features("hello " * 300)
    kept: list[tuple[CostTable, dict[str, object]]] = []
    for step in range(120):
        action = rng.random()
        i = rng.randrange(len(views))
        if action < 0.4:
            views[i] = _view(i, rng)
        elif action < 0.5:
            health = rng.choice((Health.READY, Health.DOWN, Health.DRAINING))
            views[i] = replace(views[i], health=health)
        elif action < 0.55:
            views[i] = replace(views[i], models=frozenset({"other"}))
        elif action < 0.8:  # the backend's coefficients are re-learned
            model.observe(views[i], features, rng.randrange(0, 500), rng.uniform(5, 900), rng.uniform(2, 90))
        elif action < 0.85:
            views.append(_view(len(views), rng))
        elif action < 0.9 and len(views) > 2:
            views.pop()
        snapshot_views = tuple(views)
        prompt = rng.randrange(0, 6_000)
        matched = {
            f"b{j}": rng.randrange(-5, 8_000) for j in rng.sample(range(len(views)), min(4, len(views)))
        }
        matched["gone"] = 100
        p50 = rng.choice((0.5, 1.0, 130.0, 900.0))
        for wanted_model in ("m", "other", None):
            table = model.cost_table(snapshot_views, wanted_model, prompt, matched, p50)
            reference = model.estimate_all(snapshot_views, wanted_model, prompt, matched, p50)
            _assert_same(table, reference)
            _assert_same_list(table, snapshot_views, pick_rng)
        # Read only at the end, after later fleet changes and re-learned coefficients: a table keeps the
        # values it was built on (a request admitted now may be routed after an outcome was observed).
        unread = model.cost_table(snapshot_views, "m", prompt, matched, p50)
        kept.append((unread, model.estimate_all(snapshot_views, "m", prompt, matched, p50)))
        assert step >= 0
    for table, reference in kept:
        _assert_same(table, reference)


def test_estimates_read_through_the_mapping_are_built_once() -> None:
    rng = random.Random(4)
    model = LatencyModel()
    views = tuple(_view(i, rng) for i in range(4))
    table = model.cost_table(views, "m", 1_000, {}, 100.0)
    assert table["b1"] is table["b1"]
    with pytest.raises(KeyError):
        table["nope"]
    empty = model.cost_table((), "m", 1_000, {}, 100.0)
    assert len(empty) == 0 and empty.best_ttft_ms is None
