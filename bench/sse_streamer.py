"""A raw-asyncio OpenAI-ish backend that is never the bottleneck of a proxy benchmark.

HTTP/1.1 keep-alive on uvloop, no framework: ``GET /health`` → 200;
``POST`` with ``"stream": true`` in the body → ``--chunks`` SSE events (one
``transport.write`` each, chunked encoding) then ``data: [DONE]``; other
``POST`` → a canned ``chat.completion`` with ``usage``. About 3 µs of CPU per
event (tools.md §2), a third of what an aiohttp backend costs.

Usage: ``python bench/sse_streamer.py --ports 0 0 --chunks 100``; prints one
``listening PORT`` line per port, then serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from typing import cast

import uvloop

_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
_STREAM = re.compile(rb'"stream"\s*:\s*true')
_CANNED = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"fake-model",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13}}'
)
_JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
_SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _events(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        event = (
            b'data: {"id":"c","object":"chat.completion.chunk","model":"fake-model",'
            b'"choices":[{"index":0,"delta":{"content":"tok%d "},"finish_reason":null}]}\n\n' % i
        )
        out.append(_chunk(event))
    usage = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":%d}}\n\n' % n
    out.append(_chunk(usage))
    out.append(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    return out


class _Protocol(asyncio.Protocol):
    def __init__(self, events: list[bytes]) -> None:
        self._events = events
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            match = _CONTENT_LENGTH.search(self._buffer, 0, end + 2)
            length = int(match.group(1)) if match else 0
            if len(self._buffer) < end + 4 + length:
                return
            head = self._buffer[:end]
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            self._respond(head, body)

    def _respond(self, head: bytes, body: bytes) -> None:
        transport = self._transport
        assert transport is not None
        if head.startswith(b"GET"):
            transport.write(_JSON_HEAD % 2 + b"{}")
        elif _STREAM.search(body):
            transport.write(_SSE_HEAD)
            for event in self._events:
                transport.write(event)
        else:
            transport.write(_JSON_HEAD % len(_CANNED) + _CANNED)


async def _main(ports: list[int], chunks: int) -> None:
    loop = asyncio.get_running_loop()
    events = _events(chunks)
    servers = []
    for port in ports:
        server = await loop.create_server(lambda: _Protocol(events), "127.0.0.1", port, backlog=4096)
        servers.append(server)
        print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, nargs="+", default=[0])
    parser.add_argument("--chunks", type=int, default=100)
    args = parser.parse_args()
    uvloop.run(_main(args.ports, args.chunks))


if __name__ == "__main__":
    main()
