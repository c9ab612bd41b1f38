"""A controllable fake OpenAI-compatible backend for integration tests (aiohttp, 127.0.0.1:0).

Behaviour per request, chosen by the ``x-fake-mode`` request header (the
proxy forwards custom headers) or else by ``FakeBackend.mode``; default:
``stream`` when the body asks for it, else ``json``.

- ``json``: a ``chat.completion`` (or ``text_completion`` / embeddings list) with ``usage``.
- ``stream``: ``x-fake-chunks`` (default 5) content chunks, a usage chunk when
  ``stream_options.include_usage``, then ``[DONE]``. With ``x-fake-hold-after: k``
  the stream pauses after k chunks until ``release`` is set.
- ``hold``: waits for ``release`` before answering (pins a request before its first byte).
- ``status:NNN``: answers NNN with an OpenAI error body (and ``Retry-After`` for 429).
- ``garbage``: writes bytes that are not HTTP, then closes.
- ``close_mid_stream``: sends ``x-fake-chunks`` chunks, then drops the connection.
- ``never``: accepts the request and never answers.
- ``refuse``: closes the connection without answering.

``GET /v1/models`` lists ``models`` (or answers ``models_body`` verbatim when set) and
counts ``models_requests``. ``GET /metrics`` answers ``metrics_text`` (404 while it is ``None``); with
``metrics_held`` set it waits for ``metrics_release`` first (a slow scrape);
``metrics_scrapes`` counts the requests received.

It records every request (path, headers, raw body) and counts handlers that
are in progress, finished, and cancelled (the proxy dropped the connection);
``wait_until(predicate)`` waits on a condition with a deadline instead of sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web
from multidict import CIMultiDict

MODE_HEADER = "x-fake-mode"


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: CIMultiDict[str]
    body: bytes
    query: str = ""


class FakeBackend:
    def __init__(self, name: str = "fake", models: tuple[str, ...] = ("m1",)) -> None:
        self.name = name
        self.models = models
        self.mode: str | None = None
        self.health_status = 200
        self.release = asyncio.Event()
        self.requests: list[Recorded] = []
        self.in_progress = 0
        self.finished = 0
        self.cancelled = 0
        self.models_body: bytes | None = None
        self.models_requests = 0
        self.metrics_text: str | None = None
        self.metrics_held = False
        self.metrics_release = asyncio.Event()
        self.metrics_scrapes = 0
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeBackend:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        self.release.set()
        self.metrics_release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def _notify(self) -> None:
        for predicate, future in self._waiters:
            if not future.done() and predicate():
                future.set_result(None)
        self._waiters = [(p, f) for p, f in self._waiters if not f.done()]

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (re-checked on every state change); fail after the deadline."""
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        async with asyncio.timeout(timeout_s):
            await future

    def received(self, n: int) -> Callable[[], bool]:
        return lambda: len(self.requests) >= n

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, status=self.health_status)

    async def _models(self, request: web.Request) -> web.Response:
        self.models_requests += 1
        if self.models_body is not None:
            return web.Response(body=self.models_body, content_type="application/json")
        return web.json_response(
            {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metrics_scrapes += 1
        self._notify()
        if self.metrics_held:
            await self.metrics_release.wait()
        if self.metrics_text is None:
            raise web.HTTPNotFound()
        return web.Response(text=self.metrics_text, content_type="text/plain")

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(request.path, CIMultiDict(request.headers), body, request.rel_url.raw_query_string)
        )
        self.in_progress += 1
        self._notify()
        try:
            response = await self._behave(request, body)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_progress -= 1
            self.finished += 1
            self._notify()
        return response

    async def _behave(self, request: web.Request, body: bytes) -> web.StreamResponse:
        parsed = orjson.loads(body) if body else {}
        mode = request.headers.get(MODE_HEADER) or self.mode
        if mode is None:
            mode = "stream" if parsed.get("stream") is True else "json"
        if mode == "hold":
            await self.release.wait()
            mode = "stream" if parsed.get("stream") is True else "json"
        if mode == "never":
            await asyncio.Event().wait()
        if mode.startswith("status:"):
            return _error(int(mode.split(":", 1)[1]))
        if mode in ("garbage", "refuse"):
            transport = request.transport
            assert transport is not None
            if mode == "garbage":
                transport.write(b"this is not HTTP at all\r\n\r\n")
            transport.close()
            return web.Response()
        if mode in ("stream", "close_mid_stream"):
            return await self._stream(request, parsed, close_early=mode == "close_mid_stream")
        return web.json_response(_completion(request.path, parsed, self.name))

    async def _stream(self, request: web.Request, parsed: dict, close_early: bool) -> web.StreamResponse:
        chunks = int(request.headers.get("x-fake-chunks", "5"))
        hold_after = request.headers.get("x-fake-hold-after")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "x-backend": self.name})
        await response.prepare(request)
        for i in range(chunks):
            if hold_after is not None and i == int(hold_after):
                await self.release.wait()
            await response.write(_sse({"object": "chat.completion.chunk", "choices": [_delta(f"tok{i} ")]}))
        if close_early:
            assert request.transport is not None
            request.transport.abort()
            return response
        options = parsed.get("stream_options") or {}
        if options.get("include_usage"):
            usage = {"prompt_tokens": 7, "completion_tokens": chunks, "total_tokens": 7 + chunks}
            await response.write(_sse({"object": "chat.completion.chunk", "choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _sse(payload: dict) -> bytes:
    return b"data: " + orjson.dumps({"id": "cmpl-1", "model": "m1", **payload}) + b"\n\n"


def _delta(text: str) -> dict:
    return {"index": 0, "delta": {"content": text}, "finish_reason": None}


def _error(status: int) -> web.Response:
    body = {
        "error": {"message": f"fake {status}", "type": "server_error", "code": str(status), "param": None}
    }
    headers = {"Retry-After": "1"} if status == 429 else None
    return web.json_response(body, status=status, headers=headers)


def _completion(path: str, parsed: dict, name: str) -> dict:
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    if path.endswith("/embeddings"):
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "model": parsed.get("model"),
            "usage": {"prompt_tokens": 7, "total_tokens": 7},
        }
    if path.endswith("/completions") and not path.endswith("/chat/completions"):
        choice = {"index": 0, "text": "hi there", "finish_reason": "stop", "logprobs": None}
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": parsed.get("model"),
            "choices": [choice],
            "usage": usage,
            "served_by": name,
        }
    message = {"role": "assistant", "content": f"hello from {name}"}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": parsed.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage,
    }
