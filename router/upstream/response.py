"""An upstream HTTP/1.1 response: head parsing and body de-framing, fed by the connection's protocol.

Why not aiohttp's client: measured on this machine, ``ClientSession.post``
plus ``read`` costs ~65 µs of CPU per small request, a quarter of Sluice's
whole budget; a protocol that parses the head once and hands body bytes
straight to the relay costs ~10 µs (bench/overhead.py measures the result).

Framing (RFC 9112 §6.3): no body for 1xx/204/304; ``Transfer-Encoding:
chunked`` is de-chunked here (size lines, extensions and trailers skipped);
else ``Content-Length``; else the body runs to connection close. Everything
a single ``data_received`` call carries is delivered as one chunk, so a relay
writes once per network read, never once per HTTP chunk.

Flow control: above ``HIGH_WATER_BYTES`` of unread body the transport stops
reading; it resumes once the reader drains below ``LOW_WATER_BYTES``.
"""

from __future__ import annotations

import asyncio
from collections import deque

from multidict import CIMultiDict, CIMultiDictProxy

MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE_BYTES = 1024
HIGH_WATER_BYTES = 256 * 1024
LOW_WATER_BYTES = 64 * 1024
_LENGTH, _CHUNKED, _UNTIL_CLOSE, _NONE = range(4)


class UpstreamProtocolError(Exception):
    """The backend sent something that is not a valid HTTP/1.1 response."""


class UpstreamClosed(Exception):
    """The connection ended before the response was complete."""


# What ``bytes.strip()`` removes; ``str.strip()`` also removes \x1c-\x1f, so the text path names them.
_BYTES_WHITESPACE = " \t\n\r\x0b\x0c"


def parse_head(head: bytes) -> tuple[int, str, CIMultiDict[str]]:
    """Status, reason and headers of a response head (without its final blank line).

    An ASCII head (every real backend's) is decoded once and split as text; anything the text path
    does not accept as valid goes through ``_parse_head_bytes``, which decides and names the error.
    Both give the same result for a valid ASCII head (tests/unit/test_upstream_client.py).
    """
    if head.isascii():
        parsed = _parse_ascii_head(head.decode("ascii"))
        if parsed is not None:
            return parsed
    return _parse_head_bytes(head)


def _parse_ascii_head(text: str) -> tuple[int, str, CIMultiDict[str]] | None:
    """``_parse_head_bytes`` for a valid ASCII head (~2x faster: one decode, one multidict build);
    None for anything it would reject."""
    lines = text.split("\r\n")
    separators = len(lines) - 1
    if text.count("\n") != separators or text.count("\r") != separators:
        return None  # a bare CR or LF inside a line
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        return None
    status = int(parts[1])
    if not 100 <= status <= 599:
        return None
    pairs = []
    whitespace = _BYTES_WHITESPACE
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip(whitespace):
            return None
        pairs.append((name, value.strip(whitespace)))
    return status, parts[2] if len(parts) == 3 else "", CIMultiDict(pairs)


def _parse_head_bytes(head: bytes) -> tuple[int, str, CIMultiDict[str]]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise UpstreamProtocolError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    if not 100 <= status <= 599:
        raise UpstreamProtocolError(f"bad status code {status}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or b"\n" in line or b"\r" in line:
            raise UpstreamProtocolError(f"bad header line {line[:80]!r}")  # incl. bare CR/LF smuggling
        headers.add(name.decode("latin-1"), value.strip().decode("utf-8", "surrogateescape"))
    reason = parts[2].decode("latin-1") if len(parts) == 3 else ""
    return status, reason, headers


class UpstreamResponse:
    """Status and headers are set at creation; the body arrives through ``feed``."""

    __slots__ = (
        "_buffered",
        "_chunk_left",
        "_chunks",
        "_exc",
        "_framing",
        "_in_trailers",
        "_loop",
        "_need_crlf",
        "_partial",
        "_paused",
        "_remaining",
        "_transport",
        "_waiter",
        "content_type",
        "done",
        "headers",
        "keep_alive",
        "reason",
        "status",
    )

    def __init__(
        self,
        status: int,
        reason: str,
        headers: CIMultiDict[str],
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """``loop``: the connection's (default: the running loop, found at the first wait), kept to make
        waiting futures without ``asyncio.get_running_loop()``, a system call on CPython 3.11."""
        self.status = status
        self.reason = reason
        self.headers = CIMultiDictProxy(headers)
        self.content_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        self.keep_alive = "close" not in headers.get("Connection", "").lower()
        self._transport = transport
        self._loop = loop
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._exc: BaseException | None = None
        self.done = False
        self._partial = b""
        self._chunk_left = 0
        self._need_crlf = False
        self._in_trailers = False
        self._remaining = 0
        self._framing = self._framing_of(headers)

    def _framing_of(self, headers: CIMultiDict[str]) -> int:
        if self.status < 200 or self.status in (204, 304):
            return _NONE
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return _CHUNKED
        length = headers.get("Content-Length")
        if length is not None:
            if not length.strip().isdigit():
                raise UpstreamProtocolError(f"bad Content-Length {length[:40]!r}")
            self._remaining = int(length)
            return _LENGTH if self._remaining else _NONE
        self.keep_alive = False
        return _UNTIL_CLOSE

    def start(self, rest: bytes) -> None:
        """Called once after the head: finish a bodiless response or feed the bytes that followed it."""
        if self._framing == _NONE:
            self._finish(leftover=bool(rest))
        elif rest:
            self.feed(rest)

    # -- producer side (the protocol) --------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self.done:
            self.keep_alive = False  # bytes after the end of a response: never reuse this connection
            return
        framing = self._framing
        if framing == _CHUNKED:
            self._feed_chunked(data)
        elif framing == _LENGTH:
            if len(data) >= self._remaining:
                extra = len(data) > self._remaining
                self._deliver(data[: self._remaining] if extra else data)
                self._remaining = 0
                self._finish(leftover=extra)
            else:
                self._remaining -= len(data)
                self._deliver(data)
        else:
            self._deliver(data)

    def _feed_chunked(self, data: bytes) -> None:
        if self._partial:
            data = self._partial + data
            self._partial = b""
        pos, end = 0, len(data)
        out: list[bytes] = []
        finished = False
        while pos < end:
            if self._chunk_left:
                take = min(self._chunk_left, end - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._chunk_left -= take
                self._need_crlf = self._chunk_left == 0
                continue
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                self._partial = data[pos:]
                if len(self._partial) > MAX_CHUNK_LINE_BYTES:
                    raise UpstreamProtocolError("chunk size line too long")
                break
            line = data[pos:eol]
            pos = eol + 2
            if self._need_crlf:
                if line:
                    raise UpstreamProtocolError("missing CRLF after chunk data")
                self._need_crlf = False
            elif self._in_trailers:
                if not line:
                    finished = True
                    break
            else:
                self._chunk_left = _chunk_size(line)
                self._in_trailers = self._chunk_left == 0
        if out:
            self._deliver(out[0] if len(out) == 1 else b"".join(out))
        if finished:
            self._finish(leftover=pos < end)

    def _deliver(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER_BYTES and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def _finish(self, leftover: bool) -> None:
        self.done = True
        if leftover:
            self.keep_alive = False
        self._wake()

    def connection_lost(self) -> None:
        if self.done:
            return
        if self._framing == _UNTIL_CLOSE:
            self._finish(leftover=False)
            return
        self._exc = UpstreamClosed("the backend closed the connection before the end of the response")
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self._exc = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- consumer side (the relay) -----------------------------------------------------------

    def abort(self) -> None:
        """Drop the connection now (client gone, timeout): the backend sees it close and stops."""
        if not self.done:
            self._transport.abort()

    async def readany(self) -> bytes:
        """The next body bytes as received; ``b""`` at the end; raises if the body was cut short."""
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                self._buffered -= len(data)
                if self._paused and self._buffered < LOW_WATER_BYTES:
                    self._paused = False
                    self._transport.resume_reading()
                return data
            if self._exc is not None:
                raise self._exc
            if self.done:
                return b""
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            await self._waiter

    def read_complete(self) -> bytes | None:
        """The whole body if it has all arrived without error (a small answer comes with its head),
        else None (then ``await read()``): no coroutine to create and run for the common case."""
        if not self.done or self._exc is not None:
            return None
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            self._transport.resume_reading()
        return data

    async def read(self) -> bytes:
        parts: list[bytes] = []
        while True:
            data = await self.readany()
            if not data:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            parts.append(data)


def _chunk_size(line: bytes) -> int:
    size = line.split(b";", 1)[0].strip()
    try:
        value = int(size, 16)
    except ValueError:
        raise UpstreamProtocolError(f"bad chunk size {size[:20]!r}") from None
    if value < 0:
        raise UpstreamProtocolError("negative chunk size")
    return value
