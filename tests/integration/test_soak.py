"""A bounded burst of mixed requests, failures and client cancellations: every count returns to zero."""

from __future__ import annotations

import asyncio
import random

import aiohttp

from tests.integration.conftest import StartFleet, assert_no_leaks, wait_for

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
    # Concurrency limits off: the 503s in the mix would (rightly) shrink them until the pinned
    # "hold" requests filled every slot; the waiting room has its own soak test below.
    extra = "timeouts: {first_byte_ms: 20000}\nadmission: {concurrency: {algorithm: none}}\n"
    proxy, backends = await start_fleet(3, extra=extra)
    rng = random.Random(7)
    modes = [rng.choice(MODES) for _ in range(150)]
    n_hold = modes.count("hold")

    def held() -> int:
        return sum(r.headers.get("x-fake-mode") == "hold" for b in backends for r in b.requests)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(_one(session, proxy.url, mode, rng)) for mode in modes]
        # Every "hold" request is pinned at a backend; cancel half of them and 40 other clients.
        await wait_for(lambda: held() == n_hold, timeout_s=10)
        hold_tasks = [t for t, m in zip(tasks, modes, strict=True) if m == "hold"]
        others = [t for t, m in zip(tasks, modes, strict=True) if m != "hold"]
        cancelled_holds = hold_tasks[: len(hold_tasks) // 2]
        for task in cancelled_holds + rng.sample(others, 40):
            task.cancel()
        await wait_for(lambda: sum(b.cancelled for b in backends) >= len(cancelled_holds))
        for b in backends:
            b.release.set()  # the remaining held requests answer now
        results = await asyncio.gather(*tasks, return_exceptions=True)
    statuses = [r for r in results if isinstance(r, int)]
    assert set(statuses) <= {200, 500, 502, 503}
    assert statuses.count(200) > 20
    # Every response that was not cancelled by its client ended cleanly, failed streams included.
    unexpected = [
        r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
    ]
    assert not unexpected
    await assert_no_leaks(proxy, backends, timeout_s=10)
