"""AdmissionControl's capacity rules: queue order, class reserve, prefill cap, first-byte TTFT feedback.

Driven directly with hand-built snapshots (no proxy, no asyncio): each test states one rule a user
relies on at overload.
"""

from __future__ import annotations

from dataclasses import replace

from core.clock import ManualClock
from core.config import SluiceConfig, load_config_text
from core.types import Admit, BackendView, Queue
from decision.admission_control import AdmissionControl
from tests.unit.policy_builders import features, snapshot, view

FIXED_10 = """\
backends:
  - {name: a, url: "http://127.0.0.1:1", models: [m]}
routes:
  - {name: default, slo: {ttft_ms: 2000}}
admission: {concurrency: {algorithm: fixed, initial: 10}}
"""


def control(text: str = FIXED_10) -> tuple[AdmissionControl, SluiceConfig, ManualClock]:
    config = load_config_text(text).config
    clock = ManualClock(0.0)
    return AdmissionControl(config, clock), config, clock


def decide(ac: AdmissionControl, config: SluiceConfig, request_id: str, cls: str, backend: BackendView):
    feats = replace(features(request_id=request_id), priority=cls)
    return feats, ac.decide(feats, config.routes[0], snapshot(backend), None, {})


def test_a_free_slot_goes_to_the_queue_first_not_to_a_newcomer() -> None:
    ac, config, _ = control()
    first, verdict = decide(ac, config, "r1", "standard", view("a", in_flight_requests=10))
    assert isinstance(verdict, Queue)
    assert ac.enqueue(first, config.routes[0], verdict).shed is None
    # A slot frees (or a limit grows) before the pump runs: the newcomer must not take it.
    _, later = decide(ac, config, "r2", "standard", view("a", in_flight_requests=5))
    assert isinstance(later, Queue)
    assert ac.pop_dispatchable(snapshot(view("a", in_flight_requests=5))) == "r1"


def test_lower_classes_leave_part_of_the_limit_to_higher_ones() -> None:
    ac, config, _ = control()
    busy = view("a", in_flight_requests=9)  # limit 10: standard may fill 90 %, sheddable 80 %
    assert isinstance(decide(ac, config, "c", "critical", busy)[1], Admit)
    assert isinstance(decide(ac, config, "s", "standard", busy)[1], Queue)
    assert isinstance(decide(ac, config, "x", "sheddable", view("a", in_flight_requests=8))[1], Queue)
    assert isinstance(decide(ac, config, "y", "sheddable", view("a", in_flight_requests=7))[1], Admit)


def test_prompts_waiting_for_their_first_byte_are_capped_when_the_route_has_a_ttft_slo() -> None:
    ac, config, _ = control()
    # No first-byte rate measured yet: the cap is its floor of 4 requests awaiting their first byte.
    crowded = view("a", in_flight_requests=4, awaiting_first_byte=4)
    assert isinstance(decide(ac, config, "r1", "critical", crowded)[1], Queue)
    ok = view("a", in_flight_requests=4, awaiting_first_byte=3)
    assert isinstance(decide(ac, config, "r2", "critical", ok)[1], Admit)
    no_slo, config2, _ = control(FIXED_10.replace("slo: {ttft_ms: 2000}", "priority: standard"))
    assert isinstance(decide(no_slo, config2, "r3", "critical", crowded)[1], Admit)


def test_the_limit_learns_ttft_at_the_first_byte_and_steers_to_the_target() -> None:
    text = FIXED_10.replace("algorithm: fixed, initial: 10", "algorithm: gradient2, initial: 8, min: 4")
    ac, _, clock = control(text)
    first_bytes, total_ms = 0, 0.0

    def observe(ttft_ms: float, n: int) -> None:
        nonlocal first_bytes, total_ms
        for _ in range(n):
            clock.advance(0.05)
            first_bytes += 1
            total_ms += ttft_ms
            limit = ac.limits()["a"]
            busy = view(
                "a", in_flight_requests=limit, first_bytes=first_bytes, first_byte_ttft_ms_total=total_ms
            )
            ac.pop_dispatchable(snapshot(busy))  # any snapshot read feeds the limiter

    observe(100.0, 200)  # well under the target (SLO / 4 = 500 ms): grows, no request has ended yet
    grown = ac.limits()["a"]
    assert grown > 8
    observe(450.0, 200)  # 4.5x the early TTFT but still under the target: a busy backend, not congested
    assert ac.limits()["a"] >= grown
    observe(3000.0, 100)  # over the target: shrinks
    assert ac.limits()["a"] < grown


TWO_FIXED_10 = FIXED_10.replace(
    '  - {name: a, url: "http://127.0.0.1:1", models: [m]}\n',
    '  - {name: a, url: "http://127.0.0.1:1", models: [m]}\n'
    '  - {name: b, url: "http://127.0.0.1:2", models: [m]}\n',
)


def test_any_backend_with_a_free_slot_and_kv_room_admits_whatever_its_place_in_the_fleet() -> None:
    ac, config, _ = control(TWO_FIXED_10)
    route = config.routes[0]
    full = view("a", in_flight_requests=10)
    kv_full = view(
        "a", in_flight_requests=1, kv_usage_frac=0.99, kv_capacity_tokens=10_000, metrics_stale=False
    )
    roomy = view("b", in_flight_requests=1, kv_usage_frac=0.1, kv_capacity_tokens=10_000, metrics_stale=False)
    kv_full_b = replace(kv_full, backend_id="b")
    verdicts = {
        "no slot on the first, room on the second": ac.decide(
            features(request_id="r1"), route, snapshot(full, roomy), None, {}
        ),
        "no KV on the first, room on the second": ac.decide(
            features(request_id="r2"), route, snapshot(kv_full, roomy), None, {}
        ),
        "no KV anywhere": ac.decide(features(request_id="r3"), route, snapshot(kv_full, kv_full_b), None, {}),
        "no slot anywhere": ac.decide(
            features(request_id="r4"), route, snapshot(full, replace(full, backend_id="b")), None, {}
        ),
    }
    assert [type(v) for v in verdicts.values()] == [Admit, Admit, Queue, Queue], verdicts
