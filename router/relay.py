"""Relaying a backend's answer to the client, as the bytes the backend sent.

Non-streamed answers: the body is read whole and sent with the backend's
status and headers (minus hop-by-hop ones) plus Sluice's headers. Streams
(``text/event-stream``, or a body of unknown length answering a request with
``"stream": true``): headers go to the client at once, then every chunk is
written as soon as it is read — no buffering, no re-framing of
events. ``StreamTally`` only counts events and keeps the tail for ``usage``.

Timeouts (``Watchdog``): ``first_byte_ms`` runs from sending the request to
the first body byte of a stream (to the response headers otherwise);
``idle_ms`` bounds every later gap. An upstream failure after the client got
the headers ends the stream with an SSE error event and a clean close; a
client that goes away closes the upstream response at once, so the backend
sees its connection drop and stops generating.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from multidict import CIMultiDict

from core.errors import (
    BackendBadResponse,
    BackendFailedMidStream,
    BackendTimeout,
    SluiceError,
    sse_error_event,
)
from router.context import ProxyContext
from router.exchange import Exchange
from router.hop_headers import client_response_headers
from router.sse import StreamTally, body_tail, find_usage
from router.upstream import UpstreamClosed, UpstreamProtocolError, UpstreamResponse
from router.watchdog import Watchdog
from state.inflight import InFlightGuard

EVENT_STREAM = "text/event-stream"


async def relay_body(
    ctx: ProxyContext, ex: Exchange, guard: InFlightGuard, watchdog: Watchdog, resp: UpstreamResponse
) -> web.Response:
    data = resp.read_complete()  # a small body came with the head: no wait, so no idle timer either
    if data is None:
        data = await _read_body(ctx, guard, watchdog, resp)
    ex.status = resp.status
    ex.last_byte_s = ctx.clock.now_s()
    if resp.status < 300:
        usage = find_usage(body_tail(data))
        ex.usage = usage
        if usage is not None and usage.completion_tokens is not None:
            ex.output_tokens = usage.completion_tokens
    return web.Response(body=data, status=resp.status, headers=_response_headers(resp, ex))


async def _read_body(
    ctx: ProxyContext, guard: InFlightGuard, watchdog: Watchdog, resp: UpstreamResponse
) -> bytes:
    """The rest of a body still arriving, under the idle timeout."""
    if not resp.done:
        watchdog.push(ctx.idle_s)
    try:
        return await resp.read()
    except asyncio.CancelledError:
        if watchdog.expired():
            ctx.metrics.upstream_errors.labels(guard.backend_id, "timeout").inc()
            raise BackendTimeout(
                f"backend {guard.backend_id} stalled for {ctx.idle_s:g} s while sending its response"
            ) from None
        raise
    except (UpstreamClosed, UpstreamProtocolError):
        guard.failed()
        ctx.metrics.upstream_errors.labels(guard.backend_id, "bad_response").inc()
        raise BackendBadResponse(
            f"backend {guard.backend_id} closed the connection before the end of its response"
        ) from None


def _response_headers(resp: UpstreamResponse, ex: Exchange) -> CIMultiDict[str]:
    """The backend's end-to-end headers, then Sluice's own (``x-request-id``, ``x-sluice-*``), which
    replace any the backend sent under the same names (in place)."""
    out = client_response_headers(resp.headers)
    out.update(ex.response_headers())
    return out


async def relay_stream(
    ctx: ProxyContext,
    request: web.Request,
    ex: Exchange,
    guard: InFlightGuard,
    watchdog: Watchdog,
    resp: UpstreamResponse,
) -> web.StreamResponse:
    stream = web.StreamResponse(status=resp.status, headers=_response_headers(resp, ex))
    ex.status = resp.status
    ex.streamed = True
    tally = StreamTally()
    failure: SluiceError | None = None
    try:
        await stream.prepare(request)
        failure = await _pump(ctx, ex, guard, watchdog, resp, stream, tally)
    except asyncio.CancelledError:
        if not watchdog.expired():
            resp.abort()  # the client went away: drop the backend connection now
            ex.cancelled = True
            raise
        transport = request.transport
        if transport is not None and transport.get_write_buffer_size() > 0:
            return _client_stalled(request, ex, resp, stream)  # it was the client not reading
        ctx.metrics.upstream_errors.labels(guard.backend_id, "timeout").inc()
        failure = BackendTimeout(f"backend {guard.backend_id} sent nothing for {ctx.idle_s:g} s mid-stream")
    except ConnectionError:
        resp.abort()
        ex.cancelled = True
        return stream
    ex.last_byte_s = ctx.clock.now_s()
    ex.usage, ex.output_tokens = tally.summary()
    if failure is not None:
        ex.fail(failure)
        resp.abort()
        return await _end_with_error(ex, stream, failure)
    try:
        await stream.write_eof()
    except ConnectionError:
        ex.cancelled = True
    return stream


async def _pump(
    ctx: ProxyContext,
    ex: Exchange,
    guard: InFlightGuard,
    watchdog: Watchdog,
    resp: UpstreamResponse,
    stream: web.StreamResponse,
    tally: StreamTally,
) -> SluiceError | None:
    """Copy chunks until EOF; returns the upstream failure that ended the stream early, if any.

    A client write failure raises ``ConnectionError`` (aiohttp raises a
    ``ConnectionResetError`` subclass); an upstream read failure is returned.
    Upstream errors are never ``ConnectionError``s, so the two cannot be confused.
    """
    idle_s = ctx.idle_s
    try:
        chunk = await resp.readany()
    except (UpstreamClosed, UpstreamProtocolError):
        return _mid_stream(ctx, guard)
    if not chunk:
        return None
    guard.first_byte()
    ex.first_byte_s = ctx.clock.now_s()
    while chunk:
        tally.feed(chunk)
        await stream.write(chunk)
        watchdog.push(idle_s)
        try:
            chunk = await resp.readany()
        except (UpstreamClosed, UpstreamProtocolError):
            return _mid_stream(ctx, guard)
    return None


def _mid_stream(ctx: ProxyContext, guard: InFlightGuard) -> SluiceError:
    guard.failed()
    ctx.metrics.upstream_errors.labels(guard.backend_id, "mid_stream").inc()
    return BackendFailedMidStream(f"backend {guard.backend_id} failed in the middle of the stream")


async def _end_with_error(
    ex: Exchange, stream: web.StreamResponse, failure: SluiceError
) -> web.StreamResponse:
    try:
        await stream.write(sse_error_event(failure))
        await stream.write_eof()
    except ConnectionError:
        ex.cancelled = True
    return stream


def _client_stalled(
    request: web.Request,
    ex: Exchange,
    resp: UpstreamResponse,
    stream: web.StreamResponse,
) -> web.StreamResponse:
    resp.abort()
    ex.cancelled = True
    if request.transport is not None:
        request.transport.close()
    return stream
