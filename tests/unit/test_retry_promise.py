"""AdmissionControl keeps its Retry-After promises: a request that comes back when told is served
ahead of fresh requests of its class, and the 429 says when precisely.

Driven directly with hand-built snapshots (no proxy, no asyncio), as ``test_admission_control``.
"""

from __future__ import annotations

from dataclasses import replace

from core.clock import ManualClock
from core.config import SluiceConfig, load_config_text
from core.errors import Shed as ShedError
from core.types import Admit, BackendView, Queue, RequestFeatures, Shed, ShedReason
from decision.admission_control import AdmissionControl
from tests.unit.policy_builders import features, snapshot, view

ROOM_OF_2 = """\
backends:
  - {name: a, url: "http://127.0.0.1:1", models: [m]}
routes:
  - {name: default, slo: {ttft_ms: 2000}}
admission: {concurrency: {algorithm: fixed, initial: 10}, waiting_room: {max_requests: 2}}
"""


def control() -> tuple[AdmissionControl, SluiceConfig, ManualClock]:
    config = load_config_text(ROOM_OF_2).config
    clock = ManualClock(0.0)
    return AdmissionControl(config, clock), config, clock


def request(request_id: str, tenant: str, retry_count: int | None, cls: str = "standard") -> RequestFeatures:
    return replace(
        features(request_id=request_id), tenant=tenant, priority=cls, client_retry_count=retry_count
    )


def arrive(
    ac: AdmissionControl, config: SluiceConfig, feats: RequestFeatures, backend: BackendView
) -> object:
    route = config.routes[0]
    verdict = ac.decide(feats, route, snapshot(backend), None, {})
    if isinstance(verdict, Queue):
        placed = ac.enqueue(feats, route, verdict)
        return placed.shed or verdict
    return verdict


def test_a_request_returning_at_its_retry_after_goes_ahead_of_fresh_requests_of_its_class() -> None:
    ac, config, clock = control()
    busy = view("a", in_flight_requests=10)
    assert isinstance(arrive(ac, config, request("f1", "other", 0), busy), Queue)
    assert isinstance(arrive(ac, config, request("f2", "other", 0), busy), Queue)
    refused = arrive(ac, config, request("acme-1", "acme", 0), busy)
    assert isinstance(refused, Shed) and refused.reason is ShedReason.QUEUE_FULL
    clock.advance(refused.retry_after_s)
    # The same client, on its first retry: it redeems the promise, evicts the newest fresh request
    # of its class, and takes the next free slot before the older fresh one.
    assert isinstance(arrive(ac, config, request("acme-2", "acme", 1), busy), Queue)
    assert ac.queue_depths()["standard"] == 2
    assert ac.pop_dispatchable(snapshot(view("a", in_flight_requests=9))) == "acme-2"


def test_a_fresh_request_of_the_same_tenant_does_not_take_the_promise() -> None:
    ac, config, clock = control()
    busy = view("a", in_flight_requests=10)
    arrive(ac, config, request("f1", "other", 0), busy)
    arrive(ac, config, request("f2", "other", 0), busy)
    refused = arrive(ac, config, request("acme-1", "acme", 0), busy)
    assert isinstance(refused, Shed)
    clock.advance(refused.retry_after_s)
    # A first attempt (retry count 0) is fresh whatever its tenant: the room is full of its class.
    assert isinstance(arrive(ac, config, request("acme-new", "acme", 0), busy), Shed)
    # The returning one still finds its promise.
    assert isinstance(arrive(ac, config, request("acme-2", "acme", 1), busy), Queue)


def test_a_returning_request_may_fill_the_share_the_class_reserve_keeps_for_the_class_above() -> None:
    ac, config, clock = control()
    nine = view("a", in_flight_requests=9)  # limit 10: standard may fill 90 %, so it waits
    assert isinstance(arrive(ac, config, request("f1", "other", 0), nine), Queue)
    busy = view("a", in_flight_requests=10)
    arrive(ac, config, request("f2", "other", 0), busy)  # the room (2) is full
    refused = arrive(ac, config, request("acme-1", "acme", 0), busy)
    assert isinstance(refused, Shed)
    for gone in ("f1", "f2"):  # their clients leave: nobody waits any more
        assert ac.leave_queue(gone)
    clock.advance(refused.retry_after_s)
    assert isinstance(arrive(ac, config, request("acme-2", "acme", 1), nine), Admit)
    assert isinstance(arrive(ac, config, request("f4", "other", 0), nine), Queue)


def test_the_429_carries_the_precise_delay_for_clients_that_read_retry_after_ms() -> None:
    headers = ShedError("busy", retry_after_s=2.5, reason="slo_infeasible").headers()
    assert headers["Retry-After"] == "3"  # whole seconds, rounded up (RFC 9110)
    assert headers["retry-after-ms"] == "2500"
