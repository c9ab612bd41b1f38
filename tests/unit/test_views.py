"""``core/views.py``'s value types behave as frozen dataclasses, compiled (mypyc) or not.

The compiled build makes them native classes (core/views.py says why); what the router, the
policies and the tests rely on must not change with it: construction by position and keyword,
defaults, frozen fields, equality and hashing over every field, ``repr``, ``dataclasses.replace``
and ``fields``, pickling and copying, and ``serving``'s per-model answer.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest

from core.types import BackendView, Endpoint, FleetSnapshot, Health, RequestFeatures, RoutingDecision


def _view(**overrides: Any) -> BackendView:
    """A view whose every field differs from its default, so that a dropped field shows."""
    fields: dict[str, Any] = {
        "backend_id": "b1",
        "models": frozenset({"m1", "m2"}),
        "gpu_class": "H100",
        "weight": 2.5,
        "max_concurrency": 7,
        "health": Health.READY,
        "in_flight_requests": 3,
        "awaiting_first_byte": 1,
        "in_flight_prompt_tokens": 900,
        "in_flight_predicted_decode_tokens": 412.5,
        "engine_running": 4,
        "engine_waiting": 2,
        "kv_usage_frac": 0.25,
        "prefix_hit_rate": 0.5,
        "kv_capacity_tokens": 100_000,
        "metrics_age_s": 0.125,
        "metrics_stale": False,
        "ewma_ttft_ms": 80.0,
        "ewma_tpot_ms": 12.0,
        "awaiting_prompt_tokens": 300,
        "first_bytes": 11,
        "first_byte_ttft_ms_total": 990.0,
    }
    fields.update(overrides)
    return BackendView(**fields)


def test_every_field_round_trips_through_pickle_copy_and_replace() -> None:
    view = _view()
    names = [f.name for f in dataclasses.fields(BackendView)]
    assert len(names) == 22
    for other in (
        pickle.loads(pickle.dumps(view)),
        copy.copy(view),
        copy.deepcopy(view),
        dataclasses.replace(view),
        BackendView(*[getattr(view, n) for n in names]),
    ):
        assert other == view
        assert hash(other) == hash(view)
        assert [getattr(other, n) for n in names] == [getattr(view, n) for n in names]
    # repr compares one model: a frozenset's iteration order can differ between two equal sets built in
    # different insertion orders (as unpickling does) when their string hashes collide in the table.
    single = dataclasses.replace(view, models=frozenset({"m1"}))
    assert repr(pickle.loads(pickle.dumps(single))) == repr(single)


def test_fields_are_frozen_compared_and_defaulted() -> None:
    view = _view()
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.in_flight_requests = 4  # type: ignore[misc]
    assert _view(in_flight_requests=4) != view
    assert dataclasses.replace(view, in_flight_requests=4) == _view(in_flight_requests=4)
    minimal = BackendView("b", frozenset({"m"}), "L4", 1.0, None, Health.DOWN, 0, 0, 0, 0.0)
    assert minimal.metrics_stale is True
    assert minimal.engine_running is None and minimal.awaiting_prompt_tokens is None
    assert minimal.first_bytes == 0 and minimal.first_byte_ttft_ms_total == 0.0
    assert not minimal.selectable and view.selectable
    assert repr(minimal).startswith("BackendView(backend_id='b', models=frozenset({'m'}), gpu_class='L4'")


def test_snapshot_serving_is_per_model_in_fleet_order_and_survives_pickling() -> None:
    a = _view(backend_id="a", models=frozenset({"m1"}))
    b = _view(backend_id="b", models=frozenset({"m2"}))
    c = _view(backend_id="c", models=frozenset({"m1", "m2"}), health=Health.DRAINING)
    d = _view(backend_id="d", models=frozenset({"m1", "m2"}))
    snap = FleetSnapshot((a, b, c, d), taken_at_s=12.5, version=3)
    assert snap.serving("m1") == (a, d)
    assert snap.serving("m1") is snap.serving("m1")  # computed once
    assert snap.serving("m2") == (b, d)
    assert snap.serving("m3") == ()
    assert snap.by_id() == {"a": a, "b": b, "c": c, "d": d}
    fresh = FleetSnapshot((a, b, c, d), 12.5, 3)
    assert fresh == snap and hash(fresh) == hash(snap)  # the serving cache is not compared
    for other in (pickle.loads(pickle.dumps(snap)), copy.copy(snap), dataclasses.replace(snap)):
        assert other == snap
        assert other.serving("m1") == (a, d)
    assert dataclasses.replace(snap, version=4).version == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.version = 5  # type: ignore[misc]
    init_fields = [f.name for f in dataclasses.fields(FleetSnapshot) if f.init]
    assert init_fields == ["backends", "taken_at_s", "version", "backend_ids"]
    assert "_serving_by_model" not in repr(snap)
    # The fleet's ids, when the builder passes them: kept by pickle, copy and replace, not compared.
    assert snap.backend_ids is None
    named = FleetSnapshot((a, b, c, d), 12.5, 3, backend_ids=("a", "b", "c", "d"))
    assert named == snap and "backend_ids" not in repr(named)
    for other in (pickle.loads(pickle.dumps(named)), copy.copy(named), dataclasses.replace(named, version=9)):
        assert other.backend_ids == ("a", "b", "c", "d")
    everyone = FleetSnapshot((a, d), taken_at_s=1.0)
    assert everyone.serving("m1") == (a, d) and everyone.serving("m1") is everyone.backends  # no copy
    assert everyone.serving("m2") == (d,)


def _round_trips(obj: Any) -> None:
    """Every field survives pickle, copy, replace and positional construction; eq, hash, repr agree."""
    cls = type(obj)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for other in (
        pickle.loads(pickle.dumps(obj)),
        copy.copy(obj),
        copy.deepcopy(obj),
        dataclasses.replace(obj),
        cls(*[getattr(obj, n) for n in names]),
        cls(**{n: getattr(obj, n) for n in names}),
    ):
        assert other == obj
        assert [getattr(other, n) for n in names] == [getattr(obj, n) for n in names]
        assert repr(other) == repr(obj)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, names[0], getattr(obj, names[0]))


def test_request_features_keep_every_field_and_default() -> None:
    features = RequestFeatures(
        "r1", Endpoint.CHAT, "/v1/chat", "m1", "t1", "high", 120, 480, (1, 2, 3), "hi", 3, 2, 64, True, 9.5,
        session_key="s1", client_retry_count=2,
    )  # fmt: skip
    assert len(dataclasses.fields(RequestFeatures)) == 17
    _round_trips(features)
    assert hash(features) == hash(dataclasses.replace(features))
    assert dataclasses.replace(features, prompt_tokens=7).prompt_tokens == 7
    assert dataclasses.replace(features, prompt_tokens=7) != features
    bare = RequestFeatures(
        "r", Endpoint.COMPLETIONS, "/", "m", "t", "p", 1, 4, (), "", 0, 0, None, False, 0.0
    )
    assert bare.session_key is None and bare.client_retry_count is None


def test_routing_decision_keeps_every_field_and_default() -> None:
    decision = RoutingDecision(("a", "b"), "p", {"s": {"a": 0.5}}, {"c": "filter"}, 10.0, 20.0, "why", 33.0)
    assert len(dataclasses.fields(RoutingDecision)) == 8
    _round_trips(decision)
    assert decision.chosen == "a"
    assert dataclasses.replace(decision, predicted_output_tokens=5.0).predicted_output_tokens == 5.0
    empty = RoutingDecision((), "p", reason="nothing")
    assert empty.chosen is None and dict(empty.scores) == {} and dict(empty.removed) == {}
    assert empty.predicted_ttft_ms is None and empty.predicted_e2e_ms is None
    assert empty.predicted_output_tokens is None
