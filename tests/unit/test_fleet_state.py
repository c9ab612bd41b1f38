"""FleetState: RAII accounting, health state machine, circuit breaker, EWMA, engine metrics, snapshots."""

from __future__ import annotations

import pytest

from core.clock import ManualClock
from core.config import load_config_text
from core.types import EngineMetrics, Health
from state.circuit_breaker import BreakerState, CircuitBreaker
from state.fleet import FleetState

CONFIG = """\
backends:
  - {name: a, url: "http://127.0.0.1:1", models: [m1]}
  - {name: b, url: "http://127.0.0.1:2", models: [m1, m2], gpu: h100, max_concurrency: 8}
health: {healthy_after: 2, unhealthy_after: 2}
circuit_breaker: {consecutive_failures: 3, open_s: 10}
metrics_poll: {stale_after_s: 5}
"""


def make_fleet() -> tuple[FleetState, ManualClock]:
    clock = ManualClock(100.0)
    return FleetState(load_config_text(CONFIG).config, clock), clock


def ready(fleet: FleetState, *ids: str) -> None:
    for backend_id in ids:
        fleet.record_check(backend_id, True)
        fleet.record_check(backend_id, True)


def view(fleet: FleetState, backend_id: str):
    return fleet.snapshot().by_id()[backend_id]


def test_backends_start_pending_and_need_consecutive_passes() -> None:
    fleet, _ = make_fleet()
    assert view(fleet, "a").health is Health.PENDING
    assert not view(fleet, "a").selectable
    assert fleet.record_check("a", True) is False
    assert fleet.record_check("a", True) is True
    assert view(fleet, "a").health is Health.READY
    # One failed check is not enough; a pass in between resets the count.
    fleet.record_check("a", False)
    fleet.record_check("a", True)
    fleet.record_check("a", False)
    assert view(fleet, "a").health is Health.READY
    fleet.record_check("a", False)
    assert view(fleet, "a").health is Health.DOWN
    ready(fleet, "a")
    assert view(fleet, "a").health is Health.READY


def test_guard_releases_counts_on_success_error_and_cancel() -> None:
    fleet, _ = make_fleet()
    ready(fleet, "a")
    with fleet.acquire("a", prompt_tokens=100, predicted_decode_tokens=50.0) as guard:
        v = view(fleet, "a")
        assert (v.in_flight_requests, v.awaiting_first_byte, v.in_flight_prompt_tokens) == (1, 1, 100)
        assert v.in_flight_predicted_decode_tokens == 50.0
        guard.first_byte()
        guard.first_byte()  # idempotent
        assert view(fleet, "a").awaiting_first_byte == 0
        assert view(fleet, "a").in_flight_requests == 1
    assert fleet.total_in_flight == 0
    for exc_type in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc_type), fleet.acquire("a", prompt_tokens=7):
            raise exc_type()
    v = view(fleet, "a")
    assert (v.in_flight_requests, v.awaiting_first_byte, v.in_flight_prompt_tokens) == (0, 0, 0)
    assert v.in_flight_predicted_decode_tokens == 0.0
    guard = fleet.acquire("a", 3)
    guard.release()
    guard.release()
    assert view(fleet, "a").in_flight_requests == 0
    assert fleet.total_in_flight == 0


def test_breaker_opens_on_consecutive_failures_then_half_open_probe() -> None:
    fleet, clock = make_fleet()
    ready(fleet, "a")
    for _ in range(2):
        with fleet.acquire("a", 1) as guard:
            guard.failed()
    with fleet.acquire("a", 1) as guard:
        guard.succeeded()  # a success resets the run
    for _ in range(3):
        with fleet.acquire("a", 1) as guard:
            guard.failed()
    assert view(fleet, "a").health is Health.DOWN
    clock.advance(9.9)
    assert view(fleet, "a").health is Health.DOWN
    clock.advance(0.2)
    assert view(fleet, "a").health is Health.READY  # half-open: one probe allowed
    probe = fleet.acquire("a", 1)
    assert view(fleet, "a").health is Health.DOWN  # probe in flight, nobody else
    probe.release()  # abandoned without a verdict (client cancelled): slot freed
    assert view(fleet, "a").health is Health.READY
    with fleet.acquire("a", 1) as probe:
        probe.failed()
    assert view(fleet, "a").health is Health.DOWN  # a failed probe re-opens at once
    clock.advance(10.1)
    with fleet.acquire("a", 1) as probe:
        probe.succeeded()
    assert view(fleet, "a").health is Health.READY
    assert fleet.backend("a").breaker.state(clock.now_s()) is BreakerState.CLOSED


def test_breaker_never_counts_time() -> None:
    """A long generation is healthy: only explicit failures move the breaker."""
    breaker = CircuitBreaker(failure_threshold=1, open_s=1.0)
    assert breaker.allows_request(0.0)
    assert breaker.allows_request(1e9)
    breaker.on_failure(5.0)
    assert breaker.state(5.5) is BreakerState.OPEN
    assert breaker.state(6.0) is BreakerState.HALF_OPEN


def test_drain_hides_backend_but_keeps_in_flight() -> None:
    fleet, _ = make_fleet()
    ready(fleet, "a", "b")
    guard = fleet.acquire("b", 1)
    fleet.drain("b")
    assert [v.backend_id for v in fleet.snapshot().serving("m1")] == ["a"]
    assert view(fleet, "b").health is Health.DRAINING
    assert view(fleet, "b").in_flight_requests == 1
    guard.release()
    fleet.undrain("b")
    assert view(fleet, "b").health is Health.READY


def test_ewma_latency() -> None:
    fleet, _ = make_fleet()
    fleet.observe_latency("a", ttft_ms=100.0, tpot_ms=None)
    assert view(fleet, "a").ewma_ttft_ms == 100.0
    assert view(fleet, "a").ewma_tpot_ms is None
    fleet.observe_latency("a", ttft_ms=200.0, tpot_ms=10.0)
    assert view(fleet, "a").ewma_ttft_ms == pytest.approx(120.0)
    assert view(fleet, "a").ewma_tpot_ms == 10.0


def test_engine_metrics_stored_then_stale() -> None:
    fleet, clock = make_fleet()
    assert view(fleet, "a").metrics_stale
    assert view(fleet, "a").engine_running is None
    m1 = EngineMetrics(
        engine="vllm",
        scraped_at_s=clock.now_s(),
        running=3,
        waiting=1,
        kv_usage_frac=0.5,
        prefix_cache_queries_tokens_total=1000.0,
        prefix_cache_hits_tokens_total=100.0,
    )
    fleet.update_engine_metrics("a", m1)
    v = view(fleet, "a")
    assert (v.engine_running, v.engine_waiting, v.kv_usage_frac, v.metrics_stale) == (3, 1, 0.5, False)
    assert v.prefix_hit_rate is None  # one scrape has no delta
    clock.advance(1.0)
    m2 = EngineMetrics(
        engine="vllm",
        scraped_at_s=clock.now_s(),
        running=2,
        prefix_cache_queries_tokens_total=2000.0,
        prefix_cache_hits_tokens_total=850.0,
    )
    fleet.update_engine_metrics("a", m2)
    assert view(fleet, "a").prefix_hit_rate == pytest.approx(0.75)
    clock.advance(3.0)
    fleet.update_engine_metrics("a", None)  # failed scrape: values kept, age keeps growing
    v = view(fleet, "a")
    assert not v.metrics_stale
    assert v.metrics_age_s == pytest.approx(3.0)
    clock.advance(2.5)
    v = view(fleet, "a")
    assert v.metrics_stale
    assert v.engine_running == 2
    fleet.update_engine_metrics("nope", m2)  # unknown backend ignored


def test_prefix_hit_rate_forgets_an_engine_restart() -> None:
    fleet, clock = make_fleet()

    def scrape(queries: float, hits: float) -> EngineMetrics:
        clock.advance(1.0)
        return EngineMetrics(
            "vllm",
            clock.now_s(),
            prefix_cache_queries_tokens_total=queries,
            prefix_cache_hits_tokens_total=hits,
        )

    fleet.update_engine_metrics("a", scrape(100.0, 50.0))
    fleet.update_engine_metrics("a", scrape(200.0, 100.0))
    assert view(fleet, "a").prefix_hit_rate == pytest.approx(0.5)
    fleet.update_engine_metrics("a", scrape(10.0, 1.0))  # counters went back: the engine restarted
    assert view(fleet, "a").prefix_hit_rate is None
    fleet.update_engine_metrics("a", scrape(110.0, 91.0))
    assert view(fleet, "a").prefix_hit_rate == pytest.approx(0.9)


def test_prefix_hit_rate_from_an_engines_own_gauge() -> None:
    """SGLang exports only ``cache_hit_rate`` (and vLLM V0 a gauge): the fleet uses it as is."""
    fleet, clock = make_fleet()
    fleet.update_engine_metrics("b", EngineMetrics("sglang", clock.now_s(), prefix_hit_rate_frac=0.4))
    assert view(fleet, "b").prefix_hit_rate == pytest.approx(0.4)
    fleet.update_engine_metrics("b", None)  # a failed scrape keeps the last rate
    assert view(fleet, "b").prefix_hit_rate == pytest.approx(0.4)


def test_snapshot_is_cached_until_something_changes() -> None:
    fleet, _ = make_fleet()
    ready(fleet, "a")
    s1 = fleet.snapshot()
    assert fleet.snapshot() is s1
    with fleet.acquire("a", 1):
        s2 = fleet.snapshot()
        assert s2 is not s1
        assert s2.version > s1.version
        # The untouched backend's view object is reused.
        assert s2.by_id()["b"] is s1.by_id()["b"]
    assert fleet.snapshot().by_id()["a"].in_flight_requests == 0


def test_every_snapshot_names_its_backends_with_one_shared_tuple_of_ids() -> None:
    """``FleetSnapshot.backend_ids`` is the views' ids in order, and the same tuple for every snapshot
    (a decision's explanation keeps it instead of the views: ``policies.pipeline.RemovedBy``)."""
    fleet, _ = make_fleet()
    ready(fleet, "a", "b")
    s1 = fleet.snapshot()
    assert s1.backend_ids == tuple(v.backend_id for v in s1.backends) == ("a", "b")
    with fleet.acquire("b", 1):
        s2 = fleet.snapshot()
    assert s2 is not s1 and s2.backend_ids is s1.backend_ids
    assert fleet.backend_ids is s1.backend_ids


def test_first_bytes_are_counted_with_the_ttft_from_dispatch_at_the_first_byte() -> None:
    fleet, clock = make_fleet()
    ready(fleet, "a")
    with fleet.acquire("a", 100) as guard:
        clock.advance(0.25)
        guard.first_byte()
        assert (view(fleet, "a").first_bytes, view(fleet, "a").first_byte_ttft_ms_total) == (1, 250.0)
        clock.advance(5.0)  # the stream goes on: the TTFT sample was taken at the first byte
        guard.first_byte()  # a second call is a no-op
    with fleet.acquire("a", 100) as guard:
        guard.first_byte(at_s=clock.now_s() + 0.5)  # virtual time reports the event's own instant
    assert (view(fleet, "a").first_bytes, view(fleet, "a").first_byte_ttft_ms_total) == (2, 750.0)
