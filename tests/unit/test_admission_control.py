"""AdmissionControl's capacity rules: queue order, class reserve, prefill cap, first-byte TTFT feedback.

Driven directly with hand-built snapshots (no proxy, no asyncio): each test states one rule a user
relies on at overload.
"""

from __future__ import annotations

from dataclasses import replace

from core.clock import ManualClock
from core.config import SluiceConfig, load_config_text
from core.types import Admit, BackendView, Health, Outcome, Queue
from decision.admission_control import AdmissionControl, limit_config, stream_limit_config
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


FLEET_BUDGET = "{name: default, slo: {ttft_ms: 2000}, admission: {prefill_budget: fleet}}"


def fleet_budget(text: str) -> str:
    return text.replace("{name: default, slo: {ttft_ms: 2000}}", FLEET_BUDGET)


def stand(ac: AdmissionControl, config: SluiceConfig, clock: ManualClock) -> None:
    """Make the waiting room stand (hold a request for longer than 2 TTFT targets, 1 s here), as at
    overload: the fleet budget applies only then. The request holding it is a sheddable one for a model
    no backend serves, so it is never woken and nobody of a more important class queues behind it."""
    hold = replace(features(request_id="hold", model="other"), priority="sheddable")
    assert ac.enqueue(hold, config.routes[0], Queue(deadline_s=1e9)).shed is None
    clock.advance(1.1)


def test_with_a_fleet_budget_one_pump_wakes_no_more_requests_than_the_prefill_caps_have_room_for() -> None:
    woken_by_wait = {}
    for wait_s in (0.5, 1.1):
        ac, config, clock = control(fleet_budget(FIXED_10.replace("initial: 10", "initial: 40")))
        route = config.routes[0]
        full = view("a", in_flight_requests=40)
        for i in range(8):
            feats, verdict = decide(ac, config, f"r{i}", "standard", full)
            assert isinstance(verdict, Queue)
            assert ac.enqueue(feats, route, verdict).shed is None
        clock.advance(wait_s)
        # 36 stream slots free at once (streams ended together) and the backend holds one prompt before
        # its first byte.
        freed = snapshot(view("a", in_flight_requests=4, awaiting_first_byte=1))
        woken = []
        while (request_id := ac.pop_dispatchable(freed)) is not None:
            woken.append(request_id)
        woken_by_wait[wait_s] = len(woken)
    # A queue of a moment (below capacity: a clump of arrivals): the per-backend gate, all 8 go. A queue
    # that stands (1 s = 2 TTFT targets, overload): the budget, only 3 more under the floor cap of 4.
    assert woken_by_wait == {0.5: 8, 1.1: 3}


def test_with_a_fleet_budget_a_backend_over_its_prefill_cap_counts_against_the_fleet() -> None:
    ac, config, clock = control(fleet_budget(TWO_FIXED_10))
    route = config.routes[0]
    over = view("a", in_flight_requests=7, awaiting_first_byte=7)
    # While the waiting room does not stand, the per-backend gate decides: "b" is under its cap.
    assert isinstance(ac.decide(features(request_id="g"), route, snapshot(over, view("b")), None, {}), Admit)
    stand(ac, config, clock)
    # A policy that does not route by load sends as much to "a" as to "b": "a" already holds 3 prompts
    # over its cap (4), so the 2 places left under "b"'s cap are not free for the fleet, whichever
    # backend the scan meets first.
    over = view("a", in_flight_requests=7, awaiting_first_byte=7)
    for i, (tight, roomy) in enumerate(
        [(view("b", awaiting_first_byte=2), view("b", awaiting_first_byte=0))] * 2
    ):
        fleets = ((over, tight), (over, roomy)) if i == 0 else ((tight, over), (roomy, over))
        verdict = ac.decide(features(request_id=f"q{i}"), route, snapshot(*fleets[0]), None, {})
        assert isinstance(verdict, Queue), (i, verdict)
        verdict = ac.decide(features(request_id=f"a{i}"), route, snapshot(*fleets[1]), None, {})
        assert isinstance(verdict, Admit), (i, verdict)


def test_with_a_fleet_budget_the_queue_wait_counts_first_bytes_while_completions_lag() -> None:
    ac, config, clock = control(fleet_budget(FIXED_10))
    route = config.routes[0]
    # One completion so far (streams last seconds), while the backend's first bytes come at ~8/s.
    ac.observe(
        Outcome(
            request_id="done",
            backend_id="a",
            route="default",
            model="m",
            tenant="default",
            status_code=200,
            prompt_tokens=100,
            output_tokens=10,
            cached_prompt_tokens=None,
            ttft_ms=100.0,
            e2e_ms=1000.0,
        )
    )
    first_bytes = 0
    for _ in range(40):
        clock.advance(0.125)
        first_bytes += 1
        ac.pop_dispatchable(snapshot(view("a", in_flight_requests=10, first_bytes=first_bytes)))
    full = view("a", in_flight_requests=10, first_bytes=first_bytes)
    for i in range(8):
        feats, verdict = decide(ac, config, f"q{i}", "standard", full)
        assert isinstance(verdict, Queue), verdict
        assert ac.enqueue(feats, route, verdict).shed is None
    # With 8 queued ahead the ninth leaves the queue in ~1.2 s at the first-byte rate (~7.5/s after 5 s):
    # within the 2 s SLO. At the completion rate (one per 10 s decay window) it would wait ~90 s and be
    # refused as infeasible.
    _, verdict = decide(ac, config, "q8", "standard", full)
    assert isinstance(verdict, Queue), verdict


GATE = "{name: default, slo: {ttft_ms: 2000}, admission: {prefill_budget: backend}}"


def test_with_the_per_backend_gate_a_backend_under_its_prefill_cap_admits_whatever_the_others_hold() -> None:
    ac, config, clock = control(TWO_FIXED_10.replace("{name: default, slo: {ttft_ms: 2000}}", GATE))
    route = config.routes[0]
    stand(ac, config, clock)  # even at overload: the gate never counts one backend against another
    over = view("a", in_flight_requests=7, awaiting_first_byte=7)
    verdict = ac.decide(
        features(request_id="r1"), route, snapshot(over, view("b", awaiting_first_byte=2)), None, {}
    )
    assert isinstance(verdict, Admit)


def test_with_lifo_below_the_top_class_the_newest_standard_request_goes_first_and_critical_stays_fifo() -> (
    None
):
    text = FIXED_10.replace(
        "admission: {concurrency: {algorithm: fixed, initial: 10}}",
        "admission: {concurrency: {algorithm: fixed, initial: 10},"
        " waiting_room: {lifo_below_top_class: true}}",
    )
    ac, config, _ = control(text)
    route = config.routes[0]
    full = view("a", in_flight_requests=10)
    for request_id, cls in [("s1", "standard"), ("c1", "critical"), ("s2", "standard"), ("c2", "critical")]:
        feats, verdict = decide(ac, config, request_id, cls, full)
        assert isinstance(verdict, Queue)
        assert ac.enqueue(feats, route, verdict).shed is None
    free = snapshot(view("a", in_flight_requests=0))
    order = [ac.pop_dispatchable(free) for _ in range(4)]
    assert order == ["c1", "c2", "s2", "s1"]


def test_with_a_fleet_budget_a_stalled_backend_stops_counting_against_the_fleet() -> None:
    """A backend whose requests hang without failing (no first byte for 4 TTFT targets, 2 s here) no
    longer holds back the other backends' room, as the per-backend gate would not; one still sending
    first bytes keeps counting."""
    ac, config, clock = control(fleet_budget(TWO_FIXED_10))
    route = config.routes[0]
    idle_b = view("b", awaiting_first_byte=0)

    def verdict(request_id: str, a: BackendView) -> object:
        return ac.decide(features(request_id=request_id), route, snapshot(a, idle_b), None, {})

    hung = view("a", in_flight_requests=10, awaiting_first_byte=10)  # 6 over its cap of 4: b's 4 are not free
    stand(ac, config, clock)
    queued = verdict("r0", hung)
    assert isinstance(queued, Queue)
    assert ac.enqueue(features(request_id="r0"), route, queued).shed is None
    clock.advance(1.9)
    assert isinstance(verdict("r1", replace(hung)), Queue)
    assert ac.pop_dispatchable(snapshot(replace(hung), idle_b)) is None
    clock.advance(0.2)
    # Stalled: the queue is served from b's room (the pump) and a newcomer is admitted.
    assert ac.pop_dispatchable(snapshot(replace(hung), idle_b)) == "r0"
    assert isinstance(verdict("r2", replace(hung)), Admit)
    # The same backend sending a first byte now and then is slow, not stalled: it counts again (and at
    # one first byte per 1.5 s the queue is too slow for the SLO: refused as infeasible, not admitted).
    for first_bytes in range(1, 4):
        clock.advance(1.5)
        working = view("a", in_flight_requests=10, awaiting_first_byte=10, first_bytes=first_bytes)
        assert not isinstance(verdict(f"w{first_bytes}", working), Admit)


def test_with_a_fleet_budget_an_unhealthy_backend_counts_nothing_against_the_fleet() -> None:
    ac, config, clock = control(fleet_budget(TWO_FIXED_10))
    route = config.routes[0]
    stand(ac, config, clock)
    over = view("a", in_flight_requests=10, awaiting_first_byte=10)
    ready = ac.decide(features(request_id="ready"), route, snapshot(over, view("b")), None, {})
    assert isinstance(ready, Queue)  # a READY backend over its cap counts against the fleet
    for health in (Health.DOWN, Health.DRAINING, Health.PENDING):
        broken = view("a", in_flight_requests=10, awaiting_first_byte=10, health=health)
        decided = ac.decide(features(request_id=f"r-{health}"), route, snapshot(broken, view("b")), None, {})
        assert isinstance(decided, Admit), health


GRADIENT2 = FIXED_10.replace("algorithm: fixed, initial: 10", "algorithm: gradient2, initial: 100, min: 4")


def steer(text: str, ttft_ms: float) -> tuple[int, int]:
    """(limit before, limit after) 200 first bytes at ``ttft_ms`` each on a backend holding its limit."""
    ac, _, clock = control(text)
    before = ac.limits()["a"]
    total_ms = 0.0
    for first_bytes in range(1, 201):
        clock.advance(0.05)
        total_ms += ttft_ms
        limit = ac.limits()["a"]
        busy = view("a", in_flight_requests=limit, first_bytes=first_bytes, first_byte_ttft_ms_total=total_ms)
        ac.pop_dispatchable(snapshot(busy))
    return before, ac.limits()["a"]


def test_with_the_fleet_budget_the_stream_limit_steers_to_twice_the_ttft_target() -> None:
    """A backend at 700 ms (over the 500 ms target, which the prefill cap holds, under twice it): with the
    fleet budget (default) its stream limit does not shrink, since the prompts it holds are bounded by
    the budget; with the per-backend gate, where the stream limit is the only brake on the pump, it does.
    Over twice the target it shrinks with either."""
    fleet_before, fleet_after = steer(GRADIENT2, 700.0)
    gate = GRADIENT2.replace("{name: default, slo: {ttft_ms: 2000}}", GATE)
    gate_before, gate_after = steer(gate, 700.0)
    assert fleet_after >= fleet_before
    assert gate_after < gate_before
    slow_before, slow_after = steer(GRADIENT2, 1500.0)
    assert slow_after < slow_before


def test_the_stream_target_follows_the_routes_prefill_budget_unless_set() -> None:
    def targets(text: str) -> tuple[float | None, float | None]:
        config = load_config_text(text).config
        return limit_config(config).ttft_target_ms, stream_limit_config(config).ttft_target_ms

    assert targets(GRADIENT2) == (500.0, 1000.0)
    assert targets(GRADIENT2.replace("{name: default, slo: {ttft_ms: 2000}}", GATE)) == (500.0, 500.0)
    two_routes = GRADIENT2.replace(
        "  - {name: default, slo: {ttft_ms: 2000}}\n",
        "  - {name: default, slo: {ttft_ms: 2000}}\n"
        "  - {name: batch, slo: {ttft_ms: 4000}, admission: {prefill_budget: backend}}\n",
    )
    assert targets(two_routes) == (500.0, 500.0)  # one route relies on the stream limit alone
    explicit = GRADIENT2.replace("min: 4}", "min: 4, stream_target_factor: 1.5}")
    assert targets(explicit) == (500.0, 750.0)
    no_slo = GRADIENT2.replace("slo: {ttft_ms: 2000}", "priority: standard")
    assert targets(no_slo) == (None, None)
