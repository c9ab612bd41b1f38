"""A bounded burst of mixed requests, failures and client cancellations: every count returns to zero."""

from __future__ import annotations

import asyncio
import random

import aiohttp

from tests.integration.conftest import StartFleet, assert_no_leaks

CHAT = "/v1/chat/completions"
MODES = ["json", "stream", "close_mid_stream", "status:503", "status:500", "garbage", "refuse", "hold"]


async def _one(session: aiohttp.ClientSession, url: str, mode: str, rng: random.Random) -> int | None:
    stream = mode in ("stream", "close_mid_stream", "hold") or rng.random() < 0.3
    headers = {"x-fake-mode": mode, "x-fake-chunks": str(rng.randint(1, 30))}
    body = {
        "model": "m1",
        "messages": [{"role": "user", "content": "x" * rng.randint(0, 500)}],
        "stream": stream,
    }
    async with session.post(url + CHAT, json=body, headers=headers) as resp:
        if rng.random() < 0.5:
            await resp.content.readany()  # read a little, maybe stop here
        await resp.read()
        return resp.status


async def test_mixed_burst_with_cancellations_leaks_nothing(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(3, extra="timeouts: {first_byte_ms: 2000}\n")
    rng = random.Random(7)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(_one(session, proxy.url, rng.choice(MODES), rng)) for _ in range(150)]
        # Let every backend see some traffic, then cancel a third of the clients wherever they are.
        await asyncio.gather(*(b.wait_until(lambda b=b: len(b.requests) >= 5) for b in backends))
        for task in rng.sample(tasks, 50):
            task.cancel()
        for b in backends:
            b.release.set()  # "hold" requests still pending answer now
        results = await asyncio.gather(*tasks, return_exceptions=True)
    statuses = [r for r in results if isinstance(r, int)]
    assert statuses, results
    assert set(statuses) <= {200, 500, 502, 503}
    unexpected = [
        r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
    ]
    # A client reading a stream that the proxy ended with an error event still gets a clean end.
    assert not [r for r in unexpected if not isinstance(r, aiohttp.ClientError)], unexpected
    await assert_no_leaks(proxy, backends, timeout_s=10)
    assert sum(b.cancelled for b in backends) > 0  # some cancellations reached the backends
    text = proxy.ctx.metrics.render().decode()
    assert "sluice_client_disconnects_total" in text
