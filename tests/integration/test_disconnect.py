"""A client that goes away at any stage: the backend sees its request cancelled, nothing leaks."""

from __future__ import annotations

import orjson

from tests.integration import rawhttp
from tests.integration.conftest import StartFleet, assert_no_leaks

CHAT = "/v1/chat/completions"


def _head(body: bytes, **extra: str) -> bytes:
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return rawhttp.request_head(CHAT, headers)


async def test_disconnect_while_waiting_for_first_byte_cancels_upstream(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1)
    body = b'{"model": "m1", "messages": [], "stream": true}'
    _, writer = await rawhttp.connect(proxy.url)
    writer.write(_head(body, x_fake_mode="hold") + body)
    await writer.drain()
    await backends[0].wait_until(backends[0].received(1))  # request pinned before its first byte
    views = proxy.ctx.fleet.snapshot().by_id()
    assert views["b0"].in_flight_requests == 1
    assert views["b0"].awaiting_first_byte == 1
    await rawhttp.close(writer)
    await backends[0].wait_until(lambda: backends[0].cancelled == 1)
    await assert_no_leaks(proxy, backends)


async def test_disconnect_mid_stream_cancels_upstream(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1)
    body = b'{"model": "m1", "messages": [], "stream": true}'
    reader, writer = await rawhttp.connect(proxy.url)
    writer.write(_head(body, x_fake_chunks="50", x_fake_hold_after="3") + body)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    received = b""
    while received.count(b"\n\n") < 3:  # three events reached the client
        received += await reader.read(4096)
    views = proxy.ctx.fleet.snapshot().by_id()
    assert views["b0"].in_flight_requests == 1
    assert views["b0"].awaiting_first_byte == 0
    await rawhttp.close(writer)
    await backends[0].wait_until(lambda: backends[0].cancelled == 1)
    assert backends[0].finished == 1
    await assert_no_leaks(proxy, backends)


async def test_disconnect_while_sending_body(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1)
    _, writer = await rawhttp.connect(proxy.url)
    writer.write(_head(b"x" * 1000) + b'{"model": "m1"')  # 14 of the 1000 bytes announced
    await writer.drain()
    await rawhttp.close(writer)
    await assert_no_leaks(proxy, backends)
    assert backends[0].requests == []


async def test_disconnect_then_next_request_is_clean(start_fleet: StartFleet) -> None:
    """After a cancelled stream the upstream connection is not reused half-read."""
    proxy, backends = await start_fleet(1)
    body = b'{"model": "m1", "messages": [], "stream": true}'
    reader, writer = await rawhttp.connect(proxy.url)
    writer.write(_head(body, x_fake_chunks="20", x_fake_hold_after="1") + body)
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    await rawhttp.close(writer)
    await backends[0].wait_until(lambda: backends[0].cancelled == 1)
    reader, writer = await rawhttp.connect(proxy.url)
    plain = b'{"model": "m1", "messages": []}'
    writer.write(_head(plain) + plain)
    status, _, raw = await rawhttp.read_response(reader)
    assert status == 200
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == "hello from b0"
    await rawhttp.close(writer)
    await assert_no_leaks(proxy, backends)
