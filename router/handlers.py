"""HTTP handlers: the three proxied OpenAI endpoints, models, probes, metrics, and the fallbacks.

A proxied request: intake (``router.intake``) → route (``SluiceConfig.route_for``)
→ ``RequestFeatures`` → admission (``router.admission``) → ``Decider.route``
→ ``router.proxy.forward``. Every ``SluiceError`` raised on the way becomes
its OpenAI error answer with ``x-sluice-error-code``; any other exception is
logged with the request id and answered 500 ``internal_error`` without
details. ``router.exchange.finish`` runs in every path, client cancellation
included (the ``CancelledError`` is re-raised after it).

``/health`` is liveness (the process answers). ``/ready`` is 200 when every
configured model has at least one READY backend, else 503
``no_healthy_backend`` naming the models without one. Unknown paths get 404
``not_found``; a known path with the wrong method 405 ``method_not_allowed``
with ``Allow``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from core import headers
from core.errors import (
    InternalError,
    MethodNotAllowed,
    NoHealthyBackend,
    Rejected,
    RouteNotFound,
    SluiceError,
    UnknownModel,
)
from core.features import build_features, client_retry_count
from core.types import Endpoint
from router.admission import admit, wait_in_room
from router.context import ProxyContext
from router.errors import JSON_CONTENT_TYPE, error_response
from router.exchange import Exchange, finish
from router.intake import (
    check_content_type,
    check_declared_length,
    identity_from,
    parse_json_object,
    read_body,
    requested_model,
    session_key_from,
    valid_request_id,
)
from router.metrics import NONE_LABEL
from router.proxy import forward

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROXIED_PATHS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint.CHAT,
    "/v1/completions": Endpoint.COMPLETIONS,
    "/v1/embeddings": Endpoint.EMBEDDINGS,
}
log = logging.getLogger("sluice.router")


def proxied_handler(ctx: ProxyContext, path: str, endpoint: Endpoint) -> Handler:
    """``serve_proxied`` bound to its context and endpoint (a partial, not a wrapping coroutine:
    one coroutine frame less to create and to resume on every request)."""
    return functools.partial(serve_proxied, ctx, path=path, endpoint=endpoint)


async def serve_proxied(
    ctx: ProxyContext, request: web.Request, *, path: str, endpoint: Endpoint
) -> web.StreamResponse:
    request_id = valid_request_id(request.headers.get(headers.REQUEST_ID)) or ctx.request_ids.next()
    ex = Exchange(request_id, ctx.clock.now_s())
    try:
        return await _proxied(ctx, request, ex, path, endpoint)
    except SluiceError as err:
        ex.fail(err)
        if isinstance(err, Rejected):
            shed_class = ex.features.priority if ex.features is not None else NONE_LABEL
            ctx.metrics.shed.labels(ex.route, err.reason, shed_class).inc()
        return error_response(err, ex.response_headers())
    except asyncio.CancelledError:
        ex.cancelled = True
        raise
    except Exception:
        log.exception("request %s failed inside Sluice", request_id)
        internal = InternalError(f"internal error in Sluice (request id {request_id})")
        ex.fail(internal)
        return error_response(internal, ex.response_headers())
    finally:
        finish(ex, ctx.metrics, ctx.fleet, ctx.decider, ctx.clock)
        ctx.room().schedule_pump()  # the outcome may have moved a concurrency limit


async def _proxied(
    ctx: ProxyContext, request: web.Request, ex: Exchange, path: str, endpoint: Endpoint
) -> web.StreamResponse:
    config = ctx.config
    limits = config.limits
    req_headers = request.headers
    check_declared_length(request.content_length, limits.max_body_bytes)
    check_content_type(req_headers.get("Content-Type"))
    body = await read_body(request.content, limits.max_body_bytes, limits.body_read_timeout_s)
    parsed = parse_json_object(body)
    model = requested_model(parsed, ctx.known_models)
    ex.model = model
    route = config.route_for(path, model, req_headers)
    ex.route = route.name
    tenant, priority = identity_from(req_headers, route.priority, config)
    features = build_features(
        request_id=ex.request_id,
        endpoint=endpoint,
        body=parsed,
        route=route.name,
        tenant=tenant,
        priority=priority,
        arrival_s=ex.arrival_s,
        session_key=session_key_from(req_headers.get(headers.SESSION), parsed),
        client_retry_count=client_retry_count(req_headers.get(headers.CLIENT_RETRY_COUNT)),
    )
    ex.features = features
    snapshot, queued = admit(features, ctx.fleet, ctx.decider, limits.max_in_flight)
    if queued is not None:
        snapshot = await wait_in_room(features, queued, ctx.fleet, ctx.decider, ctx.clock, ctx.room())
    decision = ctx.decider.route(features, snapshot)
    ex.policy = decision.policy
    if not decision.ranked:
        raise NoHealthyBackend(decision.reason or f"no healthy backend serves model {model!r}")
    ctx.metrics.queue(route.name).observe(ctx.clock.now_s() - ex.arrival_s)
    return await forward(ctx, request, ex, body, features, decision)


def models_handler(ctx: ProxyContext) -> Handler:
    """The configured models, described by the backends' own ``/v1/models`` (``router.backend_models``)."""
    models = ctx.backend_models

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(body=models.listing(), content_type=JSON_CONTENT_TYPE)

    return handle


def model_handler(ctx: ProxyContext) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        described = ctx.backend_models.model(model)
        if described is None:
            return error_response(UnknownModel(f"The model `{model[:100]}` does not exist", param="model"))
        return web.Response(body=orjson.dumps(described), content_type=JSON_CONTENT_TYPE)

    return handle


async def health(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b'{"status":"ok"}', content_type=JSON_CONTENT_TYPE)


def ready_handler(ctx: ProxyContext) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        snapshot = ctx.fleet.snapshot()
        ready = {model: len(snapshot.serving(model)) for model in ctx.config.models}
        missing = [model for model, n in ready.items() if n == 0]
        if missing:
            return error_response(NoHealthyBackend(f"no healthy backend for model(s): {', '.join(missing)}"))
        return web.Response(
            body=orjson.dumps({"status": "ready", "ready_backends": ready}), content_type=JSON_CONTENT_TYPE
        )

    return handle


def metrics_handler(ctx: ProxyContext) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(body=ctx.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle


def fallback_handler(allowed_methods: dict[str, tuple[str, ...]]) -> Handler:
    """404 for unknown paths, 405 (with ``Allow``) for a known path and the wrong method."""

    async def handle(request: web.Request) -> web.StreamResponse:
        allowed = allowed_methods.get(request.path)
        if allowed is not None:
            error: SluiceError = MethodNotAllowed(
                f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}"
            )
            return error_response(error, {"Allow": ", ".join(allowed)})
        error = RouteNotFound(f"no route for {request.method} {request.path[:200]}")
        return error_response(error)

    return handle
