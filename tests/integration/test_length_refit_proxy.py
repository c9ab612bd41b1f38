"""The background length refit in the proxy: outcomes feed it, a worker process fits, metrics show it."""

from __future__ import annotations

import asyncio

import aiohttp

from router.app import REFITTER
from tests.integration.conftest import StartFleet

REFIT = "predictors: {refit: {enabled: true, every_outcomes: 20, holdout: 10, reservoir_size: 50}}\n"


async def test_outcomes_feed_a_refit_in_a_worker_process(start_fleet: StartFleet) -> None:
    proxy, _ = await start_fleet(1, extra=REFIT)
    refitter = proxy.app[REFITTER]
    async with aiohttp.ClientSession() as session:
        for i in range(40):
            long = i % 2 == 0
            body = {
                "model": "m1",
                "messages": [
                    {"role": "user", "content": f"{'write a long essay on' if long else 'say yes to'} tea"}
                ],
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            headers = {"x-fake-chunks": "40" if long else "2"}
            async with session.post(proxy.url + "/v1/chat/completions", json=body, headers=headers) as resp:
                assert resp.status == 200
                await resp.read()
        assert len(refitter.reservoir) == 40
        async with asyncio.timeout(60):  # the worker process starts (spawn) and imports scikit-learn
            while (future := refitter.in_flight) is not None:
                await asyncio.wait([future])  # the refitter's done-callback, added first, runs first
        assert refitter.stats.failed == 0, refitter.stats.last_reason
        async with session.get(proxy.url + "/metrics") as resp:
            text = await resp.text()
    stats = refitter.stats
    assert stats.refits >= 1
    assert stats.swaps + stats.rejected == stats.refits >= 1
    assert f'sluice_length_refits_total{{result="swapped"}} {float(stats.swaps)}' in text
    assert f'sluice_length_refits_total{{result="rejected"}} {float(stats.rejected)}' in text
    assert "sluice_length_refit_duration_seconds" in text
