"""Sluice's upstream HTTP/1.1 client: framing under any TCP split, keep-alive reuse, stale retry."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.upstream import ConnectFailed, Origin, UpstreamPool, UpstreamProtocolError, UpstreamResponse
from router.upstream.response import HIGH_WATER_BYTES, UpstreamClosed, parse_head


class _FakeTransport:
    def __init__(self) -> None:
        self.paused = False
        self.aborted = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def abort(self) -> None:
        self.aborted = True


def _response(raw_head: bytes) -> tuple[UpstreamResponse, _FakeTransport]:
    status, reason, headers = parse_head(raw_head)
    transport = _FakeTransport()
    return UpstreamResponse(status, reason, headers, transport), transport  # type: ignore[arg-type]


def _feed_split(response: UpstreamResponse, data: bytes, cuts: list[int]) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(points):
        if b > a:
            response.feed(data[a:b])


def _drain(response: UpstreamResponse) -> bytes:
    out = b""
    while response._chunks:
        out += response._chunks.popleft()
    return out


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=200), cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=8))
def test_read_complete_is_the_whole_body_once_it_has_arrived(body: bytes, cuts: list[int]) -> None:
    """``read_complete`` (no coroutine) gives what ``read()`` would, and None until the end arrived."""
    response, _ = _response(b"HTTP/1.1 200 OK\r\nContent-Length: %d" % (len(body) + 1))
    response.start(b"")
    _feed_split(response, body, cuts)
    assert response.read_complete() is None  # one byte still to come
    response.feed(b"!")
    assert response.read_complete() == body + b"!"
    assert asyncio.run(response.read()) == b""  # consumed: nothing left for read()


def test_read_complete_resumes_a_paused_transport() -> None:
    big = b"x" * (HIGH_WATER_BYTES + 1)
    response, transport = _response(b"HTTP/1.1 200 OK\r\nContent-Length: %d" % len(big))
    response.start(big)
    assert transport.paused
    assert response.read_complete() == big
    assert not transport.paused


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked"


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=40), min_size=0, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_chunked_body_decoded_under_any_split(payloads: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in payloads) + b"0\r\nX-Trailer: t\r\n\r\n"
    response, _ = _response(CHUNKED_HEAD)
    _feed_split(response, wire, cuts)
    assert response.done
    assert response.keep_alive
    assert _drain(response) == b"".join(payloads)


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=200), cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=8))
def test_content_length_body_under_any_split(body: bytes, cuts: list[int]) -> None:
    response, _ = _response(b"HTTP/1.1 200 OK\r\nContent-Length: %d" % len(body))
    response.start(b"")
    _feed_split(response, body, cuts)
    assert response.done
    assert _drain(response) == body


def test_extra_bytes_after_body_forbid_reuse() -> None:
    response, _ = _response(b"HTTP/1.1 200 OK\r\nContent-Length: 2")
    response.feed(b"okHTTP/1.1 200 OK")
    assert response.done
    assert not response.keep_alive
    assert _drain(response) == b"ok"


def test_framing_rules() -> None:
    no_body, _ = _response(b"HTTP/1.1 204 No Content")
    no_body.start(b"")
    assert no_body.done
    closing, _ = _response(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1")
    assert not closing.keep_alive
    until_close, _ = _response(b"HTTP/1.1 200 OK")
    until_close.feed(b"abc")
    assert not until_close.done
    until_close.connection_lost()
    assert until_close.done
    assert not until_close.keep_alive
    cut, _ = _response(b"HTTP/1.1 200 OK\r\nContent-Length: 10")
    cut.feed(b"abc")
    cut.connection_lost()
    with pytest.raises(UpstreamClosed):
        asyncio.run(cut.read())


@pytest.mark.parametrize(
    "head",
    [
        b"garbage",
        b"HTTP/1.1 abc OK",
        b"HTTP/1.1 999 X",
        b"ICY 200 OK",
        b"HTTP/1.1 200 OK\r\nno colon here",
        b"HTTP/1.1 200 OK\r\nX-A: 1\nX-Injected: 2",
    ],
)
def test_bad_heads_rejected(head: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_head(head)


def test_bad_chunk_size_and_content_length_rejected() -> None:
    response, _ = _response(CHUNKED_HEAD)
    with pytest.raises(UpstreamProtocolError):
        response.feed(b"zz\r\n")
    with pytest.raises(UpstreamProtocolError):
        _response(b"HTTP/1.1 200 OK\r\nContent-Length: -1")


def test_flow_control_pauses_and_resumes_reading() -> None:
    response, transport = _response(b"HTTP/1.1 200 OK\r\nContent-Length: 400000")
    response.feed(b"x" * 300_000)
    assert transport.paused

    async def read_some() -> None:
        await response.readany()

    asyncio.run(read_some())
    assert not transport.paused


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], "asyncio.Future[None] | object"]


@pytest.fixture
async def server() -> AsyncIterator[Callable[..., object]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> Origin:
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
        servers.append(srv)
        return Origin("127.0.0.1", srv.sockets[0].getsockname()[1], False, "/base")

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


async def test_keep_alive_reuse_and_request_bytes(server) -> None:
    connections = 0
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                seen.append(await _read_request(reader))
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello")
            await writer.drain()
        writer.close()

    origin = await server(handler)
    pool = UpstreamPool(connect_timeout_s=1.0, keepalive_s=60.0)
    for i in range(3):
        response = await pool.request(origin, "POST", "/v1/x", [("X-Custom", f"v{i}")], b'{"k": 1}')
        assert response.status == 200
        assert response.headers.getall("X-A") == ["1", "2"]
        assert await response.read() == b"hello"
        pool.close_response(response)
    assert connections == 1
    assert pool.in_use == 0
    head, body = seen[2]
    assert head.startswith(b"POST /base/v1/x HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nX-Custom: v2\r\n" in head
    assert body == b'{"k": 1}'
    pool.close()


async def test_stale_keep_alive_connection_is_retried_once_on_a_fresh_one(server) -> None:
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await _read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # Keep-alive promised, but the server then waits for the next request and closes on it.
        with contextlib.suppress(asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
        writer.close()

    origin = await server(handler)
    pool = UpstreamPool(connect_timeout_s=1.0, keepalive_s=60.0)
    first = await pool.request(origin, "POST", "/a", [], b"")
    assert await first.read() == b"ok"
    pool.close_response(first)
    second = await pool.request(origin, "POST", "/a", [], b"")
    assert await second.read() == b"ok"
    pool.close_response(second)
    assert served == 2
    pool.close()


async def test_refused_and_silent_close_are_connect_failures(server, unused_tcp_port: int) -> None:
    pool = UpstreamPool(connect_timeout_s=1.0, keepalive_s=60.0)
    with pytest.raises(ConnectFailed):
        await pool.request(Origin("127.0.0.1", unused_tcp_port, False, ""), "POST", "/", [], b"")

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    origin = await server(hang_up)
    with pytest.raises(ConnectFailed):
        await pool.request(origin, "POST", "/", [], b"")
    assert pool.in_use == 0
    pool.close()


SSE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
    b"Keep-Alive: timeout=5, max=100\r\n\r\n"
    b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
)
JSON_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def _exchange(pool: UpstreamPool, origin: Origin, path: str) -> bytes:
    response = await pool.request(origin, "POST", path, [], b"")
    body = await response.read()
    pool.close_response(response)
    return body


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline_s = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline_s, "condition not reached before the deadline"
        await asyncio.sleep(0.005)  # polling a condition with a deadline, not synchronisation


async def test_backend_closing_after_each_stream_stops_stream_reuse(server) -> None:
    """llama.cpp's server: ``Keep-Alive`` promised, connection closed right after every SSE body."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                head, _ = await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            if b"/stream" in head:
                writer.write(SSE_RESPONSE)
                await writer.drain()
                break  # close, although Keep-Alive was answered
            writer.write(JSON_RESPONSE)
            await writer.drain()
        writer.close()

    origin = await server(handler)
    pool = UpstreamPool(connect_timeout_s=1.0, keepalive_s=60.0)
    assert await _exchange(pool, origin, "/stream") == b"data: [DONE]\n\n"
    await _until(lambda: not pool.reuses_after_stream(origin))  # the close may land after the body
    for path in ("/stream", "/stream", "/json", "/json"):
        await _exchange(pool, origin, path)
    assert (connections, pool.stale_resends) == (4, 0)  # 3 streams on fresh connections; the JSONs share one
    pool.close()


async def test_stale_connection_after_a_stream_is_resent_and_remembered(server) -> None:
    """The race: the next request is written before the backend's close arrives."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(SSE_RESPONSE)
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")  # closes only once the next request arrived
        writer.close()

    origin = await server(handler)
    pool = UpstreamPool(connect_timeout_s=1.0, keepalive_s=60.0)
    await _exchange(pool, origin, "/stream")
    assert pool.reuses_after_stream(origin)  # nothing seen yet: the connection went back to the pool
    await _exchange(pool, origin, "/stream")
    assert (pool.stale_resends, pool.reuses_after_stream(origin)) == (1, False)
    await _exchange(pool, origin, "/stream")
    assert (connections, pool.stale_resends) == (3, 1)
    pool.close()


_HEAD_BYTES = st.sampled_from(
    [
        b"HTTP/1.1 ",
        b"HTTP/1.0 ",
        b"200",
        b"404",
        b"99",
        b" OK",
        b"\r\n",
        b"\r",
        b"\n",
        b":",
        b": ",
        b" ",
        b"\t",
        b"\x0b",
        b"\x1c",
        b"\x1f",
        b"X-A",
        b"Content-Type",
        b"v",
        b"\xc3\xa9",
        b"\xff",
        b"abc",
        b"",
    ]
)


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(_HEAD_BYTES, max_size=16), prefix=st.sampled_from([b"HTTP/1.1 200 OK\r\n", b""]))
def test_ascii_fast_path_parses_as_the_byte_parser(pieces: list[bytes], prefix: bytes) -> None:
    """Whatever the head, ``parse_head`` (text fast path for ASCII) answers as the byte parser."""
    from router.upstream.response import _parse_head_bytes

    head = prefix + b"".join(pieces)
    try:
        expected = _parse_head_bytes(head)
    except UpstreamProtocolError:
        with pytest.raises(UpstreamProtocolError):
            parse_head(head)
        return
    status, reason, headers = parse_head(head)
    assert (status, reason, list(headers.items())) == (expected[0], expected[1], list(expected[2].items()))


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10), informational=st.booleans())
def test_head_parsed_under_any_split_of_the_reads(cuts: list[int], informational: bool) -> None:
    """The connection finds the head (after a 100 Continue) however the bytes are split across reads."""
    from router.upstream.pool import UpstreamConnection

    body = b'{"ok": true}'
    wire = (b"HTTP/1.1 100 Continue\r\n\r\n" if informational else b"") + (
        b"HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )

    async def scenario() -> tuple[int, str, bytes]:
        pool = UpstreamPool(connect_timeout_s=1.0, keepalive_s=60.0)
        conn = UpstreamConnection(pool, Origin("127.0.0.1", 1, False, ""))
        conn.connection_made(_FakeTransport())  # type: ignore[arg-type]
        waiter: asyncio.Future[UpstreamResponse] = asyncio.get_running_loop().create_future()
        conn._head_waiter = waiter
        points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
        for a, b in itertools.pairwise(points):
            if b > a:
                conn.data_received(wire[a:b])
        response = await waiter
        return response.status, response.headers["X-A"], await response.read()

    assert asyncio.run(scenario()) == (201, "1", body)
