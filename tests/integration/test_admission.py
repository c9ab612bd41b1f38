"""Admission control through the proxy: waiting room order, eviction, deadlines, budgets, early rejection.

One fake backend with a fixed concurrency limit of 2; two requests pinned at
the backend ("hold") fill it, so later requests queue in Sluice's waiting room
where the test can observe and release them. No sleeps: conditions are waited
for with deadlines.
"""

from __future__ import annotations

import asyncio
import math

import aiohttp
import orjson

from core.tokens import estimate_tokens, render_chat_prompt
from decision.engine import DecisionEngine
from tests.fakes.backend import FakeBackend
from tests.integration.conftest import Proxy, StartFleet, assert_no_leaks, wait_for

CHAT = "/v1/chat/completions"
FIXED_2 = "admission: {concurrency: {algorithm: fixed, initial: 2}}\n"


async def _post(
    session: aiohttp.ClientSession, proxy: Proxy, headers: dict[str, str], tag: str = ""
) -> tuple[int, dict[str, object], dict[str, str]]:
    body = {"model": "m1", "messages": [{"role": "user", "content": tag or "hi"}]}
    async with session.post(proxy.url + CHAT, json=body, headers=headers) as resp:
        raw = await resp.read()
        return resp.status, orjson.loads(raw), dict(resp.headers)


def _engine(proxy: Proxy) -> DecisionEngine:
    decider = proxy.ctx.decider
    assert isinstance(decider, DecisionEngine)
    return decider


async def _fill_backend(
    session: aiohttp.ClientSession, proxy: Proxy, backend: FakeBackend
) -> list[asyncio.Task]:
    already = len(backend.requests)
    holds = [asyncio.create_task(_post(session, proxy, {"x-fake-mode": "hold"})) for _ in range(2)]
    await backend.wait_until(backend.received(already + 2))
    return holds


async def test_queued_requests_dispatch_most_important_class_first(start_fleet: StartFleet) -> None:
    proxy, (backend,) = await start_fleet(1, extra=FIXED_2)
    engine = _engine(proxy)
    async with aiohttp.ClientSession() as session:
        holds = await _fill_backend(session, proxy, backend)
        queued = []
        for cls in ("sheddable", "standard", "critical", "standard"):
            queued.append(asyncio.create_task(_post(session, proxy, {"x-sluice-priority": cls}, tag=cls)))
            expected = len(queued)
            await wait_for(lambda: engine.admission.queued() == expected)  # noqa: B023
        assert engine.admission.queue_depths() == {"critical": 1, "standard": 2, "sheddable": 1}
        backend.release.set()
        results = await asyncio.gather(*holds, *queued)
    assert all(status == 200 for status, _, _ in results)
    order = [orjson.loads(r.body)["messages"][0]["content"] for r in backend.requests[2:]]
    assert order == ["critical", "standard", "standard", "sheddable"]
    await assert_no_leaks(proxy, [backend])


async def test_full_room_evicts_sheddable_for_critical(start_fleet: StartFleet) -> None:
    extra = "admission: {concurrency: {algorithm: fixed, initial: 2}, waiting_room: {max_requests: 1}}\n"
    proxy, (backend,) = await start_fleet(1, extra=extra)
    engine = _engine(proxy)
    async with aiohttp.ClientSession() as session:
        holds = await _fill_backend(session, proxy, backend)
        sheddable = asyncio.create_task(_post(session, proxy, {"x-sluice-priority": "sheddable"}))
        await wait_for(lambda: engine.admission.queued() == 1)
        another_sheddable = await _post(session, proxy, {"x-sluice-priority": "sheddable"})
        critical = asyncio.create_task(_post(session, proxy, {"x-sluice-priority": "critical"}))
        status, body, headers = await sheddable
        assert (status, body["error"]["code"], headers["x-sluice-shed-reason"]) == (  # type: ignore[index]
            429,
            "overloaded",
            "queue_full",
        )
        assert int(headers["Retry-After"]) >= 1
        backend.release.set()
        assert (await critical)[0] == 200
        await asyncio.gather(*holds)
    assert another_sheddable[0] == 429
    assert another_sheddable[2]["x-sluice-shed-reason"] == "queue_full"
    async with aiohttp.ClientSession() as session, session.get(proxy.url + "/metrics") as resp:
        text = await resp.text()
    assert 'sluice_shed_total{class="sheddable",reason="queue_full",route="default"} 2.0' in text
    assert 'sluice_queue_depth{class="critical"} 0.0' in text
    assert 'sluice_backend_concurrency_limit{backend="b0"} 2.0' in text
    await assert_no_leaks(proxy, [backend])


async def test_queue_deadline_gives_429_with_retry_after(start_fleet: StartFleet) -> None:
    routes = "routes:\n  - name: chat\n    admission: {queue_deadline_ms: {standard: 200}}\n"
    proxy, (backend,) = await start_fleet(1, extra=FIXED_2 + routes)
    async with aiohttp.ClientSession() as session:
        holds = await _fill_backend(session, proxy, backend)
        status, body, headers = await _post(session, proxy, {})
        assert (status, body["error"]["code"]) == (429, "queue_timeout")  # type: ignore[index]
        assert headers["x-sluice-shed-reason"] == "queue_timeout"
        assert int(headers["Retry-After"]) >= 1
        backend.release.set()
        await asyncio.gather(*holds)
    assert _engine(proxy).admission.queued() == 0
    await assert_no_leaks(proxy, [backend])


async def test_client_leaving_the_queue_frees_its_place(start_fleet: StartFleet) -> None:
    proxy, (backend,) = await start_fleet(1, extra=FIXED_2)
    engine = _engine(proxy)
    async with aiohttp.ClientSession() as session:
        holds = await _fill_backend(session, proxy, backend)
        waiting = [asyncio.create_task(_post(session, proxy, {}, tag=f"w{i}")) for i in range(3)]
        await wait_for(lambda: engine.admission.queued() == 3)
        waiting[0].cancel()
        waiting[1].cancel()
        await wait_for(lambda: engine.admission.queued() == 1)
        backend.release.set()
        assert (await waiting[2])[0] == 200
        await asyncio.gather(*holds)
    sent = [orjson.loads(r.body)["messages"][0]["content"] for r in backend.requests]
    assert "w0" not in sent
    assert "w1" not in sent
    await assert_no_leaks(proxy, [backend])


async def test_tenant_budget_refuses_with_the_refill_time(start_fleet: StartFleet) -> None:
    tenants = "tenants:\n  budgets:\n    acme: {tokens_per_s: 1, burst_tokens: 1}\n"
    proxy, (backend,) = await start_fleet(1, extra=tenants)
    async with aiohttp.ClientSession() as session:
        first = await _post(session, proxy, {"x-sluice-tenant": "acme"})
        second = await _post(session, proxy, {"x-sluice-tenant": "acme"})
        other = await _post(session, proxy, {"x-sluice-tenant": "someone-else"})
    assert first[0] == 200
    assert (second[0], second[2]["x-sluice-shed-reason"]) == (429, "tenant_budget")
    # Every request is bigger than this bucket: the first is let through because the bucket is full and
    # charged its prediction,
    # then settled to its real cost: estimated prompt tokens + the output it got. The bucket is short
    # by exactly that real cost, refilled at 1 token/s.
    prompt = estimate_tokens(render_chat_prompt([{"role": "user", "content": "hi"}]))
    real_cost = prompt + first[1]["usage"]["completion_tokens"]  # type: ignore[index]
    assert int(second[2]["Retry-After"]) in (math.ceil(real_cost), math.ceil(real_cost) + 1)
    assert other[0] == 200
    await assert_no_leaks(proxy, [backend])


async def test_api_key_maps_tenant_and_class_and_unknown_class_falls_back(start_fleet: StartFleet) -> None:
    tenants = (
        "tenants:\n"
        "  api_keys:\n    sk-batch: {tenant: batch-team, priority: sheddable}\n"
        "  budgets:\n    batch-team: {max_priority: standard}\n"
    )
    proxy, (backend,) = await start_fleet(1, extra=FIXED_2 + tenants)
    engine = _engine(proxy)
    async with aiohttp.ClientSession() as session:
        holds = await _fill_backend(session, proxy, backend)
        keyed = asyncio.create_task(_post(session, proxy, {"Authorization": "Bearer sk-batch"}))
        await wait_for(lambda: engine.admission.queue_depths()["sheddable"] == 1)
        claimed = asyncio.create_task(
            _post(session, proxy, {"Authorization": "Bearer sk-batch", "x-sluice-priority": "critical"})
        )
        await wait_for(lambda: engine.admission.queue_depths()["standard"] == 1)  # capped at standard
        unknown = asyncio.create_task(_post(session, proxy, {"x-sluice-priority": "platinum"}))
        await wait_for(lambda: engine.admission.queue_depths()["standard"] == 2)  # route default
        backend.release.set()
        results = await asyncio.gather(*holds, keyed, claimed, unknown)
    assert [r[0] for r in results] == [200] * 5
    await assert_no_leaks(proxy, [backend])


async def test_hopeless_wait_is_refused_now_not_timed_out_later(start_fleet: StartFleet) -> None:
    routes = "routes:\n  - name: chat\n    slo: {ttft_ms: 50}\n"
    proxy, (backend,) = await start_fleet(1, extra=FIXED_2 + routes)
    async with aiohttp.ClientSession() as session:
        for _ in range(3):  # a few completions give the fleet a measured service rate
            assert (await _post(session, proxy, {}))[0] == 200
        holds = await _fill_backend(session, proxy, backend)
        status, body, headers = await _post(session, proxy, {})
        backend.release.set()
        await asyncio.gather(*holds)
    # 3 completions over a 10 s decay window is ~0.3 req/s: a wait of seconds against a 50 ms SLO.
    assert (status, headers["x-sluice-shed-reason"]) == (429, "slo_infeasible")
    assert body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    await assert_no_leaks(proxy, [backend])


async def _post_body(
    session: aiohttp.ClientSession, proxy: Proxy, body: dict[str, object], headers: dict[str, str]
) -> tuple[int, dict[str, object], dict[str, str]]:
    async with session.post(proxy.url + CHAT, json=body, headers=headers) as resp:
        return resp.status, orjson.loads(await resp.read()), dict(resp.headers)


async def test_zero_budget_and_unknown_tenants_get_the_default_budget_refused_at_once(
    start_fleet: StartFleet,
) -> None:
    # Every unlisted tenant gets the default budget, here zero: refused before any backend is asked.
    tenants = "tenants:\n  default: {tokens_per_s: 0}\n  budgets:\n    acme: {}\n"
    proxy, (backend,) = await start_fleet(1, extra=tenants)
    async with aiohttp.ClientSession() as session:
        stranger = await _post(session, proxy, {"x-sluice-tenant": "never-configured"})
        nameless = await _post(session, proxy, {})  # no tenant header: tenant "default", same budget
        acme = await _post(session, proxy, {"x-sluice-tenant": "acme"})
    for status, body, headers in (stranger, nameless):
        assert (status, headers["x-sluice-shed-reason"]) == (429, "tenant_budget")
        assert body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert int(headers["Retry-After"]) >= 1
    assert acme[0] == 200
    assert len(backend.requests) == 1  # only acme's request reached the backend
    await assert_no_leaks(proxy, [backend])


async def test_absurd_max_tokens_is_charged_the_predicted_output_not_the_cap(start_fleet: StartFleet) -> None:
    # A bucket of 3,000 tokens refilling at 1 token/s: three requests capped at a billion tokens each
    # all pass, because each is charged its prompt + predicted output (a few hundred tokens).
    tenants = "tenants:\n  budgets:\n    acme: {tokens_per_s: 1, burst_tokens: 3000}\n"
    proxy, (backend,) = await start_fleet(1, extra=tenants)
    body: dict[str, object] = {
        "model": "m1",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1_000_000_000,
    }
    async with aiohttp.ClientSession() as session:
        results = [await _post_body(session, proxy, body, {"x-sluice-tenant": "acme"}) for _ in range(3)]
    assert [r[0] for r in results] == [200, 200, 200]
    await assert_no_leaks(proxy, [backend])


async def test_a_hammering_client_is_refused_every_time_without_reaching_a_backend(
    start_fleet: StartFleet,
) -> None:
    # A client that ignores Retry-After and hammers: every request is refused, none is forwarded,
    # nothing is left in flight or queued.
    tenants = "tenants:\n  budgets:\n    hammer: {tokens_per_s: 0}\n"
    proxy, (backend,) = await start_fleet(1, extra=tenants)
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(_post(session, proxy, {"x-sluice-tenant": "hammer"}) for _ in range(200))
        )
    assert {(r[0], r[2]["x-sluice-shed-reason"]) for r in results} == {(429, "tenant_budget")}
    assert len(backend.requests) == 0
    await assert_no_leaks(proxy, [backend])
