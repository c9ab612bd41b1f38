"""``GET /debug/decisions``: the engine's recent routing decisions, newest first, as JSON.

Operators ask "why did this request go there?" after the fact; the answer is
the decision log the ``DecisionEngine`` keeps anyway (a bounded ring buffer,
``decision.explain``), so serving it costs nothing on the request path.
Query parameters: ``limit`` (1..the buffer's capacity, default 100),
``request_id`` (only that request's decisions, e.g. from ``x-request-id``),
``top_n`` (ranked backends shown per decision, 1..64, default 5). A decider
without a decision log (a custom one) answers 404. Disabled entirely with
``listen.debug_endpoints: false``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from core.errors import InvalidParameter, RouteNotFound
from decision.explain import DecisionLog
from router.context import ProxyContext
from router.errors import JSON_CONTENT_TYPE, error_response

DEFAULT_LIMIT = 100
MAX_TOP_N = 64

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidParameter(f"{name} must be an integer from {low} to {high}", param=name)
    return value


def decisions_handler(ctx: ProxyContext) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        log = getattr(ctx.decider, "decisions", None)
        if not isinstance(log, DecisionLog):
            return error_response(RouteNotFound("this decider keeps no decision log"))
        try:
            limit = _int_param(request, "limit", min(DEFAULT_LIMIT, log.capacity), 1, log.capacity)
            top_n = _int_param(request, "top_n", 5, 1, MAX_TOP_N)
        except InvalidParameter as error:
            return error_response(error)
        records = log.recent(limit=limit, request_id=request.query.get("request_id"), top_n=top_n)
        body = {"capacity": log.capacity, "count": len(records), "decisions": records}
        return web.Response(body=orjson.dumps(body), content_type=JSON_CONTENT_TYPE)

    return handle
