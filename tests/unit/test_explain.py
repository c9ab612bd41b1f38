"""The /debug/decisions ring buffer: bounded, newest first, JSON-ready."""

from __future__ import annotations

import orjson
import pytest

from core.types import RoutingDecision
from decision.explain import DecisionLog
from tests.unit.policy_builders import features


def decision(chosen: str) -> RoutingDecision:
    others = tuple(f"x{i}" for i in range(10))
    return RoutingDecision(
        ranked=(chosen, *others),
        policy="p",
        scores={"queue": {chosen: 1.0, **dict.fromkeys(others, 0.5)}},
        removed={"gone": "max_concurrency"},
        predicted_ttft_ms=12.5,
    )


def test_keeps_only_the_newest_entries() -> None:
    log = DecisionLog(capacity=3)
    for i in range(5):
        log.append(float(i), features(request_id=f"r{i}"), decision(f"b{i}"), {f"b{i}": 32})
    assert len(log) == 3 and log.capacity == 3
    records = log.recent()
    assert [r["request_id"] for r in records] == ["r4", "r3", "r2"]
    assert [r["request_id"] for r in log.recent(limit=1)] == ["r4"]
    assert [r["chosen"] for r in log.recent(request_id="r3")] == ["b3"]
    assert log.recent(request_id="r0") == []


def test_records_explain_the_choice_and_serialise() -> None:
    log = DecisionLog()
    log.append(7.0, features(request_id="r1"), decision("a"), {"a": 48})
    (record,) = log.recent(top_n=2)
    assert record["ranked"] == [
        {"backend": "a", "prefix_matched_tokens": 48, "scores": {"queue": 1.0}},
        {"backend": "x0", "prefix_matched_tokens": 0, "scores": {"queue": 0.5}},
    ]
    assert record["candidates"] == 11
    assert record["removed"] == {"gone": "max_concurrency"}
    assert record["predicted_ttft_ms"] == 12.5
    assert orjson.loads(orjson.dumps(record)) == record


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        DecisionLog(capacity=0)


def test_the_log_does_not_keep_the_requests_features() -> None:
    """A record keeps the five fields it shows, not the ``RequestFeatures`` (its prefix hashes, its
    last user message): those are freed with the request, not ~1,000 requests later by the log."""
    import gc

    log = DecisionLog()
    feats = features(request_id="r9", route="chat")
    log.append(3.0, feats, decision("a"), {"a": 16})
    assert feats not in gc.get_referents(*log._entries)
    (record,) = log.recent()
    shown = (record["at_s"], record["request_id"], record["route"], record["model"], record["tenant"])
    assert shown == (3.0, "r9", "chat", feats.model, feats.tenant)
    assert record["prompt_tokens"] == feats.prompt_tokens


def _reachable(roots: list[object], depth: int = 8) -> list[object]:
    """Objects reachable from ``roots`` through containers and instances (not types, modules or
    functions, which reach everything)."""
    import gc
    import types

    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
    seen: dict[int, object] = {}
    layer = roots
    for _ in range(depth):
        nxt: list[object] = []
        for obj in layer:
            if id(obj) in seen or isinstance(obj, skip):
                continue
            seen[id(obj)] = obj
            nxt.extend(gc.get_referents(obj))
        layer = nxt
    return list(seen.values())


@pytest.mark.parametrize("named", [True, False], ids=["fleet ids given", "no fleet ids"])
def test_the_log_keeps_no_backend_view_and_explains_the_same(named: bool) -> None:
    """A logged decision of the sampling pipeline names the removed backends by id: it keeps no
    ``BackendView`` (nor the fleet's tuple of them) alive for the 1,024 decisions it stays in the log,
    which would free them, cold, inside a later decision. The explanation is the same either way."""
    import random

    from core.clock import ManualClock
    from core.config import load_config_text
    from core.types import BackendView, FleetSnapshot
    from decision.engine import DecisionEngine
    from tests.unit.policy_builders import MODEL, view

    ids = tuple(f"gpu-{i:02d}" for i in range(24))
    backends = "".join(f"  - {{name: {b}, url: 'http://127.0.0.1:9', models: [{MODEL}]}}\n" for b in ids)
    text = f"backends:\n{backends}routes:\n  - name: chat\n    policy: {{name: sluice_predictive}}\n"
    engine = DecisionEngine.from_config(load_config_text(text), ManualClock(), random.Random(1))
    views = tuple(view(b) for b in ids)
    snap = FleetSnapshot(views, 1.0, backend_ids=ids if named else None)
    decision = engine.route(features(request_id="r1", route="chat"), snap)
    assert decision.removed and len(decision.removed) + len(decision.ranked) == len(ids)
    assert set(decision.removed) | set(decision.ranked) == set(ids)
    assert set(decision.removed.values()) == {"subset"}
    reached = _reachable(list(engine.decisions._entries))
    assert not [obj for obj in reached if isinstance(obj, BackendView)]
    assert views not in reached
    (record,) = engine.decisions.recent()
    assert record["removed"] == dict(decision.removed)
