"""The aiohttp application: routes, the shared upstream session, background health checks.

``build_app`` wires one ``FleetState``, one ``Decider`` (the
``DecisionEngine`` built from the config unless one is injected), the
metrics and the handlers. ``cleanup_ctx`` creates the one upstream
``ClientSession`` (and closes it last), runs the health checker and the
engine-metrics collector (``state.engine_metrics``: every backend's
``/metrics`` into ``FleetState.update_engine_metrics``, its per-backend scrape
record into ``sluice_engine_metrics_scrape_failures_total``) and, when
``predictors.refit.enabled``, the length model's background refit
(``router.length_refit``, a worker process). A backend whose
metrics are missing or stale is still routed, on Sluice's own accounting.

Proxied requests go through ``router.upstream.UpstreamPool`` (Sluice's own
keep-alive HTTP/1.1 client: bytes and headers pass unchanged, no total
timeout — first-byte and idle timeouts are per attempt, see
``router.watchdog`` — no connection limit, idle connections dropped after
``UPSTREAM_KEEPALIVE_S``, below the 5 s uvicorn default of vLLM and SGLang).
The one ``aiohttp.ClientSession`` serves background work (health checks and
the backends' ``/v1/models``): ``ClientTimeout(total=None, sock_connect=…)``
and no cookie jar. The collector has its own session, so a slow health check
never delays a scrape.

``start_server`` runs the app with ``handler_cancellation=True``: a client
that disconnects cancels its handler, which is how an upstream request is
dropped the moment its client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from core.clock import Clock, MonotonicClock
from core.config import LoadedConfig
from core.protocols import Decider
from decision.engine import DecisionEngine
from predictors import Predictor
from router.context import ProxyContext, build_context
from router.debug import decisions_handler
from router.handlers import (
    PROXIED_PATHS,
    fallback_handler,
    health,
    metrics_handler,
    model_handler,
    models_handler,
    proxied_handler,
    ready_handler,
)
from router.health import HealthChecker
from router.length_refit import LengthRefitter, refit_context
from router.upstream import UpstreamPool
from router.waiting_room import PUMP_TICK_S, AsyncWaitingRoom
from router.watchdog import WatchdogTimer
from state.engine_metrics import EngineMetricsCollector
from state.fleet import FleetState

CONTEXT = web.AppKey("sluice_context", ProxyContext)
HEALTH = web.AppKey("sluice_health", HealthChecker)
ENGINE_METRICS = web.AppKey("sluice_engine_metrics", EngineMetricsCollector)
PREDICTOR = web.AppKey("sluice_predictor", Predictor)
REFITTER = web.AppKey("sluice_length_refitter", LengthRefitter)
UPSTREAM_KEEPALIVE_S = 4.0
log = logging.getLogger("sluice.router")


def build_app(
    loaded: LoadedConfig,
    *,
    clock: Clock | None = None,
    decider: Decider | None = None,
    rng: random.Random | None = None,
) -> web.Application:
    clock = clock or MonotonicClock()
    config = loaded.config
    fleet = FleetState(config, clock)
    predictor: Predictor | None = None
    if decider is None:
        if config.predictors.enabled and config.predictors.refit.enabled:
            predictor = Predictor.from_config(config.predictors)  # the refit needs a handle on it
        decider = DecisionEngine.from_config(loaded, clock, rng or random.Random(), predictor=predictor)
    ctx = build_context(config, fleet, decider, clock)
    app = web.Application()
    app[CONTEXT] = ctx
    if predictor is not None:
        app[PREDICTOR] = predictor
    app.cleanup_ctx.append(_upstream_session)
    app.cleanup_ctx.append(_health_checks)
    app.cleanup_ctx.append(_waiting_room_tick)
    app.cleanup_ctx.append(_engine_metrics)
    app.cleanup_ctx.append(_length_refit)
    _add_routes(app, ctx)
    return app


def _add_routes(app: web.Application, ctx: ProxyContext) -> None:
    router = app.router
    allowed: dict[str, tuple[str, ...]] = {}
    for path, endpoint in PROXIED_PATHS.items():
        router.add_post(path, proxied_handler(ctx, path, endpoint))
        allowed[path] = ("POST",)
    gets = {
        "/v1/models": models_handler(ctx),
        "/health": health,
        "/ready": ready_handler(ctx),
        "/metrics": metrics_handler(ctx),
    }
    for path, handler in gets.items():
        router.add_get(path, handler)
        allowed[path] = ("GET", "HEAD")
    if ctx.config.listen.debug_endpoints:
        router.add_get("/debug/decisions", decisions_handler(ctx))
        allowed["/debug/decisions"] = ("GET", "HEAD")
    router.add_get("/v1/models/{model}", model_handler(ctx))
    router.add_route("*", "/{tail:.*}", fallback_handler(allowed))


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CONTEXT]
    ctx.pool = UpstreamPool(ctx.connect_s, UPSTREAM_KEEPALIVE_S)
    ctx.watchdogs = WatchdogTimer(ctx.pool.loop)
    ctx.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=UPSTREAM_KEEPALIVE_S),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=ctx.connect_s),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    try:
        yield
    finally:
        ctx.watchdogs.close()
        ctx.watchdogs = None
        ctx.pool.close()
        ctx.pool = None
        await ctx.session.close()
        ctx.session = None


async def _health_checks(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CONTEXT]
    checker = HealthChecker(ctx.config, ctx.fleet, ctx.client(), ctx.backend_models)
    app[HEALTH] = checker
    task = asyncio.create_task(checker.run(), name="sluice-health-checks")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _pump_every_tick(room: AsyncWaitingRoom) -> None:
    """Safety net: a concurrency limit may grow without any release event to wake the queue."""
    while True:
        await asyncio.sleep(PUMP_TICK_S)
        room.schedule_pump()


async def _waiting_room_tick(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_pump_every_tick(app[CONTEXT].room()), name="sluice-waiting-room-tick")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _engine_metrics(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CONTEXT]
    fleet = ctx.fleet
    collector = EngineMetricsCollector.from_config(ctx.config, fleet.update_engine_metrics, clock=ctx.clock)
    app[ENGINE_METRICS] = collector
    ctx.metrics.engine_scrapes = collector.status
    await collector.start()
    try:
        yield
    finally:
        await collector.stop()


async def start_server(
    app: web.Application, host: str, port: int, *, access_log: bool = False, shutdown_grace_s: float = 30.0
) -> tuple[web.AppRunner, str, int]:
    """Serve ``app``; returns the runner (``await runner.cleanup()`` stops it) and the bound address."""
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=logging.getLogger("sluice.access") if access_log else None,
        shutdown_timeout=shutdown_grace_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound = runner.addresses[0]
    return runner, str(bound[0]), int(bound[1])


async def _length_refit(app: web.Application) -> AsyncIterator[None]:
    """The guarded background refit of the length model (``predictors.refit``; off by default)."""
    ctx = app[CONTEXT]

    def started(refitter: LengthRefitter) -> None:
        app[REFITTER] = refitter
        ctx.metrics.length_refit = refitter.stats

    async for _ in refit_context(app.get(PREDICTOR), ctx.config.predictors.refit, started):
        yield
