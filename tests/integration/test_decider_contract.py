"""The proxy calls the Decider as core.protocols says: admit, route, on_routed per attempt, observe always."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import orjson

from core.clock import MonotonicClock
from core.config import load_config_text
from core.types import (
    AdmissionDecision,
    Admit,
    BackendId,
    EnqueueResult,
    FleetSnapshot,
    Outcome,
    Queue,
    RequestFeatures,
    RoutingDecision,
    Shed,
    ShedReason,
)
from decision.engine import DecisionEngine
from tests.integration import rawhttp
from tests.integration.conftest import StartFleet, assert_no_leaks, wait_for

CHAT = "/v1/chat/completions"
MINIMAL = "backends:\n  - {name: x, url: 'http://127.0.0.1:1', models: [m1]}\n"


class RecordingDecider:
    """Round robin underneath; admission scripted per test; records every call."""

    def __init__(self) -> None:
        self._inner = DecisionEngine.from_config(
            load_config_text(MINIMAL), MonotonicClock(), random.Random(0)
        )
        self.verdict: AdmissionDecision = Admit()
        self.ranked: tuple[str, ...] | None = None
        self.calls: list[str] = []
        self.outcomes: list[Outcome] = []
        self.features: list[RequestFeatures] = []
        self.queued = []

    def admit(self, features: RequestFeatures, snapshot: FleetSnapshot) -> AdmissionDecision:
        self.calls.append("admit")
        self.features.append(features)
        return self.verdict

    # The waiting room, scripted: queued ids wait until the test sets ``open_queue``.
    queued: list[str]
    open_queue = False

    def enqueue(self, features: RequestFeatures, decision: Queue) -> EnqueueResult:
        self.calls.append("enqueue")
        self.queued.append(features.request_id)
        return EnqueueResult(None)

    def pop_dispatchable(self, snapshot: FleetSnapshot) -> str | None:
        if self.open_queue and self.queued:
            return self.queued.pop(0)
        return None

    def leave_queue(self, request_id: str) -> bool:
        if request_id in self.queued:
            self.queued.remove(request_id)
            self.calls.append("leave_queue")
            return True
        return False

    def retry_after_s(self, features: RequestFeatures) -> float:
        return 4.0

    def route(self, features: RequestFeatures, snapshot: FleetSnapshot) -> RoutingDecision:
        self.calls.append("route")
        if self.ranked is not None:
            return RoutingDecision(
                ranked=self.ranked, policy="scripted", predicted_output_tokens=40.0, reason="scripted"
            )
        return self._inner.route(features, snapshot)

    def on_routed(self, features: RequestFeatures, decision: RoutingDecision, backend_id: BackendId) -> None:
        self.calls.append(f"on_routed:{backend_id}")

    def observe(self, outcome: Outcome) -> None:
        self.calls.append("observe")
        self.outcomes.append(outcome)


async def _post(url: str, body: dict, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body, headers=headers) as resp:
        raw = await resp.read()
        parsed = orjson.loads(raw) if resp.content_type == "application/json" else {"raw": raw}
        return resp.status, parsed, dict(resp.headers)


async def test_success_path_calls_in_order_with_features_from_headers(start_fleet: StartFleet) -> None:
    decider = RecordingDecider()
    proxy, backends = await start_fleet(2, decider=decider)
    headers = {"x-sluice-tenant": "acme", "x-sluice-priority": "critical", "x-session-id": "s-1"}
    body = {"model": "m1", "messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 9}
    status, _, _ = await _post(proxy.url + CHAT, body, headers)
    assert status == 200
    assert decider.calls == ["admit", "route", "on_routed:b0", "observe"]
    features = decider.features[0]
    assert (features.tenant, features.priority, features.session_key) == ("acme", "critical", "s-1")
    assert (features.max_tokens, features.route, features.model) == (9, "default", "m1")
    outcome = decider.outcomes[0]
    assert (outcome.status_code, outcome.backend_id, outcome.output_tokens) == (200, "b0", 3)
    assert outcome.prompt_tokens == 7  # the backend's usage wins over the estimate
    assert outcome.ttft_ms is not None
    assert not outcome.cancelled
    await assert_no_leaks(proxy, backends)


async def test_retry_calls_on_routed_again_and_accounts_predicted_tokens(start_fleet: StartFleet) -> None:
    decider = RecordingDecider()
    decider.ranked = ("b1", "b0")
    proxy, backends = await start_fleet(2, decider=decider)
    backends[1].mode = "status:503"
    status, _, headers = await _post(proxy.url + CHAT, {"model": "m1", "messages": []})
    assert (status, headers["x-sluice-backend"], headers["x-sluice-policy"]) == (200, "b0", "scripted")
    assert decider.calls == ["admit", "route", "on_routed:b1", "on_routed:b0", "observe"]
    assert decider.outcomes[0].predicted_output_tokens == 40.0
    views = proxy.ctx.fleet.snapshot().by_id()
    assert views["b0"].in_flight_predicted_decode_tokens == 0.0
    await assert_no_leaks(proxy, backends)


async def test_shed_and_queue_become_429_with_retry_after(start_fleet: StartFleet) -> None:
    decider = RecordingDecider()
    proxy, backends = await start_fleet(1, decider=decider)
    decider.verdict = Shed(ShedReason.SLO_INFEASIBLE, retry_after_s=2.5)
    status, body, headers = await _post(proxy.url + CHAT, {"model": "m1", "messages": []})
    assert (status, body["error"]["code"], headers["Retry-After"]) == (429, "overloaded", "3")
    assert headers["x-sluice-shed-reason"] == "slo_infeasible"
    decider.verdict = Queue(deadline_s=MonotonicClock().now_s() + 0.3)
    status, body, headers = await _post(proxy.url + CHAT, {"model": "m1", "messages": []})
    assert (status, body["error"]["code"], headers["Retry-After"]) == (429, "queue_timeout", "4")
    assert headers["x-sluice-shed-reason"] == "queue_timeout"
    assert decider.calls[-3:] == ["enqueue", "leave_queue", "observe"]
    assert [o.status_code for o in decider.outcomes] == [429, 429]
    assert [o.backend_id for o in decider.outcomes] == [None, None]
    assert backends[0].requests == []
    await assert_no_leaks(proxy, backends)


async def test_queued_request_proceeds_when_the_decider_dispatches_it(start_fleet: StartFleet) -> None:
    decider = RecordingDecider()
    proxy, backends = await start_fleet(1, decider=decider)
    decider.verdict = Queue(deadline_s=MonotonicClock().now_s() + 60.0)
    task = asyncio.create_task(_post(proxy.url + CHAT, {"model": "m1", "messages": []}))
    await wait_for(lambda: len(decider.queued) == 1)
    assert backends[0].requests == []
    decider.open_queue = True  # the periodic pump now finds it dispatchable
    status, _, _ = await task
    assert status == 200
    assert decider.calls == ["admit", "enqueue", "route", "on_routed:b0", "observe"]
    await assert_no_leaks(proxy, backends)


async def test_client_leaving_the_queue_is_removed_at_once(start_fleet: StartFleet) -> None:
    decider = RecordingDecider()
    proxy, backends = await start_fleet(1, decider=decider)
    decider.verdict = Queue(deadline_s=MonotonicClock().now_s() + 60.0)
    task = asyncio.create_task(_post(proxy.url + CHAT, {"model": "m1", "messages": []}))
    await wait_for(lambda: len(decider.queued) == 1)
    task.cancel()
    await wait_for(lambda: "observe" in decider.calls)
    assert decider.queued == []
    assert decider.calls == ["admit", "enqueue", "leave_queue", "observe"]
    assert decider.outcomes[0].cancelled
    await assert_no_leaks(proxy, backends)


async def test_empty_ranking_is_503_with_reason_and_observed(start_fleet: StartFleet) -> None:
    decider = RecordingDecider()
    decider.ranked = ()
    proxy, backends = await start_fleet(1, decider=decider)
    status, body, _ = await _post(proxy.url + CHAT, {"model": "m1", "messages": []})
    assert (status, body["error"]["code"], body["error"]["message"]) == (
        503,
        "no_healthy_backend",
        "scripted",
    )
    assert decider.calls == ["admit", "route", "observe"]
    assert decider.outcomes[0].error_code == "no_healthy_backend"
    await assert_no_leaks(proxy, backends)


async def test_cancelled_request_is_observed_as_cancelled(start_fleet: StartFleet) -> None:
    decider = RecordingDecider()
    proxy, backends = await start_fleet(1, decider=decider)
    body = b'{"model": "m1", "messages": [], "stream": true}'
    _, writer = await rawhttp.connect(proxy.url)
    head = {"Content-Type": "application/json", "Content-Length": str(len(body)), "x-fake-mode": "hold"}
    writer.write(rawhttp.request_head(CHAT, head) + body)
    await writer.drain()
    await backends[0].wait_until(backends[0].received(1))
    await rawhttp.close(writer)
    await backends[0].wait_until(lambda: backends[0].cancelled == 1)
    await assert_no_leaks(proxy, backends)
    assert decider.calls == ["admit", "route", "on_routed:b0", "observe"]
    outcome = decider.outcomes[0]
    assert (outcome.cancelled, outcome.status_code, outcome.ttft_ms) == (True, 499, None)


async def test_bad_request_never_reaches_the_decider(start_fleet: StartFleet) -> None:
    decider = RecordingDecider()
    proxy, backends = await start_fleet(1, decider=decider)
    status, _, _ = await _post(proxy.url + CHAT, {"model": "nope", "messages": []})
    assert status == 404
    assert decider.calls == []
    await assert_no_leaks(proxy, backends)


async def test_max_in_flight_sheds_overload(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1, extra="limits: {max_in_flight: 1}\n")
    body = b'{"model": "m1", "messages": []}'
    _, writer = await rawhttp.connect(proxy.url)
    head = {"Content-Type": "application/json", "Content-Length": str(len(body)), "x-fake-mode": "hold"}
    writer.write(rawhttp.request_head(CHAT, head) + body)
    await writer.drain()
    await backends[0].wait_until(backends[0].received(1))
    status, err, headers = await _post(proxy.url + CHAT, {"model": "m1", "messages": []})
    assert (status, err["error"]["code"], headers["Retry-After"]) == (429, "overloaded", "1")
    backends[0].release.set()
    await rawhttp.close(writer)
    await assert_no_leaks(proxy, backends)
