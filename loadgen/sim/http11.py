"""A small HTTP/1.1 server on ``asyncio.Protocol`` for the simulated backends.

Why not aiohttp: a simulated fleet streams tens of thousands of SSE chunks per second from one
process. Measured on this machine class (shared/reference/tools.md), an aiohttp app costs about
13 us per chunk and a raw protocol writing one ``transport.write`` per event about 3 us; the
simulator must not be the bottleneck of the proxy it measures.

Scope: what OpenAI clients, routers and load tools send. Request line + headers (64 KiB cap ->
431), bodies by ``Content-Length`` or ``Transfer-Encoding: chunked`` (cap -> 413),
``Expect: 100-continue``, keep-alive (HTTP/1.1 default; HTTP/1.0 only when asked), pipelined
requests answered in order. Responses are complete (``Content-Length``) or streamed with chunked
encoding. Handlers are plain callbacks, not coroutines: the simulated engine answers from its own
timer, so a request costs no task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_STREAM_BUFFER_BYTES = 16 * 1024 * 1024
REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}
_BAD_REQUEST = (
    b'{"error":{"message":"malformed HTTP request","type":"invalid_request_error",'
    b'"code":"bad_http","param":null}}'
)


class HttpRequest:
    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query")

    def __init__(self, method: str, target: str, headers: dict[str, str], keep_alive: bool) -> None:
        self.method = method
        self.path, _, self.query = target.partition("?")
        self.headers = headers
        self.keep_alive = keep_alive
        self.body = b""


class Handler(Protocol):
    def __call__(self, request: HttpRequest, conn: HttpConnection) -> None: ...


class HttpConnection(asyncio.Protocol):
    """One client connection; at most one request in progress, later pipelined ones wait."""

    def __init__(
        self,
        handler: Handler,
        on_close: Callable[[HttpConnection], None],
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._handler = handler
        self._on_close = on_close
        self._max_body = max_body_bytes
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._request: HttpRequest | None = None  # parsed head, body still arriving
        self._chunked = False
        self._body_left = 0
        self._body = bytearray()
        self._busy = False  # a response is in progress
        self._keep_alive = True
        self._closing = False
        self.closed = False
        self.on_disconnect: Callable[[], None] | None = None

    # --- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy:
            self._parse()
        elif len(self._buf) > self._max_body + MAX_HEAD_BYTES:
            self.abort()  # a client pipelining without bound

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        callback, self.on_disconnect = self.on_disconnect, None
        if callback is not None:
            callback()
        self._on_close(self)

    # --- parsing ---------------------------------------------------------------------------------

    def _parse(self) -> None:
        while not self._busy and not self.closed:
            if self._request is None and not self._parse_head():
                return
            if not self._read_body():
                return
            request, self._request = self._request, None
            assert request is not None
            request.body = bytes(self._body)
            self._body.clear()
            self._busy = True
            self._keep_alive = request.keep_alive
            self._handler(request, self)

    def _parse_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD_BYTES:
                self._fail(431)
            return False
        if end > MAX_HEAD_BYTES:
            self._fail(431)
            return False
        lines = self._buf[:end].decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
            self._fail(400)
            return False
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self._fail(505)
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                self._fail(400)
                return False
            key = name.lower()
            if key == "content-length" and key in headers and headers[key] != value.strip():
                self._fail(400)
                return False
            headers[key] = value.strip()
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        self._request = HttpRequest(method, target, headers, keep_alive)
        return self._start_body(headers)

    def _start_body(self, headers: dict[str, str]) -> bool:
        encoding = headers.get("transfer-encoding")
        self._chunked = False
        self._body_left = 0
        if encoding is not None:
            if encoding.lower() != "chunked":
                self._fail(501)
                return False
            self._chunked = True
        elif "content-length" in headers:
            text = headers["content-length"]
            if not text.isdigit():
                self._fail(400)
                return False
            self._body_left = int(text)
            if self._body_left > self._max_body:
                self._fail(413)
                return False
        if headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _read_body(self) -> bool:
        """Move body bytes from the buffer; True once the whole body is in ``_body``."""
        if not self._chunked:
            take = min(self._body_left, len(self._buf))
            self._body += self._buf[:take]
            del self._buf[:take]
            self._body_left -= take
            return self._body_left == 0
        while True:
            line_end = self._buf.find(b"\r\n")
            if line_end < 0:
                return False
            size_text = self._buf[:line_end].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                self._fail(400)
                return False
            if size == 0:
                trailer_end = self._buf.find(b"\r\n\r\n", line_end)
                if self._buf[line_end : line_end + 4] == b"\r\n\r\n" or trailer_end >= 0:
                    stop = (
                        line_end + 4 if self._buf[line_end : line_end + 4] == b"\r\n\r\n" else trailer_end + 4
                    )
                    del self._buf[:stop]
                    return True
                return False
            if len(self._body) + size > self._max_body:
                self._fail(413)
                return False
            start = line_end + 2
            if len(self._buf) < start + size + 2:
                return False
            self._body += self._buf[start : start + size]
            del self._buf[: start + size + 2]

    def _fail(self, status: int) -> None:
        """Answer a malformed request and close: the stream position is unknown from here on."""
        self._keep_alive = False
        self._busy = True
        self.respond(status, _BAD_REQUEST)

    # --- responses -------------------------------------------------------------------------------

    def _head(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if not self._keep_alive:
            lines.append("connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        if not self.writable:
            return
        assert self._transport is not None
        all_headers = [("content-type", content_type), ("content-length", str(len(body))), *(headers or [])]
        self._transport.write(self._head(status, all_headers) + body)
        self._done()

    def start_stream(self, headers: list[tuple[str, str]] | None = None, first: bytes = b"") -> None:
        if not self.writable:
            return
        assert self._transport is not None
        all_headers = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("transfer-encoding", "chunked"),
            ("cache-control", "no-cache"),
            *(headers or []),
        ]
        data = self._head(200, all_headers)
        if first:
            data += b"%x\r\n%b\r\n" % (len(first), first)
        self._transport.write(data)

    def write_chunk(self, data: bytes) -> None:
        transport = self._transport
        if not self.writable or transport is None or not data:
            return
        transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        if transport.get_write_buffer_size() > MAX_STREAM_BUFFER_BYTES:
            self.abort()  # the client stopped reading

    def write_framed(self, data: bytes) -> None:
        """Write bytes that are already HTTP/1.1 chunks (see ``StreamEncoder.framed_tokens``)."""
        transport = self._transport
        if not self.writable or transport is None:
            return
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_STREAM_BUFFER_BYTES:
            self.abort()

    def end_stream(self, last: bytes = b"") -> None:
        if not self.writable:
            return
        assert self._transport is not None
        tail = b"%x\r\n%b\r\n0\r\n\r\n" % (len(last), last) if last else b"0\r\n\r\n"
        self._transport.write(tail)
        self._done()

    def _done(self) -> None:
        self.on_disconnect = None
        if not self._keep_alive:
            self.close()
            return
        self._busy = False
        if self._buf:
            asyncio.get_running_loop().call_soon(self._parse)

    @property
    def writable(self) -> bool:
        return not (self.closed or self._closing) and self._transport is not None

    def close(self) -> None:
        if self.writable:
            self._closing = True
            assert self._transport is not None
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection without a proper end (a crash or a fault)."""
        if self.writable:
            self._closing = True
            assert self._transport is not None
            self._transport.abort()
