"""Fixtures: fake backends and a Sluice proxy on 127.0.0.1 ephemeral ports, plus leak checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import router
from core.config import load_config_text
from core.protocols import Decider
from router.app import CONTEXT, HEALTH, build_app, start_server
from router.context import ProxyContext
from tests.fakes.backend import FakeBackend


@dataclass
class Proxy:
    url: str
    app: web.Application
    runner: web.AppRunner

    @property
    def ctx(self) -> ProxyContext:
        return self.app[CONTEXT]

    async def check_health(self) -> None:
        await self.app[HEALTH].check_all()


def config_text(backends: list[FakeBackend], extra: str = "", dead_urls: tuple[str, ...] = ()) -> str:
    lines = ["backends:"]
    for b in backends:
        models = ", ".join(b.models)
        lines.append(f"  - {{name: {b.name}, url: '{b.url}', models: [{models}]}}")
    for i, url in enumerate(dead_urls):
        lines.append(f"  - {{name: dead{i}, url: '{url}', models: [m1]}}")
    # Only the start-up round of active checks runs during a test unless it calls check_health().
    lines.append("health: {interval_s: 3600, timeout_s: 1, healthy_after: 1, unhealthy_after: 1}")
    return "\n".join(lines) + "\n" + extra


StartFleet = Callable[..., Awaitable[tuple[Proxy, list[FakeBackend]]]]


@pytest.fixture
async def start_fleet() -> AsyncIterator[StartFleet]:
    """``await start_fleet(n_backends, extra_yaml)`` → (proxy, backends); all stopped at teardown."""
    started: list[Any] = []

    async def start(
        n: int = 2,
        extra: str = "",
        models: tuple[str, ...] = ("m1",),
        dead_urls: tuple[str, ...] = (),
        decider: Decider | None = None,
    ) -> tuple[Proxy, list[FakeBackend]]:
        backends = [await FakeBackend(f"b{i}", models).start() for i in range(n)]
        started.extend(backends)
        app = build_app(load_config_text(config_text(backends, extra, dead_urls)), decider=decider)
        runner, host, port = await start_server(app, "127.0.0.1", 0, shutdown_grace_s=0.5)
        started.append(runner)
        async with asyncio.timeout(5):
            await app[HEALTH].first_round.wait()
        return Proxy(f"http://{host}:{port}", app, runner), backends

    yield start
    for item in reversed(started):
        if isinstance(item, web.AppRunner):
            await item.cleanup()
        else:
            await item.stop()


_ROUTER_DIR = str(Path(router.__file__).parent) + "/"
# Tasks that run for the app's lifetime by design: the health checker and the waiting-room tick.
_BACKGROUND = {"health.py", "app.py"}


def _busy_in_router() -> list[str]:
    """Names of the router's request-path coroutines still running in some task."""
    busy = []
    for task in asyncio.all_tasks():
        coro: Any = task.get_coro()
        while coro is not None:
            code = getattr(coro, "cr_code", None)
            filename = code.co_filename if code is not None else ""
            if filename.startswith(_ROUTER_DIR) and Path(filename).name not in _BACKGROUND:
                busy.append(code.co_name)
            coro = getattr(coro, "cr_await", None)
    return busy


def _counts(proxy: Proxy, backends: list[FakeBackend]) -> dict[str, Any]:
    ctx = proxy.ctx
    views = ctx.fleet.snapshot().backends
    return {
        "total_in_flight": ctx.fleet.total_in_flight,
        "in_flight": sum(v.in_flight_requests for v in views),
        "awaiting_first_byte": sum(v.awaiting_first_byte for v in views),
        "in_flight_prompt_tokens": sum(v.in_flight_prompt_tokens for v in views),
        "upstream_connections_in_use": ctx.upstream().in_use,
        "backend_handlers_running": sum(b.in_progress for b in backends),
        "router_tasks": _busy_in_router(),
    }


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a condition that spans several objects until it holds; fail after the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.01)  # polling a condition with a deadline, not synchronisation


async def assert_no_leaks(proxy: Proxy, backends: list[FakeBackend], timeout_s: float = 5.0) -> None:
    """Counters, upstream connections in use, backend handlers and router tasks all return to zero."""
    expected = {
        "total_in_flight": 0,
        "in_flight": 0,
        "awaiting_first_byte": 0,
        "in_flight_prompt_tokens": 0,
        "upstream_connections_in_use": 0,
        "backend_handlers_running": 0,
        "router_tasks": [],
    }
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        counts = _counts(proxy, backends)
        if counts == expected:
            return
        if loop.time() > deadline:
            raise AssertionError(f"leak: {counts}")
        await asyncio.sleep(0.01)  # polling a condition with a deadline, not synchronisation
