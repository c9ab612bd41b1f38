"""The official ``openai`` client (sync and async, streaming and not) through Sluice."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.integration.conftest import StartFleet, assert_no_leaks


def _sync_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0, timeout=10)


async def test_sync_client_chat_non_streaming(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(2)

    def call() -> tuple[str, dict[str, str], int]:
        with _sync_client(proxy.url) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="m1", messages=[{"role": "user", "content": "hello"}], max_tokens=5
            )
            completion = raw.parse()
            assert completion.usage is not None
            return (
                completion.choices[0].message.content or "",
                dict(raw.headers),
                completion.usage.total_tokens,
            )

    content, headers, total = await asyncio.to_thread(call)
    assert content == f"hello from {headers['x-sluice-backend']}"
    assert headers["x-sluice-policy"] == "round_robin"
    assert headers["x-request-id"]
    assert total == 10
    await assert_no_leaks(proxy, backends)


async def test_sync_client_streaming_and_models(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1)

    def call() -> tuple[list[str], list[str]]:
        with _sync_client(proxy.url) as client:
            stream = client.chat.completions.create(
                model="m1", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
            models = [m.id for m in client.models.list()]
            return pieces, models

    pieces, models = await asyncio.to_thread(call)
    assert pieces == [f"tok{i} " for i in range(5)]
    assert models == ["m1"]
    await assert_no_leaks(proxy, backends)


async def test_async_client_streaming_with_usage(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(2)
    async with openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="m1",
            messages=[{"role": "user", "content": "count"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-fake-chunks": "12"},
        )
        text = ""
        usage = None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage is not None:
                usage = chunk.usage
    assert text == "".join(f"tok{i} " for i in range(12))
    assert usage is not None
    assert usage.completion_tokens == 12
    await assert_no_leaks(proxy, backends)


async def test_async_client_completions_and_embeddings(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1, models=("m1", "emb"))
    async with openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0) as client:
        completion = await client.completions.create(model="m1", prompt="Once upon", max_tokens=3)
        assert completion.choices[0].text == "hi there"
        stream = await client.completions.create(model="m1", prompt="x", stream=True)
        n_chunks = len([c async for c in stream])
        assert n_chunks == 5
        embedding = await client.embeddings.create(model="emb", input="vector me")
        assert embedding.data[0].embedding == [0.1, 0.2]
    assert [r.path for r in backends[0].requests] == ["/v1/completions", "/v1/completions", "/v1/embeddings"]
    await assert_no_leaks(proxy, backends)


async def test_openai_client_sees_openai_errors(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1)
    async with openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    assert info.value.response.headers["x-sluice-error-code"] == "model_not_found"
    await assert_no_leaks(proxy, backends)
