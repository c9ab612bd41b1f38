"""The virtual-time fleet: the decision loop as the proxy runs it, staleness, faults, determinism."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from core.features import build_features
from core.types import (
    AdmissionDecision,
    Admit,
    BackendId,
    Endpoint,
    EnqueueResult,
    FleetSnapshot,
    Outcome,
    Queue,
    RequestFeatures,
    RoutingDecision,
    Shed,
    ShedReason,
)
from loadgen.records import Outcome as LoadOutcome
from loadgen.results import SLO, summarise
from loadgen.sim.engine import SimEngine
from loadgen.sim.fleet_config import load_fleet_text, virtual_sluice_config
from loadgen.sim.request import SimRequest
from loadgen.sim.virtual import VirtualFleet, VirtualOptions
from loadgen.sim.virtual_proxy import OVERLOAD_RETRY_AFTER_S
from loadgen.sim.virtual_room import PUMP_TICK_S
from loadgen.workload import WorkloadRequest
from state.fleet import ewma

MODEL = "llama-3.1-8b"
TWO = "backends:\n  - {name: a, profile: h100-llama3.1-8b}\n  - {name: b, profile: a100-llama3.1-8b}\n"


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": True, **extra}


def workload(n: int, rate: float = 4.0, seed: int = 1, out: int = 50) -> Iterator[WorkloadRequest]:
    rng = random.Random(seed)
    t = 0.0
    for i in range(n):
        t += rng.expovariate(rate)
        text = f"request {i} " + "word " * rng.randint(20, 600)
        yield WorkloadRequest(f"r{i}", t, Endpoint.CHAT, body(text), rng.randint(1, out))


class Recorder:
    """A Decider that records every call and routes by a fixed rule (or queues/sheds on demand)."""

    def __init__(
        self, verdicts: dict[str, AdmissionDecision] | None = None, order: tuple[str, ...] = ("a", "b")
    ):
        self.calls: list[tuple[str, str]] = []
        self.snapshots: list[FleetSnapshot] = []
        self.features: list[RequestFeatures] = []
        self.outcomes: list[Outcome] = []
        self.verdicts = verdicts or {}
        self.order = order
        self.queued: list[str] = []
        self.predicted: float | None = None
        self.evict_on: dict[str, str] = {}  # enqueueing key evicts value

    def admit(self, features: RequestFeatures, snapshot: FleetSnapshot) -> AdmissionDecision:
        self.calls.append(("admit", features.request_id))
        self.snapshots.append(snapshot)
        self.features.append(features)
        return self.verdicts.pop(features.request_id, Admit())

    def enqueue(self, features: RequestFeatures, decision: Queue) -> EnqueueResult:
        self.calls.append(("enqueue", features.request_id))
        self.queued.append(features.request_id)
        victim = self.evict_on.get(features.request_id)
        if victim is not None:
            self.queued.remove(victim)
            return EnqueueResult(None, (victim,), 7.0)
        return EnqueueResult(None)

    def pop_dispatchable(self, snapshot: FleetSnapshot) -> str | None:
        """FIFO, one request at a time: dispatchable once nothing is in flight."""
        if self.queued and all(v.in_flight_requests == 0 for v in snapshot.backends):
            return self.queued.pop(0)
        return None

    def leave_queue(self, request_id: str) -> bool:
        if request_id in self.queued:
            self.queued.remove(request_id)
            self.calls.append(("leave_queue", request_id))
            return True
        return False

    def retry_after_s(self, features: RequestFeatures) -> float:
        return 3.0

    def route(self, features: RequestFeatures, snapshot: FleetSnapshot) -> RoutingDecision:
        self.calls.append(("route", features.request_id))
        ranked = tuple(b for b in self.order if snapshot.by_id()[b].selectable)
        return RoutingDecision(ranked=ranked, policy="recorder", predicted_output_tokens=self.predicted)

    def on_routed(self, features: RequestFeatures, decision: RoutingDecision, backend_id: BackendId) -> None:
        self.calls.append((f"on_routed:{backend_id}", features.request_id))

    def observe(self, outcome: Outcome) -> None:
        self.calls.append(("observe", outcome.request_id))
        self.outcomes.append(outcome)


def fleet_for(text: str = TWO, decider: Recorder | None = None, **options: Any) -> VirtualFleet:
    fleet = load_fleet_text(text)
    return VirtualFleet(
        fleet, virtual_sluice_config(fleet), decider=decider, options=VirtualOptions(**options)
    )


def test_same_seed_same_records() -> None:
    def run() -> list[tuple[Any, ...]]:
        records = fleet_for(seed=3).run(workload(200, rate=20.0))
        return [
            (r.request_id, r.backend_id, r.ttft_s, r.e2e_s, r.output_tokens, tuple(r.token_times_s))
            for r in records
        ]

    assert run() == run()


def test_a_lone_request_matches_the_engine_alone() -> None:
    text = "hello " * 500
    [record] = fleet_for(decider=Recorder()).run([WorkloadRequest("x", 2.0, Endpoint.CHAT, body(text), 20)])
    engine = SimEngine(load_fleet_text(TWO).backends[0].profile)
    features = build_features(
        request_id="x",
        endpoint=Endpoint.CHAT,
        body=body(text),
        route="d",
        tenant="t",
        priority="p",
        arrival_s=0,
    )
    sim = SimRequest("x", features.prompt_tokens, features.prefix_hashes, 20)
    engine.add_request(sim, 2.0)
    engine.advance_until(100.0)
    assert record.status == 200 and record.backend_id == "a"
    assert record.ttft_s == pytest.approx((sim.first_token_s or 0) - 2.0)
    assert list(record.token_times_s) == pytest.approx(list(sim.token_times))
    assert record.output_tokens == 20 and record.prompt_tokens == features.prompt_tokens


def test_decider_is_called_as_the_proxy_calls_it() -> None:
    decider = Recorder(verdicts={"r3": Shed(ShedReason.OVERLOAD, 2.0)})
    records = fleet_for(decider=decider).run(workload(10))
    for rid in (f"r{i}" for i in range(10)):
        calls = [c for c, r in decider.calls if r == rid]
        if rid == "r3":
            assert calls == ["admit", "observe"]
        else:
            assert calls == ["admit", "route", "on_routed:a", "observe"]
    shed = next(r for r in records if r.request_id == "r3")
    assert (shed.status, shed.error_code, shed.retry_after_s) == (429, "overloaded", 2.0)
    ok = [o for o in decider.outcomes if o.status_code == 200]
    assert all(
        o.ttft_ms is not None and o.output_tokens > 0 and o.cached_prompt_tokens is not None for o in ok
    )


def test_features_are_the_proxys_and_never_see_the_ground_truth() -> None:
    decider = Recorder()
    reqs = list(workload(5))
    fleet_for(decider=decider).run(reqs)
    for wr, features in zip(reqs, decider.features, strict=True):
        expected = build_features(
            request_id=wr.request_id,
            endpoint=wr.endpoint,
            body=wr.body,
            route="default",
            tenant=wr.tenant,
            priority=wr.priority,
            arrival_s=wr.arrival_s,
            session_key=wr.session_id,
        )
        assert features == expected


def test_engine_state_reaches_decisions_only_through_polls() -> None:
    decider = Recorder()
    fleet_for(decider=decider, poll_interval_s=2.0).run(workload(300, rate=30.0))
    seen = 0
    for snap in decider.snapshots:
        view = snap.by_id()["a"]
        if view.metrics_age_s is None:
            assert view.engine_running is None and view.metrics_stale
            continue
        seen += 1
        assert 0 <= view.metrics_age_s <= 2.0 + 1e-9
        assert view.kv_capacity_tokens == 29205 * 16
    assert seen > 100
    # between two polls the engine-reported fields stay frozen while Sluice's own counters move
    pairs = zip(decider.snapshots, decider.snapshots[1:], strict=False)
    frozen = [
        (x.by_id()["a"], y.by_id()["a"])
        for x, y in pairs
        if x.by_id()["a"].metrics_age_s is not None
        and y.by_id()["a"].metrics_age_s is not None
        and (y.by_id()["a"].metrics_age_s or 0) > (x.by_id()["a"].metrics_age_s or 0)
    ]
    assert frozen and all(u.engine_running == v.engine_running for u, v in frozen)
    assert any(u.in_flight_requests != v.in_flight_requests for u, v in frozen)


def test_waiting_room_admits_when_capacity_frees_or_times_out() -> None:
    reqs = [WorkloadRequest(f"q{i}", 0.01 * i, Endpoint.CHAT, body(f"q{i} " * 50), 100) for i in range(3)]
    decider = Recorder(verdicts={"q1": Queue(deadline_s=10.0), "q2": Queue(deadline_s=0.05)})
    records = {r.request_id: r for r in fleet_for(decider=decider).run(reqs)}
    q2 = records["q2"]
    assert (q2.status, q2.error_code, q2.shed_reason, q2.retry_after_s) == (
        429,
        "queue_timeout",
        "queue_timeout",
        3.0,
    )
    assert records["q1"].status == 200
    # q1 was woken when q0 finished (its guard released), and only then routed
    assert records["q1"].queue_wait_s == pytest.approx(records["q0"].e2e_s + records["q0"].sent_s - 0.01)
    assert [c for c, r in decider.calls if r == "q1"] == [
        "admit",
        "enqueue",
        "route",
        "on_routed:a",
        "observe",
    ]
    assert [c for c, r in decider.calls if r == "q2"] == ["admit", "enqueue", "leave_queue", "observe"]


def test_eviction_and_the_proxy_cap_shed_with_their_reasons() -> None:
    reqs = [WorkloadRequest(f"q{i}", 0.01 * i, Endpoint.CHAT, body(f"q{i} " * 50), 100) for i in range(3)]
    decider = Recorder(verdicts={"q1": Queue(deadline_s=10.0), "q2": Queue(deadline_s=10.0)})
    decider.evict_on = {"q2": "q1"}
    records = {r.request_id: r for r in fleet_for(decider=decider).run(reqs)}
    q1 = records["q1"]
    assert (q1.status, q1.error_code, q1.shed_reason, q1.retry_after_s) == (
        429,
        "overloaded",
        "queue_full",
        7.0,
    )
    assert records["q2"].status == 200
    fleet = load_fleet_text(TWO)
    capped = virtual_sluice_config(fleet, {"limits": {"max_in_flight": 1}})
    records = {r.request_id: r for r in VirtualFleet(fleet, capped, decider=Recorder()).run(reqs)}
    assert records["q0"].status == 200
    for rid in ("q1", "q2"):
        r = records[rid]
        assert (r.status, r.error_code, r.shed_reason, r.retry_after_s) == (
            429,
            "overloaded",
            "overload",
            1.0,
        )


def test_snapshots_carry_the_proxys_own_accounting() -> None:
    """Predicted decode tokens from the decision, EWMA latencies from finished streams (state.fleet)."""
    decider = Recorder()
    decider.predicted = 40.0
    vf = fleet_for(decider=decider)
    records = vf.run(workload(60, rate=20.0))
    for snap in decider.snapshots:
        for view in snap.backends:
            assert view.in_flight_predicted_decode_tokens == 40.0 * view.in_flight_requests
            assert 0 <= view.awaiting_first_byte <= view.in_flight_requests
    assert any(v.in_flight_requests > 1 for snap in decider.snapshots for v in snap.backends)
    assert all(o.predicted_output_tokens == 40.0 for o in decider.outcomes)
    ewma_ttft = ewma_tpot = None
    for r in records:  # finish order, as the proxy folds them in
        assert r.backend_id == "a" and r.ttft_s is not None and r.e2e_s is not None
        ewma_ttft = ewma(ewma_ttft, r.ttft_s * 1000.0)
        if r.output_tokens > 1:
            ewma_tpot = ewma(ewma_tpot, (r.e2e_s - r.ttft_s) * 1000.0 / (r.output_tokens - 1))
    view = vf.state.snapshot().by_id()["a"]
    assert view.ewma_ttft_ms == pytest.approx(ewma_ttft)
    assert view.ewma_tpot_ms == pytest.approx(ewma_tpot)
    assert view.in_flight_requests == 0 and view.in_flight_predicted_decode_tokens == 0


def test_the_real_admission_control_holds_requests_at_the_concurrency_limit() -> None:
    """DecisionEngine with a fixed limit of 2 per backend: the excess waits in the room, then runs."""
    fleet = load_fleet_text(TWO)
    base = {"admission": {"concurrency": {"algorithm": "fixed", "initial": 2}}}
    vf = VirtualFleet(fleet, virtual_sluice_config(fleet, base))
    burst = [WorkloadRequest(f"b{i}", 1.0, Endpoint.CHAT, body(f"b{i} " * 80), 60) for i in range(12)]
    records = vf.run(burst)
    assert len(records) == 12 and all(r.status == 200 for r in records)
    waited = [r for r in records if r.queue_wait_s > 0]
    assert len(waited) == 8  # 2 slots on each of the 2 backends
    # woken only when a request ended (its slot freed) or on the 50 ms safety-net tick
    ends = {round(r.sent_s + (r.e2e_s or 0), 9) for r in records}
    for r in waited:
        woken_s = r.sent_s + r.queue_wait_s
        on_tick = abs((woken_s - 1.0) / PUMP_TICK_S - round((woken_s - 1.0) / PUMP_TICK_S)) < 1e-6
        assert round(woken_s, 9) in ends or on_tick
    assert any(round(r.sent_s + r.queue_wait_s, 9) in ends for r in waited)


def test_dependent_turn_waits_for_its_parent_and_think_time() -> None:
    first = WorkloadRequest("t1", 0.0, Endpoint.CHAT, body("turn one " * 100), 40, session_id="s")
    second = WorkloadRequest(
        "t2", 0.0, Endpoint.CHAT, body("turn one " * 100 + "turn two"), 5, session_id="s",
        after_request_id="t1", think_time_s=3.0,
    )  # fmt: skip
    records = {r.request_id: r for r in fleet_for(decider=Recorder()).run([first, second])}
    end_of_first = records["t1"].sent_s + (records["t1"].e2e_s or 0)
    assert records["t2"].sent_s == pytest.approx(end_of_first + 3.0)
    assert (records["t2"].cached_tokens or 0) > 0  # the history is in the cache of the same backend


def test_crash_moves_requests_to_the_next_backend_and_health_marks_it_down() -> None:
    text = TWO.replace(
        "{name: a, profile: h100-llama3.1-8b}",
        "{name: a, profile: h100-llama3.1-8b, fault_schedule: [{at_s: 1.0, set: {crashed: true}}]}",
    )
    decider = Recorder()
    records = fleet_for(text, decider=decider).run(workload(400, rate=20.0, out=200))
    assert all(r.status in (200, 502) for r in records)
    # health checks every 5 s, DOWN after 2 failures: from t=10 s on a is skipped
    after = [r for r in records if r.sent_s > 10.5]
    assert after and all(r.backend_id == "b" and r.attempts == 1 for r in after)
    retried = [r for r in records if r.attempts == 2]
    assert retried and all(r.status == 200 and r.backend_id == "b" for r in retried)
    failed = [r for r in records if r.status == 502]
    assert all(r.error_code == "upstream_failed_mid_stream" and r.ttft_s is not None for r in failed)


def test_error_rate_is_retried_when_the_status_is_retryable() -> None:
    text = TWO.replace(
        "{name: a, profile: h100-llama3.1-8b}",
        "{name: a, profile: h100-llama3.1-8b, faults: {error_rate: 1.0, error_status: 503}}",
    )
    records = sorted(fleet_for(text, decider=Recorder()).run(workload(20)), key=lambda r: r.sent_s)
    assert all(r.status == 200 and r.backend_id == "b" for r in records)
    # every 503 is a circuit-breaker failure: after 5 in a row `a` is ejected for open_s = 10 s
    assert [r.attempts for r in records] == [2] * 5 + [1] * 15
    text500 = text.replace("error_status: 503", "error_status: 500")
    records = sorted(fleet_for(text500, decider=Recorder()).run(workload(20)), key=lambda r: r.sent_s)
    assert all(r.status == 500 and r.error_code == "simulated_fault" for r in records[:5])
    assert all(r.status == 200 and r.backend_id == "b" and r.attempts == 1 for r in records[5:])


def test_a_hung_backend_times_out_at_the_first_byte_deadline() -> None:
    # hung after start-up (a backend hung from the start never passes its first health check)
    hang = "fault_schedule: [{at_s: 0, set: {hang: true}}]"
    text = f"backends:\n  - {{name: a, profile: h100-llama3.1-8b, {hang}}}\n"
    records = fleet_for(text, decider=Recorder(order=("a",))).run(workload(3))
    assert all(r.status == 504 and r.error_code == "upstream_timeout" for r in records)
    assert all(r.e2e_s == pytest.approx(120.0) for r in records)


def test_oracle_sees_the_exact_kv_state() -> None:
    vf = fleet_for(decider=Recorder())
    text = "shared system prompt " * 64
    vf.run([WorkloadRequest("o", 0.0, Endpoint.CHAT, body(text), 3)])
    hashes = build_features(
        request_id="p",
        endpoint=Endpoint.CHAT,
        body=body(text),
        route="d",
        tenant="t",
        priority="p",
        arrival_s=0,
    ).prefix_hashes
    exact = vf.exact_cached_prefix_tokens(hashes)
    assert exact["a"] == len(hashes) * 16 and exact["b"] == 0


def test_config_and_fleet_must_agree() -> None:
    fleet = load_fleet_text(TWO)
    other = load_fleet_text("backends:\n  - {name: z, profile: h100-llama3.1-8b}\n")
    with pytest.raises(ValueError, match="differ"):
        VirtualFleet(fleet, virtual_sluice_config(other))


def test_timings_copied_from_the_router_stay_equal() -> None:
    """The simulator cannot import the router (aiohttp); its copies of the router's constants must agree."""
    from router.admission import OVERLOAD_RETRY_AFTER_S as ROUTER_RETRY_AFTER_S
    from router.waiting_room import PUMP_TICK_S as ROUTER_TICK_S

    assert (PUMP_TICK_S, OVERLOAD_RETRY_AFTER_S) == (ROUTER_TICK_S, ROUTER_RETRY_AFTER_S)


def test_records_convert_to_the_load_clients_and_summarise_alike() -> None:
    reqs = [WorkloadRequest(f"q{i}", 0.01 * i, Endpoint.CHAT, body(f"q{i} " * 50), 30) for i in range(3)]
    decider = Recorder(verdicts={"q2": Shed(ShedReason.SLO_INFEASIBLE, 4.0)})
    sim_records = {r.request_id: r for r in fleet_for(decider=decider).run(reqs)}
    load = {rid: r.to_load_record() for rid, r in sim_records.items()}
    ok, shed = load["q0"], load["q2"]
    assert ok.outcome is LoadOutcome.OK and ok.backend == "a" and ok.true_output_tokens == 30
    assert ok.ttft_ms == pytest.approx((sim_records["q0"].ttft_s or 0) * 1000.0)
    assert len(ok.itl_ms) == 29 and ok.tpot_ms == pytest.approx(sum(ok.itl_ms) / 29)
    assert (shed.outcome, shed.status, shed.shed_reason, shed.retry_after_s) == (
        LoadOutcome.SHED,
        429,
        "slo_infeasible",
        4.0,
    )
    assert sim_records["q1"].to_load_record(with_itl=False).itl_ms == []
    summary = summarise(list(load.values()), SLO(ttft_ms=10_000))
    assert (summary["requests"], summary["completed"], summary["shed"], summary["good"]) == (3, 2, 1, 2)
