"""Retries before the first byte, the retry budget, and passive ejection by the circuit breaker."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from tests.integration.conftest import Proxy, StartFleet, assert_no_leaks

CHAT = "/v1/chat/completions"
BODY = b'{"model": "m1", "messages": [], "max_tokens": 4}'


async def _chat(proxy: Proxy, stream: bool = False) -> tuple[int, dict, str | None]:
    body = BODY if not stream else b'{"model": "m1", "messages": [], "stream": true}'
    async with (
        aiohttp.ClientSession() as session,
        session.post(proxy.url + CHAT, data=body, headers={"Content-Type": "application/json"}) as resp,
    ):
        raw = await resp.read()
        parsed = orjson.loads(raw) if not stream else {"raw": raw.decode()}
        return resp.status, parsed, resp.headers.get("x-sluice-backend")


def _metric(proxy: Proxy, name: str, **labels: str) -> float:
    text = proxy.ctx.metrics.render().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("failure", ["status:503", "status:502", "status:429", "refuse"])
async def test_retry_moves_to_next_backend(start_fleet: StartFleet, failure: str) -> None:
    proxy, backends = await start_fleet(2)
    backends[0].mode = failure
    status, body, backend = await _chat(proxy)
    assert status == 200
    assert backend == "b1"
    assert body["choices"][0]["message"]["content"] == "hello from b1"
    assert len(backends[0].requests) == 1
    assert len(backends[1].requests) == 1
    reason = "connect_error" if failure == "refuse" else failure.replace(":", "_")
    assert _metric(proxy, "sluice_retries_total", reason=reason) == 1
    await assert_no_leaks(proxy, backends)


async def test_retries_stop_after_two_and_relay_last_answer(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(4)
    for b in backends:
        b.mode = "status:503"
    status, body, backend = await _chat(proxy)
    assert status == 503
    assert body["error"]["message"] == "fake 503"  # the backend's answer, unchanged
    assert sum(len(b.requests) for b in backends) == 3  # first try + 2 retries
    assert backend == "b2"
    await assert_no_leaks(proxy, backends)


async def test_streaming_request_is_retried_before_first_byte(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(2)
    backends[0].mode = "status:503"
    status, body, backend = await _chat(proxy, stream=True)
    assert (status, backend) == (200, "b1")
    assert body["raw"].endswith("data: [DONE]\n\n")
    await assert_no_leaks(proxy, backends)


async def test_no_retry_on_500_timeout_or_mid_stream(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(2, extra="timeouts: {first_byte_ms: 200}\n")
    for mode, want in (("status:500", 500), ("never", 504)):
        backends[0].mode = backends[1].mode = mode
        status, _, _ = await _chat(proxy)
        assert status == want
    backends[0].mode = backends[1].mode = "close_mid_stream"
    status, body, _ = await _chat(proxy, stream=True)
    assert status == 200
    assert "upstream_failed_mid_stream" in body["raw"]
    assert sum(len(b.requests) for b in backends) == 3  # one attempt each
    assert _metric(proxy, "sluice_retries_total") == 0
    await assert_no_leaks(proxy, backends)


async def test_retry_budget_exhausted_relays_failure(start_fleet: StartFleet) -> None:
    extra = "retries: {budget_ratio: 0.0, budget_min_retries: 1}\n"
    proxy, backends = await start_fleet(2, extra=extra)
    backends[0].mode = "status:503"
    backends[1].mode = "status:503"
    status, _, _ = await _chat(proxy)  # spends the single retry
    assert status == 503
    assert len(backends[0].requests) + len(backends[1].requests) == 2
    status, _, _ = await _chat(proxy)  # budget empty: no retry
    assert status == 503
    assert len(backends[0].requests) + len(backends[1].requests) == 3
    assert _metric(proxy, "sluice_retries_denied_total", reason="budget") == 1
    await assert_no_leaks(proxy, backends)


async def test_circuit_breaker_ejects_failing_backend(start_fleet: StartFleet) -> None:
    extra = "circuit_breaker: {consecutive_failures: 2, open_s: 3600}\nretries: {max_per_request: 0}\n"
    proxy, backends = await start_fleet(2, extra=extra)
    backends[0].mode = "status:500"
    answers = [await _chat(proxy) for _ in range(6)]
    # b0 fails twice (round robin: requests 1 and 3), then it is ejected and b1 takes everything.
    assert [a[2] for a in answers] == ["b0", "b1", "b0", "b1", "b1", "b1"]
    assert [a[0] for a in answers] == [500, 200, 500, 200, 200, 200]
    assert _metric(proxy, "sluice_backend_health", backend="b0", state="down") == 1
    await assert_no_leaks(proxy, backends)
