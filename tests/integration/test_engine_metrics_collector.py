"""The engine-metrics collector against a real HTTP server on 127.0.0.1 that misbehaves on purpose.

Every bad backend (404, malformed text, slow, huge, truncated, unreachable,
another engine than configured) must give ``None`` + a warning + a status
record, never an exception or a stuck event loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.clock import ManualClock
from core.config import load_config_text
from core.types import EngineMetrics
from state.engine_metrics import (
    EngineMetricsCollector,
    ScrapeProblem,
    ScrapeTarget,
    targets_from_config,
)
from state.engine_metrics import collector as collector_module

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engine_metrics"
LOGGER = "sluice.engine_metrics"


class FakeMetricsServer:
    """Serves fixture bodies and scripted failures; ``/slow`` holds until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.slow_started = asyncio.Event()
        self.bodies: dict[str, str] = {
            name: (FIXTURES / f"{name}.txt").read_text() for name in ("vllm_v1", "sglang", "llamacpp", "tgi")
        }
        self.bodies["malformed"] = "vllm:num_requests_running{engine=0 4\n}}}{{{\n\x00\x01 not prometheus\n"
        self.bodies["json"] = '{"object": "error", "message": "metrics are disabled"}'
        self.app = web.Application()
        self.app.router.add_get("/text/{name}", self.text)
        self.app.router.add_get("/slow", self.slow)
        self.app.router.add_get("/huge", self.huge)
        self.app.router.add_get("/huge-declared", self.huge_declared)
        self.app.router.add_get("/truncated", self.truncated)
        self.app.router.add_get("/flaky", self.flaky)
        self.flaky_ok = False

    async def text(self, request: web.Request) -> web.Response:
        return web.Response(text=self.bodies[request.match_info["name"]], content_type="text/plain")

    async def slow(self, request: web.Request) -> web.Response:
        self.slow_started.set()
        await self.release.wait()
        return web.Response(text=self.bodies["vllm_v1"])

    async def huge(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to check up front
        await response.prepare(request)
        line = b"vllm:num_requests_running 1\n" * 4096
        for _ in range(64):  # ~7 MB, far past the 64 KiB cap used below
            await response.write(line)
        await response.write_eof()
        return response

    async def huge_declared(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (256 * 1024))

    async def truncated(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"vllm:num_requests_running 1\n")
        assert request.transport is not None
        request.transport.close()
        return response

    async def flaky(self, request: web.Request) -> web.Response:
        if self.flaky_ok:
            return web.Response(text=self.bodies["tgi"])
        raise web.HTTPNotFound()


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeMetricsServer, str]]:
    server = FakeMetricsServer()
    test_server = TestServer(server.app, host="127.0.0.1", port=0)
    await test_server.start_server()
    try:
        yield server, str(test_server.make_url("")).rstrip("/")
    finally:
        server.release.set()
        await test_server.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/metrics"


class Received:
    def __init__(self) -> None:
        self.items: list[tuple[str, EngineMetrics | None]] = []

    def __call__(self, backend_id: str, metrics: EngineMetrics | None) -> None:
        self.items.append((backend_id, metrics))


async def test_every_engine_is_scraped_and_delivered(fake: tuple[FakeMetricsServer, str]) -> None:
    _, base = fake
    received = Received()
    names = ("vllm_v1", "sglang", "llamacpp", "tgi")
    targets = [ScrapeTarget(name, f"{base}/text/{name}", "auto") for name in names]
    collector = EngineMetricsCollector(targets, received, timeout_s=5.0)
    try:
        results = await collector.poll_once()
    finally:
        await collector.stop()
    assert {k: m.engine for k, m in results.items() if m} == {
        "vllm_v1": "vllm",
        "sglang": "sglang",
        "llamacpp": "llamacpp",
        "tgi": "tgi",
    }
    assert sorted(received.items, key=lambda item: item[0]) == sorted(results.items())
    assert results["vllm_v1"] is not None and results["vllm_v1"].running == 3
    assert all(s.scrapes_ok_total == 1 and s.last_problem is None for s in collector.status.values())


BAD_CASES = [
    ("/missing", "auto", ScrapeProblem.HTTP_STATUS),
    ("/text/malformed", "auto", ScrapeProblem.NO_ENGINE_METRICS),
    ("/text/json", "vllm", ScrapeProblem.NO_ENGINE_METRICS),
    ("/text/sglang", "vllm", ScrapeProblem.WRONG_ENGINE),
    ("/huge", "auto", ScrapeProblem.TOO_LARGE),
    ("/huge-declared", "auto", ScrapeProblem.TOO_LARGE),
    ("/truncated", "auto", ScrapeProblem.BAD_RESPONSE),
    ("/slow", "auto", ScrapeProblem.TIMEOUT),
]


@pytest.mark.parametrize(("path", "metrics_format", "problem"), BAD_CASES)
async def test_bad_metrics_give_stale_marker_and_one_warning(
    fake: tuple[FakeMetricsServer, str],
    caplog: pytest.LogCaptureFixture,
    path: str,
    metrics_format: str,
    problem: ScrapeProblem,
) -> None:
    _, base = fake
    received = Received()
    target = ScrapeTarget("b1", base + path, metrics_format)
    collector = EngineMetricsCollector([target], received, timeout_s=0.3, max_body_bytes=64 * 1024)
    caplog.set_level(logging.INFO, logger=LOGGER)
    try:
        for _ in range(3):
            assert await collector.poll_once() == {"b1": None}
    finally:
        await collector.stop()
    assert received.items == [("b1", None)] * 3
    status = collector.status["b1"]
    assert (status.last_problem, status.consecutive_failures, status.scrapes_ok_total) == (problem, 3, 0)
    assert status.failures_by_problem == {problem: 3}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and problem.value in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "b1" in warnings[0].getMessage() and "stale" in warnings[0].getMessage()


async def test_unreachable_backend_is_stale_not_an_error() -> None:
    collector = EngineMetricsCollector([ScrapeTarget("gone", closed_port_url(), "auto")], Received())
    try:
        assert await collector.scrape(collector.targets[0]) is None
    finally:
        await collector.stop()
    assert collector.status["gone"].last_problem is ScrapeProblem.UNREACHABLE


async def test_a_slow_backend_does_not_hold_up_the_event_loop_or_other_backends(
    fake: tuple[FakeMetricsServer, str],
) -> None:
    server, base = fake
    slow = ScrapeTarget("slow", f"{base}/slow", "auto")
    fast = ScrapeTarget("fast", f"{base}/text/tgi", "auto")
    collector = EngineMetricsCollector([slow, fast], Received(), timeout_s=30.0)
    try:
        slow_task = asyncio.create_task(collector.scrape(slow))
        await asyncio.wait_for(server.slow_started.wait(), 10)
        fast_metrics = await asyncio.wait_for(collector.scrape(fast), 10)
        assert fast_metrics is not None and fast_metrics.engine == "tgi"
        assert not slow_task.done()  # still waiting on its gate, while the loop served everything else
        server.release.set()
        slow_metrics = await asyncio.wait_for(slow_task, 10)
    finally:
        await collector.stop()
    assert slow_metrics is not None and slow_metrics.engine == "vllm"


async def test_warnings_repeat_at_most_once_per_interval_and_recovery_is_logged(
    fake: tuple[FakeMetricsServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    server, base = fake
    clock = ManualClock(100.0)
    target = ScrapeTarget("b1", f"{base}/flaky", "tgi")
    collector = EngineMetricsCollector([target], Received(), clock=clock, warn_every_s=60.0, timeout_s=5.0)
    caplog.set_level(logging.INFO, logger=LOGGER)

    def messages(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == level]

    try:
        for _ in range(3):
            await collector.scrape(target)
            clock.advance(10.0)
        assert len(messages(logging.WARNING)) == 1
        clock.advance(60.0)
        await collector.scrape(target)
        assert len(messages(logging.WARNING)) == 2
        assert "2 more since the last warning" in messages(logging.WARNING)[1]
        server.flaky_ok = True
        metrics = await collector.scrape(target)
        assert metrics is not None and metrics.waiting == 3
        assert any("are back" in m and "4 failed" in m for m in messages(logging.INFO))
        server.flaky_ok = False
        await collector.scrape(target)  # a new outage warns again at once
        assert len(messages(logging.WARNING)) == 3
    finally:
        await collector.stop()
    status = collector.status["b1"]
    assert (status.scrapes_ok_total, status.scrapes_failed_total, status.consecutive_failures) == (1, 5, 1)
    assert status.last_ok_s == clock.now_s()


async def test_large_bodies_are_parsed_off_the_event_loop_thread(
    fake: tuple[FakeMetricsServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, base = fake
    threads: dict[str, str] = {}
    real_convert = collector_module.convert_text

    def spy(text: str, metrics_format: str, scraped_at_s: float):  # type: ignore[no-untyped-def]
        threads[metrics_format] = threading.current_thread().name
        return real_convert(text, metrics_format, scraped_at_s)

    monkeypatch.setattr(collector_module, "convert_text", spy)
    small = ScrapeTarget("small", f"{base}/text/tgi", "tgi")  # ~1 KB
    large = ScrapeTarget("large", f"{base}/text/vllm_v1", "vllm")  # ~8 KB
    collector = EngineMetricsCollector([small, large], Received(), offload_parse_bytes=4096, timeout_s=5.0)
    try:
        results = await collector.poll_once()
    finally:
        await collector.stop()
    assert results["small"] is not None and results["large"] is not None
    assert threads["tgi"] == threading.current_thread().name
    assert threads["vllm"] != threading.current_thread().name


async def test_polling_survives_a_failing_callback_and_stops_cleanly(
    fake: tuple[FakeMetricsServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, base = fake
    delivered: list[EngineMetrics | None] = []
    enough = asyncio.Event()

    def callback(backend_id: str, metrics: EngineMetrics | None) -> None:
        delivered.append(metrics)
        if len(delivered) == 1:
            raise RuntimeError("receiver bug")
        if len(delivered) >= 3:
            enough.set()

    target = ScrapeTarget("b1", f"{base}/text/llamacpp", "llamacpp")
    collector = EngineMetricsCollector([target], callback, interval_s=0.01, timeout_s=5.0)
    caplog.set_level(logging.ERROR, logger=LOGGER)
    async with collector:
        await asyncio.wait_for(enough.wait(), 10)
    assert all(m is not None and m.engine == "llamacpp" for m in delivered)
    assert any("callback failed" in r.getMessage() for r in caplog.records)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("engine-metrics:")]


def test_targets_come_from_config_and_skip_backends_without_metrics() -> None:
    config = load_config_text(
        """
backends:
  - {name: a, url: "http://127.0.0.1:8001/", models: [m]}
  - {name: b, url: "http://127.0.0.1:8002", models: [m], metrics_format: sglang, metrics_path: /stats}
  - {name: c, url: "http://127.0.0.1:8003", models: [m], metrics_format: none}
metrics_poll: {interval_s: 2.0, timeout_s: 0.25, max_body_bytes: 2048}
"""
    ).config
    assert targets_from_config(config) == (
        ScrapeTarget("a", "http://127.0.0.1:8001/metrics", "auto"),
        ScrapeTarget("b", "http://127.0.0.1:8002/stats", "sglang"),
    )
    collector = EngineMetricsCollector.from_config(config, Received())
    assert [t.backend_id for t in collector.targets] == ["a", "b"]
    assert set(collector.status) == {"a", "b"}
