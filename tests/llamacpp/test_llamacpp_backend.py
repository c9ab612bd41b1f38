"""Directly against two real llama.cpp servers: the model, the llama.cpp adapter, queueing, cancellation.

No sleeps as synchronisation: every wait is ``poll_until`` on a condition read
from the server itself (``/slots``, ``/metrics``), with a deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from core.types import EngineMetrics
from loadgen.llamacpp.harness import LlamaCppServer
from state.engine_metrics import EngineMetricsCollector, ScrapeTarget
from tests.llamacpp.helpers import (
    SLOTS,
    busy_slots,
    completion,
    open_stream,
    poll_until,
    raw_metrics,
    read_events,
    salt,
    slots,
    stream_until_cancelled,
)

pytestmark = pytest.mark.llamacpp


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:
        yield client


@pytest.fixture
async def collector(llamacpp_servers: list[LlamaCppServer]) -> AsyncIterator[EngineMetricsCollector]:
    targets = [ScrapeTarget(f"b{i}", s.url + "/metrics", "auto") for i, s in enumerate(llamacpp_servers)]
    scraper = EngineMetricsCollector(targets, lambda _backend, _metrics: None, timeout_s=5.0)
    try:
        yield scraper
    finally:
        await scraper.stop()


async def adapter_view(collector: EngineMetricsCollector, index: int) -> EngineMetrics:
    metrics = await collector.scrape(collector.targets[index])
    assert metrics is not None, collector.status[collector.targets[index].backend_id]
    return metrics


async def test_model_writes_printable_text_to_max_tokens_on_both_endpoints(
    llamacpp_servers: list[LlamaCppServer], session: aiohttp.ClientSession
) -> None:
    base = llamacpp_servers[0].url
    data = await completion(session, base, salt() + "The quick brown fox", max_tokens=48)
    choice = data["choices"][0]
    assert (choice["finish_reason"], data["usage"]["completion_tokens"]) == ("length", 48)
    assert choice["text"] and all(0x20 <= ord(c) <= 0x7E for c in choice["text"])
    chat = {"model": "tiny-llama", "messages": [{"role": "user", "content": salt() + "hi"}], "max_tokens": 16}
    async with session.post(base + "/v1/chat/completions", json=chat) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 16


async def test_llamacpp_adapter_matches_the_servers_metrics_and_usage(
    llamacpp_servers: list[LlamaCppServer], session: aiohttp.ClientSession, collector: EngineMetricsCollector
) -> None:
    base = llamacpp_servers[1].url
    before = await adapter_view(collector, 1)
    prefix = (
        salt() + "The cache keeps the prompt prefix, so the next request with the same prefix is fast. " * 4
    )
    first = await completion(session, base, prefix, max_tokens=8)
    second = await completion(session, base, prefix + "And then?", max_tokens=8)
    after = await adapter_view(collector, 1)
    raw = await raw_metrics(session, base)

    assert after.engine == "llamacpp"
    # Same numbers as the server's own /metrics (read with prometheus_client's parser) ...
    assert after.prefix_cache_hits_tokens_total == raw["llamacpp:prompt_tokens_cached_total"]
    assert after.prefix_cache_queries_tokens_total == (
        raw["llamacpp:prompt_tokens_total"] + raw["llamacpp:prompt_tokens_cached_total"]
    )
    assert (after.running, after.waiting) == (raw["llamacpp:requests_processing"], 0)
    assert after.running == await busy_slots(session, base) == 0
    # ... and the deltas are exactly what the two responses reported.
    assert before.prefix_cache_queries_tokens_total is not None
    assert before.prefix_cache_hits_tokens_total is not None
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0
    assert after.prefix_cache_hits_tokens_total - before.prefix_cache_hits_tokens_total == cached
    prompt_tokens = first["usage"]["prompt_tokens"] + second["usage"]["prompt_tokens"]
    assert after.prefix_cache_queries_tokens_total - before.prefix_cache_queries_tokens_total == prompt_tokens


async def test_auto_detection_finds_llamacpp_on_both_servers(collector: EngineMetricsCollector) -> None:
    results = await collector.poll_once()
    assert {backend: m.engine if m else None for backend, m in results.items()} == {
        "b0": "llamacpp",
        "b1": "llamacpp",
    }


async def test_more_requests_than_slots_shows_as_deferred_in_the_adapter(
    llamacpp_servers: list[LlamaCppServer], session: aiohttp.ClientSession, collector: EngineMetricsCollector
) -> None:
    base = llamacpp_servers[0].url
    n_requests = SLOTS + 2
    clients = [
        asyncio.create_task(stream_until_cancelled(session, base, salt() + "Tell me a long story.", 1800))
        for _ in range(n_requests)
    ]
    try:
        view = await poll_until(
            lambda: adapter_view(collector, 0),
            lambda m: m.waiting == n_requests - SLOTS,
            "2 deferred requests",
        )
        assert view.running == SLOTS
        assert await busy_slots(session, base) == SLOTS
        raw = await raw_metrics(session, base)
        assert raw["llamacpp:requests_deferred"] == n_requests - SLOTS
        assert not any(client.done() for client in clients)
    finally:
        for client in clients:
            client.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    # Disconnecting every client cancels running and deferred work alike.
    idle = await poll_until(
        lambda: adapter_view(collector, 0), lambda m: (m.running, m.waiting) == (0, 0), "server idle again"
    )
    assert idle.running == 0


async def test_client_disconnect_stops_generation_on_the_server(
    llamacpp_servers: list[LlamaCppServer], session: aiohttp.ClientSession
) -> None:
    base = llamacpp_servers[1].url
    max_tokens = 1900
    predicted_before = (await raw_metrics(session, base))["llamacpp:tokens_predicted_total"]
    stream = await open_stream(session, base, salt() + "Write until you are stopped.", max_tokens)
    try:
        await read_events(stream, 10)
        assert await busy_slots(session, base) == 1
    finally:
        stream.close()
    await poll_until(lambda: busy_slots(session, base), lambda n: n == 0, "every slot idle after disconnect")
    first = await raw_metrics(session, base)
    second = await raw_metrics(session, base)
    generated = first["llamacpp:tokens_predicted_total"] - predicted_before
    assert second["llamacpp:tokens_predicted_total"] == first["llamacpp:tokens_predicted_total"]
    assert 10 <= generated < max_tokens // 2, generated
    assert first["llamacpp:requests_processing"] == 0
    assert all(not slot["is_processing"] for slot in await slots(session, base))
