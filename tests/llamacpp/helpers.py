"""Small async helpers for talking to a real llama.cpp server in tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
POLL_INTERVAL_S = 0.02
MODEL_ALIAS = "tiny-llama"
SLOTS = 4
CTX_TOKENS = 8192  # 2,048 tokens per slot


def salt() -> str:
    """A unique, printable prompt opener so no test hits another test's cached prefix."""
    return f"Run {uuid.uuid4().hex}. "


async def raw_metrics(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """The server's /metrics read with prometheus_client's parser (independent of Sluice's)."""
    async with session.get(base + "/metrics") as response:
        text = await response.text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def slots(session: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    async with session.get(base + "/slots") as response:
        data: list[dict[str, Any]] = await response.json()
    return data


async def busy_slots(session: aiohttp.ClientSession, base: str) -> int:
    return sum(1 for slot in await slots(session, base) if slot["is_processing"])


async def poll_until(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str, timeout_s: float = 15.0
) -> T:
    """Call ``probe`` until ``done(value)`` or the deadline; fail naming ``what`` and the last value."""
    deadline_s = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline_s:
            raise AssertionError(f"timed out waiting for {what}; last value: {value!r}")
        await asyncio.sleep(POLL_INTERVAL_S)  # polling interval, not synchronisation


async def completion(
    session: aiohttp.ClientSession, base: str, prompt: str, max_tokens: int
) -> dict[str, Any]:
    body = {"model": "tiny-llama", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    async with session.post(base + "/v1/completions", json=body) as response:
        assert response.status == 200, await response.text()
        data: dict[str, Any] = await response.json()
    return data


async def open_stream(
    session: aiohttp.ClientSession, base: str, prompt: str, max_tokens: int
) -> aiohttp.ClientResponse:
    """Start a streaming completion and return once the response headers arrived."""
    body = {"model": "tiny-llama", "prompt": prompt, "max_tokens": max_tokens, "stream": True}
    response = await session.post(base + "/v1/completions", json=body)
    assert response.status == 200
    return response


async def stream_until_cancelled(
    session: aiohttp.ClientSession, base: str, prompt: str, max_tokens: int
) -> None:
    """Stream a completion, reading every chunk, until cancelled; then drop the connection.

    The server answers a request's headers only once a slot takes it, so a
    caller that wants requests to queue must not wait for headers first.
    """
    response = await open_stream(session, base, prompt, max_tokens)
    try:
        async for _chunk in response.content.iter_any():
            pass
    finally:
        response.close()


async def read_events(response: aiohttp.ClientResponse, n_events: int) -> list[bytes]:
    events: list[bytes] = []
    while len(events) < n_events:
        line = await response.content.readline()
        assert line, "stream ended early"
        if line.startswith(b"data: "):
            events.append(line)
    return events
