"""Requests cross the proxy unchanged: body bytes, unknown fields, custom headers; hop-by-hop removed."""

from __future__ import annotations

import aiohttp

from tests.integration.conftest import StartFleet, assert_no_leaks


async def test_body_bytes_and_custom_headers_forwarded_unchanged(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1)
    # Odd spacing, key order and an unknown field: re-serialising would change these bytes.
    body = b'{ "messages":[{"role":"user","content":"h\\u00e9"}],  "model" : "m1", "vendor_x": {"k": [1,2]} }'
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Bearer sk-abc",
        "X-Tenant-Custom": "team-a",
        "x-sim-output-tokens": "17",
        "Connection": "keep-alive, X-Hop-Only",
        "X-Hop-Only": "must not pass",
        "TE": "trailers",
        "Proxy-Authorization": "secret",
        "x-request-id": "client-id-123",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            proxy.url + "/v1/chat/completions?api-version=2024-06&x=a%26b", data=body, headers=headers
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["x-request-id"] == "client-id-123"
        assert resp.headers["x-sluice-backend"] == "b0"
        await resp.read()
    received = backends[0].requests[0]
    assert received.body == body
    assert received.query == "api-version=2024-06&x=a%26b"
    assert received.headers["Authorization"] == "Bearer sk-abc"
    assert received.headers["X-Tenant-Custom"] == "team-a"
    assert received.headers["x-sim-output-tokens"] == "17"
    assert received.headers["x-request-id"] == "client-id-123"
    for hop in ("X-Hop-Only", "TE", "Proxy-Authorization"):
        assert hop not in received.headers
    assert received.headers.get("Connection", "keep-alive").lower() == "keep-alive"
    await assert_no_leaks(proxy, backends)


async def test_request_id_generated_when_absent_or_unusable(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1)
    payload = {"model": "m1", "messages": []}
    ids = []
    async with aiohttp.ClientSession() as session:
        for given in (None, "bad id with spaces", "x" * 200):
            headers = {} if given is None else {"x-request-id": given}
            async with session.post(
                proxy.url + "/v1/chat/completions", json=payload, headers=headers
            ) as resp:
                ids.append(resp.headers["x-request-id"])
    assert len(set(ids)) == 3
    assert all(i.startswith("sl-") for i in ids)
    assert [r.headers["x-request-id"] for r in backends[0].requests] == ids
    await assert_no_leaks(proxy, backends)


async def test_round_robin_and_backend_headers_relayed(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(2)
    seen = []
    async with aiohttp.ClientSession() as session:
        for _ in range(4):
            async with session.post(
                proxy.url + "/v1/chat/completions", json={"model": "m1", "messages": [], "stream": True}
            ) as resp:
                assert resp.headers["Content-Type"] == "text/event-stream"
                assert resp.headers["x-backend"] == resp.headers["x-sluice-backend"]  # backend's own header
                seen.append(resp.headers["x-sluice-backend"])
                text = await resp.text()
                assert text.endswith("data: [DONE]\n\n")
    assert seen == ["b0", "b1", "b0", "b1"]
    await assert_no_leaks(proxy, backends)


async def test_sse_bytes_relayed_exactly(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1)
    payload = {"model": "m1", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
    async with aiohttp.ClientSession() as session:
        async with session.post(backends[0].url + "/v1/chat/completions", json=payload) as resp:
            direct = await resp.read()
        async with session.post(proxy.url + "/v1/chat/completions", json=payload) as resp:
            via_proxy = await resp.read()
    assert via_proxy == direct
    await assert_no_leaks(proxy, backends)


async def test_chunked_upload_and_expect_continue(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1)
    parts = [b'{"model": "m1", ', b'"messages": [], ', b'"extra": "chunked"}']

    async def body():
        for part in parts:
            yield part

    headers = {"Content-Type": "application/json", "Expect": "100-continue"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(proxy.url + "/v1/chat/completions", data=body(), headers=headers) as resp,
    ):
        assert resp.status == 200
        await resp.read()
    received = backends[0].requests[0]
    assert received.body == b"".join(parts)
    assert "Expect" not in received.headers
    assert "Transfer-Encoding" not in received.headers
    await assert_no_leaks(proxy, backends)
