"""A repeated long prompt prefix, routed by Sluice, reaches the server that cached it: >= 10x sooner.

Routing: the prefix-aware ``sglang_cache_aware`` policy (the conversation's ``x-session-id`` is
sent too, as a client would). The TTFT ratio is
measured within this run (medians over ``ROUNDS`` rounds, cold vs. warm on the same server); the
exact evidence of the cache hit is the server's own ``usage.prompt_tokens_details.cached_tokens``.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from core import headers
from tests.llamacpp.conftest import SluiceFactory
from tests.llamacpp.helpers import MODEL_ALIAS

pytestmark = pytest.mark.llamacpp
ROUNDS = 3
SENTENCE = "The cache keeps the prompt prefix, so the next request with the same prefix starts much faster. "
REPEAT = 50  # ~1,150 prompt tokens: prefill dominates a cold TTFT (bench/llamacpp_prefix.py)
AFFINITY_POLICY = "sglang_cache_aware"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:
        yield client


async def timed_stream(
    session: aiohttp.ClientSession, url: str, prompt: str, session_id: str
) -> tuple[float, str, dict[str, Any]]:
    """(ms to the first SSE event, the backend Sluice chose, the final usage)."""
    body = {
        "model": MODEL_ALIAS,
        "prompt": prompt,
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started_s = time.perf_counter()
    first_ms: float | None = None
    usage: dict[str, Any] = {}
    async with session.post(
        url + "/v1/completions", json=body, headers={headers.SESSION: session_id}
    ) as resp:
        assert resp.status == 200, await resp.text()
        async for line in resp.content:
            if line.startswith(b"data: ") and first_ms is None:
                first_ms = (time.perf_counter() - started_s) * 1e3
            if line.startswith(b"data: {") and b'"usage"' in line:
                usage = orjson.loads(line[6:])["usage"]
    assert first_ms is not None
    return first_ms, resp.headers[headers.BACKEND], usage


async def test_repeated_prefix_goes_to_the_server_that_cached_it_and_starts_10x_sooner(
    sluice_with: SluiceFactory, session: aiohttp.ClientSession
) -> None:
    sluice = await sluice_with(AFFINITY_POLICY)
    cold_ms, warm_ms, homes = [], [], []
    for _ in range(ROUNDS):
        conversation = uuid.uuid4().hex
        prefix = f"Run {conversation}. " + SENTENCE * REPEAT
        cold, home, cold_usage = await timed_stream(session, sluice.url, prefix + "First?", conversation)
        warm, again, warm_usage = await timed_stream(session, sluice.url, prefix + "Another?", conversation)
        assert again == home  # routed to the server that holds the prefix
        assert cached_frac(cold_usage) < 0.05
        assert cached_frac(warm_usage) >= 0.95
        cold_ms.append(cold)
        warm_ms.append(warm)
        homes.append(home)
    ratio = statistics.median(cold_ms) / statistics.median(warm_ms)
    print(f"{AFFINITY_POLICY}: cold {cold_ms} ms, warm {warm_ms} ms, ratio {ratio:.1f}, servers {homes}")
    assert ratio >= 10, (cold_ms, warm_ms)


async def test_without_affinity_the_repeat_lands_cold_on_the_other_server(
    sluice_with: SluiceFactory, session: aiohttp.ClientSession
) -> None:
    """The control: round robin sends the repeat to the server that never saw the prefix."""
    sluice = await sluice_with("round_robin")
    conversation = uuid.uuid4().hex
    prefix = f"Run {conversation}. " + SENTENCE * REPEAT
    _, first, _ = await timed_stream(session, sluice.url, prefix + "First?", conversation)
    _, second, usage = await timed_stream(session, sluice.url, prefix + "Another?", conversation)
    assert (first, second) == ("a", "b")
    assert cached_frac(usage) < 0.05


def cached_frac(usage: dict[str, Any]) -> float:
    return float(usage["prompt_tokens_details"]["cached_tokens"]) / float(usage["prompt_tokens"])
