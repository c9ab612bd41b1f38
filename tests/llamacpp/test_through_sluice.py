"""Through Sluice to two real llama.cpp servers: the openai client, keep-alive, queueing, disconnects.

Sluice routes round robin here (``a``, ``b``, ``a``, ...), so each test knows where its requests
land. Every wait is a poll on a condition read from the servers (``/slots``, ``/metrics``) or from
Sluice's own state, with a deadline; nothing is timed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from core import headers
from core.types import FleetSnapshot
from state.fleet import FleetState
from tests.llamacpp.helpers import (
    MODEL_ALIAS,
    SLOTS,
    busy_slots,
    poll_until,
    raw_metrics,
    salt,
)
from tests.llamacpp.proxy import BACKEND_NAMES, SluiceProxy

pytestmark = pytest.mark.llamacpp
MAX_TOKENS = 24


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:
        yield client


def chat_args(prompt: str) -> dict[str, Any]:
    return {
        "model": MODEL_ALIAS,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def completion_args(prompt: str) -> dict[str, Any]:
    return {
        "model": MODEL_ALIAS,
        "prompt": prompt,
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def check_chat_stream(chunks: list[Any]) -> None:
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = [c.usage for c in chunks if c.usage is not None]
    assert text and all(0x20 <= ord(ch) <= 0x7E for ch in text), text
    assert finish == ["length"]
    assert len(usage) == 1 and usage[0].completion_tokens == MAX_TOKENS


def check_completion_stream(chunks: list[Any]) -> None:
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = [c.usage for c in chunks if c.usage is not None]
    assert text and all(0x20 <= ord(ch) <= 0x7E for ch in text), text
    assert finish == ["length"]
    assert len(usage) == 1 and usage[0].completion_tokens == MAX_TOKENS


async def test_async_openai_client_streams_chat_and_completions(sluice: SluiceProxy) -> None:
    client = openai.AsyncOpenAI(base_url=sluice.url + "/v1", api_key="unused", max_retries=0)
    served_by = []
    async with client:
        for _ in range(2):  # round robin: each endpoint once on each backend
            raw = await client.chat.completions.with_raw_response.create(**chat_args(salt() + "Hello"))
            served_by.append(raw.headers[headers.BACKEND])
            check_chat_stream([chunk async for chunk in raw.parse()])
            raw_text = await client.completions.with_raw_response.create(**completion_args(salt() + "Once"))
            served_by.append(raw_text.headers[headers.BACKEND])
            check_completion_stream([chunk async for chunk in raw_text.parse()])
    assert served_by == ["a", "b", "a", "b"]


def sync_client_session(base_url: str) -> list[str]:
    """The blocking client, run in a worker thread (the proxy shares the test's event loop)."""
    served_by = []
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(**chat_args(salt() + "Hello"))
        served_by.append(raw.headers[headers.BACKEND])
        check_chat_stream(list(raw.parse()))
        raw_text = client.completions.with_raw_response.create(**completion_args(salt() + "Once"))
        served_by.append(raw_text.headers[headers.BACKEND])
        check_completion_stream(list(raw_text.parse()))
    return served_by


async def test_sync_openai_client_streams_chat_and_completions(sluice: SluiceProxy) -> None:
    assert await asyncio.to_thread(sync_client_session, sluice.url + "/v1") == ["a", "b"]


async def stream_through(session: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int) -> str:
    body = {"model": MODEL_ALIAS, "prompt": prompt, "max_tokens": max_tokens, "stream": True}
    async with session.post(url + "/v1/completions", json=body) as response:
        assert response.status == 200, await response.text()
        data = await response.read()
    assert data.endswith(b"data: [DONE]\n\n")
    return response.headers[headers.BACKEND]


async def test_back_to_back_streams_never_fail_on_a_closed_keep_alive_connection(
    sluice: SluiceProxy, session: aiohttp.ClientSession
) -> None:
    """llama.cpp closes its connection after every stream although it answered ``Keep-Alive``.

    Sequential streams from several clients at once make Sluice reuse connections as fast as it
    can: none may fail, be retried elsewhere or count against a breaker.
    """

    async def one_client(k: int) -> list[str]:
        return [await stream_through(session, sluice.url, f"{salt()}{k}", 2) for _ in range(12)]

    served = [
        b for per_client in await asyncio.gather(*(one_client(k) for k in range(4))) for b in per_client
    ]
    assert sorted(set(served)) == list(BACKEND_NAMES)
    values = await sluice.metrics(session)
    names = {name for name, _ in values}
    assert "sluice_upstream_errors_total" not in names and "sluice_retries_total" not in names
    assert sum(v for (n, _), v in values.items() if n == "sluice_requests_total") == len(served)
    assert all(sluice.ctx.fleet.backend(b).breaker.consecutive_failures == 0 for b in BACKEND_NAMES)
    pool = sluice.ctx.upstream()
    # The pool learnt that these backends close after streams and stopped reusing such connections.
    assert not any(pool.reuses_after_stream(sluice.ctx.origins[b]) for b in BACKEND_NAMES)
    assert pool.stale_resends <= len(BACKEND_NAMES)  # at most one race per backend before that


async def hold_streams(session: aiohttp.ClientSession, url: str, n: int) -> list[asyncio.Task[None]]:
    async def hold() -> None:
        body = {
            "model": MODEL_ALIAS,
            "prompt": salt() + "Tell a long story.",
            "max_tokens": 1800,
            "stream": True,
        }
        async with session.post(url + "/v1/completions", json=body) as response:
            async for _chunk in response.content.iter_any():
                pass

    return [asyncio.create_task(hold()) for _ in range(n)]


async def test_more_requests_than_slots_queue_in_the_engine_and_show_in_sluice(
    sluice: SluiceProxy, session: aiohttp.ClientSession
) -> None:
    per_backend = SLOTS + 2
    clients = await hold_streams(session, sluice.url, per_backend * len(BACKEND_NAMES))
    fleet = sluice.ctx.fleet
    try:
        snapshot = await poll_until(
            lambda: _snapshot(fleet),
            lambda s: all(v.engine_waiting == 2 and v.engine_running == SLOTS for v in s.backends),
            "2 requests waiting in each engine, as the adapter sees it",
        )
        assert all(not v.metrics_stale and v.in_flight_requests == per_backend for v in snapshot.backends)
        for name, server in sluice.servers.items():
            assert (await raw_metrics(session, server.url))["llamacpp:requests_deferred"] == 2, name
        values = await poll_until(
            lambda: sluice.metrics(session),
            lambda v: all(
                v[("sluice_awaiting_first_byte_requests", (("backend", b),))] == 2 for b in BACKEND_NAMES
            ),
            "the queued requests awaiting their first byte in Sluice's metrics",
        )
        for b in BACKEND_NAMES:
            label = (("backend", b),)
            assert values[("sluice_backend_engine_waiting_requests", label)] == 2
            assert values[("sluice_backend_engine_running_requests", label)] == SLOTS
            assert values[("sluice_in_flight_requests", label)] == per_backend
            assert values[("sluice_backend_engine_metrics_stale", label)] == 0
    finally:
        for client in clients:
            client.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    for server in sluice.servers.values():
        await poll_until(lambda s=server: busy_slots(session, s.url), lambda n: n == 0, "servers idle")
    await poll_until(lambda: _in_flight(fleet), lambda n: n == 0, "Sluice's in-flight count back to 0")


async def _snapshot(fleet: FleetState) -> FleetSnapshot:
    return fleet.snapshot()


async def _in_flight(fleet: FleetState) -> int:
    return fleet.total_in_flight


async def test_client_disconnect_through_sluice_stops_generation_on_the_backend(
    sluice: SluiceProxy, session: aiohttp.ClientSession
) -> None:
    max_tokens = 1900
    body = {
        "model": MODEL_ALIAS,
        "prompt": salt() + "Write until stopped.",
        "max_tokens": max_tokens,
        "stream": True,
    }
    before = {name: await raw_metrics(session, s.url) for name, s in sluice.servers.items()}
    response = await session.post(sluice.url + "/v1/completions", json=body)
    server = sluice.servers[response.headers[headers.BACKEND]]
    try:
        events = 0
        while events < 10:
            line = await response.content.readline()
            assert line, "stream ended early"
            events += line.startswith(b"data: ")
        assert await busy_slots(session, server.url) == 1
    finally:
        response.close()  # the client goes away mid-stream
    await poll_until(lambda: busy_slots(session, server.url), lambda n: n == 0, "the slot freed")
    first = await raw_metrics(session, server.url)
    second = await raw_metrics(session, server.url)
    name = response.headers[headers.BACKEND]
    generated = first["llamacpp:tokens_predicted_total"] - before[name]["llamacpp:tokens_predicted_total"]
    assert second["llamacpp:tokens_predicted_total"] == first["llamacpp:tokens_predicted_total"]
    assert 10 <= generated < max_tokens // 2, generated
    await poll_until(lambda: _in_flight(sluice.ctx.fleet), lambda n: n == 0, "Sluice's in-flight back to 0")
    values = await sluice.metrics(session)
    assert values[("sluice_client_disconnects_total", (("stage", "mid_stream"),))] == 1


async def test_models_list_is_the_configured_model_as_llamacpp_describes_it(sluice: SluiceProxy) -> None:
    async with openai.AsyncOpenAI(base_url=sluice.url + "/v1", api_key="unused", max_retries=0) as client:
        models = [model async for model in client.models.list()]
        one = await client.models.retrieve(MODEL_ALIAS)
    assert [m.id for m in models] == [MODEL_ALIAS]
    assert (one.id, one.object, one.owned_by) == (MODEL_ALIAS, "model", "llamacpp")
    assert one.model_extra is not None and one.model_extra["meta"]["n_ctx_train"] == 4096
