"""Forwarding one admitted, routed request: attempts, retries, passive health.

The request goes to ``decision.ranked[0]``; on a retryable failure it moves
to the next ranked backend, at most ``retries.max_per_request`` times and
only while the global ``RetryBudget`` allows. Retryable means nothing has
reached the client yet and either the connection failed (refused, reset,
connect timeout, closed before any answer) or the backend answered with a
status in ``retries.on_status`` (default 429, 502, 503). Timeouts and
garbage answers are not retried: the backend may be working on the request.
When no retry happens, a status answer is relayed to the client unchanged and
a connection failure becomes 502 ``upstream_connect_error``.

Every attempt holds an ``InFlightGuard`` and gives the circuit breaker its
verdict: a connection failure or a 5xx is a failure, any other answer a
success. ``Decider.on_routed`` is called for each backend the request is
committed to, including after a retry.

The body is sent as the client's bytes; headers minus hop-by-hop ones plus
``x-request-id``.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from core.errors import BackendBadResponse, BackendConnectError, BackendTimeout
from core.types import RequestFeatures, RoutingDecision
from router.context import ProxyContext
from router.exchange import Exchange
from router.hop_headers import upstream_request_headers
from router.relay import EVENT_STREAM, relay_body, relay_stream
from router.upstream import ConnectFailed, UpstreamProtocolError, UpstreamResponse
from router.watchdog import Watchdog
from state.inflight import InFlightGuard


async def forward(
    ctx: ProxyContext,
    request: web.Request,
    ex: Exchange,
    body: bytes,
    features: RequestFeatures,
    decision: RoutingDecision,
) -> web.StreamResponse:
    upstream_headers = upstream_request_headers(request.headers, ex.request_id)
    candidates = decision.ranked[: 1 + ctx.config.retries.max_per_request]
    ctx.retry_budget.record_request()
    ex.predicted_output_tokens = decision.predicted_output_tokens
    last = len(candidates) - 1
    for i, backend_id in enumerate(candidates):
        ex.backend_id = backend_id
        ex.predicted_ttft_ms = decision.predicted_ttft_ms if i == 0 else None
        ex.dispatched_s = ctx.clock.now_s()
        ctx.decider.on_routed(features, decision, backend_id)
        with ctx.fleet.acquire(
            backend_id, features.prompt_tokens, decision.predicted_output_tokens or 0.0
        ) as guard:
            retry_reason = await _attempt(ctx, request, ex, guard, body, upstream_headers, i < last)
        if not isinstance(retry_reason, str):  # not isinstance(_, StreamResponse): an ABC (MutableMapping)
            return retry_reason
        ctx.metrics.retries.labels(ex.route, retry_reason).inc()
    raise AssertionError("the last attempt never asks for a retry")


async def _attempt(
    ctx: ProxyContext,
    request: web.Request,
    ex: Exchange,
    guard: InFlightGuard,
    body: bytes,
    upstream_headers: list[tuple[str, str]],
    has_next: bool,
) -> web.StreamResponse | str:
    """Relay this backend's answer, or return a retry reason (only when a retry was granted)."""
    backend_id = guard.backend_id
    pool = ctx.upstream()
    loop = pool.loop
    watchdog = Watchdog(loop.time() + ctx.first_byte_s, ctx.watchdogs, loop)
    try:
        try:
            resp = await pool.request(
                ctx.origins[backend_id], "POST", request.raw_path, upstream_headers, body
            )
        except asyncio.CancelledError:
            if watchdog.expired():
                ctx.metrics.upstream_errors.labels(backend_id, "timeout").inc()
                raise BackendTimeout(
                    f"backend {backend_id} did not answer within {ctx.first_byte_s:g} s"
                ) from None
            raise
        except UpstreamProtocolError as exc:
            guard.failed()
            ctx.metrics.upstream_errors.labels(backend_id, "bad_response").inc()
            raise BackendBadResponse(f"backend {backend_id} sent an invalid HTTP response: {exc}") from None
        except (ConnectFailed, OSError) as exc:
            guard.failed()
            ctx.metrics.upstream_errors.labels(backend_id, "connect").inc()
            if _retry_granted(ctx, ex, has_next):
                return "connect_error"
            raise BackendConnectError(f"cannot reach backend {backend_id}: {_describe(exc)}") from None
        return await _answer(ctx, request, ex, guard, watchdog, resp, has_next)
    finally:
        watchdog.stop()


async def _answer(
    ctx: ProxyContext,
    request: web.Request,
    ex: Exchange,
    guard: InFlightGuard,
    watchdog: Watchdog,
    resp: UpstreamResponse,
    has_next: bool,
) -> web.StreamResponse | str:
    status = resp.status
    if status >= 500:
        guard.failed()
        ctx.metrics.upstream_errors.labels(guard.backend_id, "status_5xx").inc()
    else:
        guard.succeeded()
        if status == 429:
            ctx.metrics.upstream_errors.labels(guard.backend_id, "status_429").inc()
    try:
        if status in ctx.retry_statuses and _retry_granted(ctx, ex, has_next):
            return f"status_{status}"
        if _is_stream(resp, ex):
            return await relay_stream(ctx, request, ex, guard, watchdog, resp)
        ex.first_byte_s = ctx.clock.now_s()
        guard.first_byte()
        return await relay_body(ctx, ex, guard, watchdog, resp)
    finally:
        ctx.upstream().close_response(resp)  # back to the pool if read to the end, else aborted


def _is_stream(resp: UpstreamResponse, ex: Exchange) -> bool:
    """SSE, or any body of unknown length answering a streaming request: relay it chunk by chunk."""
    if resp.content_type == EVENT_STREAM:
        return True
    asked = ex.features is not None and ex.features.stream
    return asked and "Content-Length" not in resp.headers and resp.status < 300


def _retry_granted(ctx: ProxyContext, ex: Exchange, has_next: bool) -> bool:
    if not has_next:
        ctx.metrics.retries_denied.labels(ex.route, "no_more_backends").inc()
        return False
    if not ctx.retry_budget.try_spend():
        ctx.metrics.retries_denied.labels(ex.route, "budget").inc()
        return False
    return True


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
