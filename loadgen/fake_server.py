"""A scripted OpenAI-compatible streaming server for testing the load client and measuring its capacity.

Not a simulator (that is ``loadgen.sim``): it does exactly what its handler
says, as fast as asyncio can write, so client behaviour (TTFT/ITL arithmetic,
429 handling, disconnects, cancellation) can be checked deterministically and
the client's own ceiling measured without a slow server in the way. Raw
asyncio HTTP/1.1 with keep-alive and chunked transfer encoding; binds
127.0.0.1 (port 0 = ephemeral).

The default handler streams ``x-sim-output-tokens`` tokens (else
``max_tokens``, else 16): a role-only chunk, one chunk per token, a usage
chunk and ``[DONE]``, optionally ``itl_s`` apart. ``GET /v1/models`` answers 200.
Run standalone: ``python -m loadgen.fake_server --port 0`` prints
``{"port": N}`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from core import headers as hdr

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class FakeRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


class Responder:
    """Writes one HTTP response; a stream is ``start`` → ``event``… → ``finish``."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.started = False
        self.aborted = False

    def _head(self, status: int, headers: Mapping[str, str], extra: str) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()

    async def start(self, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        all_headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **(headers or {})}
        self._writer.write(self._head(status, all_headers, "Transfer-Encoding: chunked\r\n"))
        self.started = True
        await self._writer.drain()

    def event_bytes(self, payload: Mapping[str, Any] | str) -> bytes:
        data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
        chunk = b"data: " + data + b"\n\n"
        return f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"

    async def event(self, payload: Mapping[str, Any] | str) -> None:
        self._writer.write(self.event_bytes(payload))
        await self._writer.drain()

    async def raw(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def finish(self) -> None:
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()

    async def json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = orjson.dumps(payload)
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        self._writer.write(self._head(status, all_headers, f"Content-Length: {len(body)}\r\n") + body)
        self.started = True
        await self._writer.drain()

    def abort(self) -> None:
        """Drop the connection without finishing the response."""
        self.aborted = True
        self._writer.transport.abort()


Handler = Callable[[FakeRequest, Responder], Awaitable[None]]


def chat_chunk(
    text: str | None = None, role: str | None = None, usage: Mapping[str, int] | None = None
) -> Any:
    delta: dict[str, str] = {}
    if role is not None:
        delta["role"] = role
    if text is not None:
        delta["content"] = text
    chunk: dict[str, Any] = {"id": "fake", "object": "chat.completion.chunk", "choices": []}
    if role is not None or text is not None:
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
    if usage is not None:
        chunk["usage"] = dict(usage)
    return chunk


def requested_tokens(request: FakeRequest) -> int:
    header = request.headers.get(hdr.SIM_OUTPUT_TOKENS)
    if header is not None and header.isdigit():
        return int(header)
    body = request.body if isinstance(request.body, dict) else {}
    value = body.get("max_tokens")
    return value if isinstance(value, int) and value > 0 else 16


def token_streamer(itl_s: float = 0.0, coalesce: bool = False, backend: str = "fake-0") -> Handler:
    """The default handler: role chunk, one chunk per token ``itl_s`` apart, usage, ``[DONE]``."""

    async def handle(request: FakeRequest, reply: Responder) -> None:
        n = requested_tokens(request)
        await reply.start(headers={hdr.BACKEND: backend})
        events = [chat_chunk(role="assistant")] + [chat_chunk(text=" tok") for _ in range(n)]
        events += [
            chat_chunk(usage={"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}),
            "[DONE]",
        ]
        if coalesce or itl_s <= 0:
            await reply.raw(b"".join(reply.event_bytes(e) for e in events))
        else:
            for e in events:
                await reply.event(e)
                if isinstance(e, dict) and e["choices"] and "content" in e["choices"][0]["delta"]:
                    await asyncio.sleep(itl_s)
        await reply.finish()

    return handle


class FakeOpenAIServer:
    """``async with FakeOpenAIServer(handler) as server: server.url``."""

    def __init__(self, handler: Handler | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler or token_streamer()
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None
        self.requests_seen = 0
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def __aenter__(self) -> FakeOpenAIServer:
        self._server = await asyncio.start_server(self._serve, self._host, self._port, backlog=1024)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                reply = Responder(writer)
                if request.method == "GET" and request.path == "/v1/models":
                    await reply.json(
                        200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}
                    )
                    continue
                self.requests_seen += 1
                await self.handler(request, reply)
                if reply.aborted:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, RuntimeError):
            # The client went away (uvloop raises RuntimeError on writes to a closed transport).
            pass
        finally:
            self._connections.discard(task)
            with contextlib.suppress(Exception):
                writer.close()


async def _read_request(reader: asyncio.StreamReader) -> FakeRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    raw = await reader.readexactly(length) if length else b""
    body = orjson.loads(raw) if raw else None
    return FakeRequest(method, path, headers, body)


async def _main(port: int, itl_s: float, coalesce: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with FakeOpenAIServer(token_streamer(itl_s, coalesce), port=port) as server:
        sys.stdout.write(orjson.dumps({"port": server.port}).decode() + "\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--itl-ms", type=float, default=0.0, help="gap between token chunks")
    parser.add_argument("--coalesce", action="store_true", help="write the whole stream at once")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(_main(args.port, args.itl_ms / 1000.0, args.coalesce))


if __name__ == "__main__":
    main()
