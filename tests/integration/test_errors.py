"""Every error case of the data plane: status, OpenAI error body, x-sluice-error-code, nothing leaked."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from tests.integration import rawhttp
from tests.integration.conftest import StartFleet, assert_no_leaks

CHAT = "/v1/chat/completions"


async def _post(
    url: str, data: bytes | io.BytesIO, headers: dict[str, str] | None = None
) -> tuple[int, dict, CIMultiDict[str]]:
    hdrs = {"Content-Type": "application/json"} if headers is None else headers
    async with aiohttp.ClientSession() as session, session.post(url, data=data, headers=hdrs) as resp:
        body = orjson.loads(await resp.read())
        return resp.status, body, CIMultiDict(resp.headers)


def _assert_error(
    status: int, body: dict, headers: CIMultiDict[str] | dict[str, str], want_status: int, want_code: str
) -> None:
    assert status == want_status, body
    assert set(body["error"]) == {"message", "type", "code", "param"}
    assert body["error"]["code"] == want_code
    assert body["error"]["message"]
    assert headers["x-sluice-error-code"] == want_code
    assert headers["x-request-id"]


@pytest.mark.parametrize(
    ("data", "headers", "status", "code"),
    [
        (b'{"model": "m1", "messages": [', None, 400, "invalid_json"),
        (b'{"model": "m1", "messages": []', None, 400, "invalid_json"),
        (b"not json", None, 400, "invalid_json"),
        (b"", None, 400, "invalid_json"),
        (b"[1, 2]", None, 400, "invalid_request"),
        (b'{"messages": []}', None, 400, "missing_required_parameter"),
        (b'{"model": 3, "messages": []}', None, 400, "invalid_value"),
        (b'{"model": "gpt-9", "messages": []}', None, 404, "model_not_found"),
        (b'{"model": "m1"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b"model=m1", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ],
)
async def test_bad_requests(start_fleet: StartFleet, data: bytes, headers, status: int, code: str) -> None:
    proxy, backends = await start_fleet(1)
    got_status, body, got_headers = await _post(proxy.url + CHAT, data, headers)
    _assert_error(got_status, body, got_headers, status, code)
    if code == "model_not_found":
        assert body["error"]["param"] == "model"
    assert backends[0].requests == []  # nothing invalid reaches a backend
    await assert_no_leaks(proxy, backends)


async def test_body_over_limit_declared_and_chunked(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1, extra="limits: {max_body_bytes: 4096}\n")
    big = b'{"model": "m1", "messages": [], "pad": "' + b"x" * 3_000_000 + b'"}'
    status, body, headers = await _post(proxy.url + CHAT, io.BytesIO(big))
    _assert_error(status, body, headers, 413, "request_too_large")

    async def chunks():
        for _ in range(100):
            yield b"x" * 1024

    async with (
        aiohttp.ClientSession() as session,
        session.post(proxy.url + CHAT, data=chunks(), headers={"Content-Type": "application/json"}) as r,
    ):
        assert r.status == 413
        assert r.headers["x-sluice-error-code"] == "request_too_large"
    assert backends[0].requests == []
    await assert_no_leaks(proxy, backends)


async def test_multi_megabyte_body_under_limit_is_forwarded(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1)
    content = "word " * 600_000  # 3 MB of prompt
    data = orjson.dumps({"model": "m1", "messages": [{"role": "user", "content": content}]})
    status, _, _ = await _post(proxy.url + CHAT, io.BytesIO(data))
    assert status == 200
    assert backends[0].requests[0].body == data
    await assert_no_leaks(proxy, backends)


async def test_trickling_client_is_served_and_stalled_client_gets_408(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1, extra="limits: {body_read_timeout_s: 0.5}\n")
    body = b'{"model": "m1", "messages": [{"role": "user", "content": "slow"}]}'
    reader, writer = await rawhttp.connect(proxy.url)
    writer.write(
        rawhttp.request_head(CHAT, {"Content-Type": "application/json", "Content-Length": str(len(body))})
    )
    for i in range(0, len(body), 8):  # a slow client: 8 bytes at a time, each on its own loop turn
        writer.write(body[i : i + 8])
        await writer.drain()
        await asyncio.sleep(0.01)  # emulates the client's slowness; nothing waits on it
    status, _, _ = await rawhttp.read_response(reader)
    assert status == 200
    await rawhttp.close(writer)

    reader, writer = await rawhttp.connect(proxy.url)
    writer.write(rawhttp.request_head(CHAT, {"Content-Type": "application/json", "Content-Length": "500"}))
    writer.write(body[:10])  # then nothing more
    await writer.drain()
    status, headers, raw = await rawhttp.read_response(reader)
    _assert_error(status, orjson.loads(raw), headers, 408, "request_timeout")
    await rawhttp.close(writer)
    assert len(backends[0].requests) == 1
    await assert_no_leaks(proxy, backends)


async def test_no_healthy_backend_is_503(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1)
    backends[0].health_status = 503
    await proxy.check_health()
    status, body, headers = await _post(proxy.url + CHAT, b'{"model": "m1", "messages": []}')
    _assert_error(status, body, headers, 503, "no_healthy_backend")
    assert "m1" in body["error"]["message"]
    await assert_no_leaks(proxy, backends)


async def test_connect_error_is_502(start_fleet: StartFleet, unused_tcp_port: int) -> None:
    proxy, backends = await start_fleet(0, dead_urls=(f"http://127.0.0.1:{unused_tcp_port}",))
    proxy.ctx.fleet.record_check("dead0", True)  # pretend its health check passed: only the request fails
    status, body, headers = await _post(proxy.url + CHAT, b'{"model": "m1", "messages": []}')
    _assert_error(status, body, headers, 502, "upstream_connect_error")
    assert headers["x-sluice-backend"] == "dead0"
    await assert_no_leaks(proxy, backends)


async def test_first_byte_timeout_is_504_and_upstream_closed(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1, extra="timeouts: {first_byte_ms: 300}\n")
    hdrs = {"Content-Type": "application/json", "x-fake-mode": "never"}
    status, body, headers = await _post(proxy.url + CHAT, b'{"model": "m1", "messages": []}', hdrs)
    _assert_error(status, body, headers, 504, "upstream_timeout")
    await backends[0].wait_until(lambda: backends[0].cancelled == 1)
    # Slowness is never a breaker failure: long generations are healthy.
    assert proxy.ctx.fleet.backend("b0").breaker.consecutive_failures == 0
    await assert_no_leaks(proxy, backends)


async def test_garbage_from_backend_is_502(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1)
    hdrs = {"Content-Type": "application/json", "x-fake-mode": "garbage"}
    status, body, headers = await _post(proxy.url + CHAT, b'{"model": "m1", "messages": []}', hdrs)
    _assert_error(status, body, headers, 502, "upstream_bad_response")
    await assert_no_leaks(proxy, backends)


async def test_backend_error_status_relayed_unchanged(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1)
    hdrs = {"Content-Type": "application/json", "x-fake-mode": "status:500"}
    status, body, headers = await _post(proxy.url + CHAT, b'{"model": "m1", "messages": []}', hdrs)
    assert status == 500
    assert body["error"]["message"] == "fake 500"  # the backend's own body
    assert "x-sluice-error-code" not in headers
    assert len(backends[0].requests) == 1  # 500 is not retried
    await assert_no_leaks(proxy, backends)


@pytest.mark.parametrize("mode", ["close_mid_stream", "idle"])
async def test_mid_stream_failure_ends_with_sse_error_event(start_fleet: StartFleet, mode: str) -> None:
    proxy, backends = await start_fleet(1, extra="timeouts: {idle_ms: 300}\n")
    hdrs = {"Content-Type": "application/json", "x-fake-chunks": "3"}
    if mode == "close_mid_stream":
        hdrs["x-fake-mode"] = "close_mid_stream"
    else:
        hdrs["x-fake-hold-after"] = "2"  # two chunks, then the backend goes silent
    data = b'{"model": "m1", "messages": [], "stream": true}'
    async with (
        aiohttp.ClientSession() as session,
        session.post(proxy.url + CHAT, data=data, headers=hdrs) as resp,
    ):
        assert resp.status == 200
        text = (await resp.read()).decode()  # ends cleanly: a truncated body would raise here
    events = [e for e in text.split("\n\n") if e]
    assert events[:2] == [e for e in events[:2] if e.startswith("data: {")]
    last = orjson.loads(events[-1].removeprefix("data: "))
    want = "upstream_failed_mid_stream" if mode == "close_mid_stream" else "upstream_timeout"
    assert last["error"]["code"] == want
    assert "[DONE]" not in text
    if mode == "idle":
        await backends[0].wait_until(lambda: backends[0].cancelled == 1)
    await assert_no_leaks(proxy, backends)


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/chat/completions", 405, "method_not_allowed"),
        ("POST", "/v1/models", 405, "method_not_allowed"),
        ("GET", "/v2/whatever", 404, "not_found"),
        ("POST", "/v1/responses", 404, "not_found"),
        ("GET", "/v1/models/unknown", 404, "model_not_found"),
    ],
)
async def test_unknown_paths_and_methods(
    start_fleet: StartFleet, method: str, path: str, status: int, code: str
):
    proxy, backends = await start_fleet(1)
    async with aiohttp.ClientSession() as session, session.request(method, proxy.url + path) as resp:
        body = orjson.loads(await resp.read())
        assert resp.status == status
        assert body["error"]["code"] == code
        assert resp.headers["x-sluice-error-code"] == code
        if status == 405:
            assert resp.headers["Allow"]
    await assert_no_leaks(proxy, backends)
