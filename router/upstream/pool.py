"""Keep-alive HTTP/1.1 connections to backends and the one call the proxy makes: ``request``.

One request at a time per connection (no pipelining). A connection returns
to its backend's idle stack when its response has been read to the end with
keep-alive intact; otherwise it is closed. Idle connections older than
``keepalive_s`` are closed instead of reused: below the 5 s keep-alive of
uvicorn (vLLM, SGLang), so Sluice rarely writes to a connection the backend is
closing. If a *reused* connection dies before the backend sent a single byte
back, the request is sent once more on a fresh connection (that backend
never saw it — nginx's rule for keep-alive races); a fresh connection is
never retried here.

Backends that close after every stream: llama.cpp's server answers
``Keep-Alive`` but closes the connection right after each ``text/event-stream``
body. Usually the close arrives before the connection is reused; when the
next request wins the race it is resent by the rule above (never a failure or
a retry elsewhere). Once a backend has been seen closing a connection within
``CLOSE_AFTER_STREAM_WINDOW_S`` of the end of a stream (or a reused
connection that carried a stream died unanswered), connections that carry a
stream from that backend are no longer pooled, so the race cannot happen
again; its other answers keep their keep-alive connections.

``request`` sends the head and body in one write for small bodies, waits for
the response head and returns an ``UpstreamResponse``; it raises
``ConnectFailed`` (nothing was answered), ``UpstreamProtocolError`` (garbage)
or propagates cancellation after aborting the connection, which is how a
client disconnect or a timeout stops the backend at once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from router.upstream.response import MAX_HEAD_BYTES, UpstreamProtocolError, UpstreamResponse, parse_head

SINGLE_WRITE_MAX_BYTES = 256 * 1024
MAX_IDLE_PER_BACKEND = 1024
CLOSE_AFTER_STREAM_WINDOW_S = 1.0
EVENT_STREAM = "text/event-stream"
log = logging.getLogger("sluice.upstream")


class ConnectFailed(Exception):
    """No response byte arrived: refused, connect timeout, or the connection dropped first."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a backend lives: scheme, host, port, and the path prefix of its base URL."""

    host: str
    port: int
    tls: bool
    base_path: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool, key: Origin) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.received_any = False
        self.carried_stream = False  # the last response was text/event-stream
        self._head = bytearray()
        self._head_waiter: asyncio.Future[UpstreamResponse] | None = None
        self._response: UpstreamResponse | None = None
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        response = self._response
        if response is not None:
            try:
                response.feed(data)
            except UpstreamProtocolError as exc:
                response.fail(exc)
                self.abort()
            return
        if self._head_waiter is None:
            self.abort()  # bytes nobody asked for
            return
        if self._head:  # a head split across reads: join the pieces
            self._head += data
            data = bytes(self._head)
        try:
            self._parse_head(data)
        except UpstreamProtocolError as exc:
            self._fail_head(exc)

    def _parse_head(self, buffered: bytes) -> None:
        """Parse the head(s) at the start of ``buffered``; keep an incomplete one for the next read.

        Works on the bytes as received: a small answer (head and body in one read) is sliced once,
        not copied through the buffer.
        """
        while True:
            end = buffered.find(b"\r\n\r\n")
            if end < 0:
                if len(buffered) > MAX_HEAD_BYTES:
                    raise UpstreamProtocolError("response head too large")
                self._head = bytearray(buffered)
                return
            status, reason, headers = parse_head(buffered[:end])
            buffered = buffered[end + 4 :]
            if 100 <= status < 200 and status != 101:
                continue  # informational (100 Continue): the real head follows
            assert self.transport is not None
            response = UpstreamResponse(status, reason, headers, self.transport, self._loop)
            self._response = response
            self.carried_stream = response.content_type == EVENT_STREAM
            self._head = bytearray()
            waiter, self._head_waiter = self._head_waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(response)
            response.start(buffered)
            return

    def _fail_head(self, exc: BaseException) -> None:
        waiter, self._head_waiter = self._head_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        by_backend = not self.closed  # ``abort`` marks the connections Sluice closes itself
        self.closed = True
        if by_backend and self.carried_stream and self._head_waiter is None:
            response = self._response
            if response is None:  # idle in the pool since ``idle_since``
                idle_s = self._loop.time() - self.idle_since
                just_after = idle_s <= CLOSE_AFTER_STREAM_WINDOW_S
            else:  # the end of the stream and the close arrived together; it promised keep-alive
                just_after = response.done and response.keep_alive
            if just_after:
                self._pool.closes_after_streams(self.key)
        if self._response is not None:
            self._response.connection_lost()
        if self._head_waiter is not None:
            self._fail_head(ConnectFailed("the backend closed the connection without answering"))
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectFailed("connection lost while sending the request"))

    def pause_writing(self) -> None:
        self._drain_waiter = self._loop.create_future()

    def resume_writing(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- used by the pool --------------------------------------------------------------------

    async def send(self, head: bytes, body: bytes) -> UpstreamResponse:
        transport = self.transport
        if transport is None or self.closed:
            raise ConnectFailed("connection already closed")
        self._response = None
        self.received_any = False
        waiter: asyncio.Future[UpstreamResponse] = self._loop.create_future()
        self._head_waiter = waiter
        if len(body) <= SINGLE_WRITE_MAX_BYTES:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)
        if self._drain_waiter is not None:
            await self._drain_waiter
        return await waiter

    def release_response(self) -> None:
        self._response = None

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Idle keep-alive connections per (host, port); everything runs on the event loop.

    Created on the running loop and kept to it: ``self.loop`` is read where the pool, its connections
    and responses would otherwise call ``asyncio.get_running_loop()``, which on CPython 3.11 makes a
    ``getpid`` system call every time (~0.3 us; six times per proxied request, once per awaited chunk).
    """

    def __init__(self, connect_timeout_s: float, keepalive_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._idle: dict[Origin, list[UpstreamConnection]] = {}
        self._tls: ssl.SSLContext | None = None
        self._owner: dict[UpstreamResponse, UpstreamConnection] = {}
        self._closing = False
        self._no_reuse_after_stream: set[Origin] = set()
        self.stale_resends = 0  # requests sent again because a reused connection was found dead

    @property
    def in_use(self) -> int:
        """Connections currently carrying a request or an unread response."""
        return len(self._owner)

    async def request(
        self, origin: Origin, method: str, path: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> UpstreamResponse:
        head = _request_head(method, origin.base_path + path, origin.host_header, headers, len(body))
        conn = self._idle_connection(origin)
        reused = conn is not None
        if conn is None:
            conn, reused = await self._connect(origin)
        try:
            response = await conn.send(head, body)
        except ConnectFailed:
            conn.abort()
            if not reused or conn.received_any:
                raise
            self.stale_resends += 1
            if conn.carried_stream:
                self.closes_after_streams(origin)
            conn, _ = await self._connect(origin)  # a stale keep-alive connection: once more, fresh
            try:
                response = await conn.send(head, body)
            except BaseException:
                conn.abort()
                raise
        except BaseException:
            conn.abort()
            raise
        self._owner[response] = conn
        return response

    def close_response(self, response: UpstreamResponse) -> None:
        """The relay is finished with ``response``: reuse its connection if complete, else abort it."""
        conn = self._owner.pop(response, None)
        if conn is None:
            return
        conn.release_response()
        if not response.done or not response.keep_alive or conn.closed or self._closing:
            conn.abort()
            return
        if conn.carried_stream and conn.key in self._no_reuse_after_stream:
            conn.abort()  # the backend is closing it anyway
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= MAX_IDLE_PER_BACKEND:
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        idle.append(conn)

    def closes_after_streams(self, origin: Origin) -> None:
        """Stop pooling connections that carried a stream from ``origin`` (see the module docstring)."""
        if origin not in self._no_reuse_after_stream:
            self._no_reuse_after_stream.add(origin)
            log.info(
                "backend %s closes its connection after streamed responses; "
                "such connections will not be reused",
                origin.host_header,
            )

    def reuses_after_stream(self, origin: Origin) -> bool:
        return origin not in self._no_reuse_after_stream

    def _idle_connection(self, key: Origin) -> UpstreamConnection | None:
        """The most recently pooled live connection to ``key`` (stale ones are closed), or None.

        Not a coroutine: a pooled connection is the common case and needs no waiting.
        """
        idle = self._idle.get(key)
        if idle:
            oldest_ok = self.loop.time() - self._keepalive_s
            while idle:
                conn = idle.pop()
                if not conn.closed and conn.idle_since >= oldest_ok:
                    return conn
                conn.abort()
        return None

    async def _connect(self, key: Origin) -> tuple[UpstreamConnection, bool]:
        loop = self.loop
        tls = None
        if key.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self, key), key.host, key.port, ssl=tls
                )
        except TimeoutError:
            raise ConnectFailed(f"connect timed out after {self._connect_timeout_s:g} s") from None
        except OSError as exc:
            raise ConnectFailed(exc.strerror or str(exc) or type(exc).__name__) from None
        return conn, False

    def close(self) -> None:
        self._closing = True
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
        for conn in self._owner.values():
            conn.abort()
        self._owner.clear()


def _request_head(
    method: str, target: str, host: str, headers: Iterable[tuple[str, str]], body_bytes: int
) -> bytes:
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{fields}Content-Length: {body_bytes}\r\n\r\n"
    return head.encode("utf-8", "surrogateescape")
