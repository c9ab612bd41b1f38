"""The proxy runs the engine-metrics collector: fresh figures reach the fleet snapshot and ``/metrics``;
a backend whose ``/metrics`` is missing, malformed, slow or another engine's is still routed, and is
marked stale with its scrape problem counted.

Each backend is scraped once at start-up (``interval_s`` is an hour), so the test waits on the
collector's own record instead of on time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from core.types import Health
from router.app import ENGINE_METRICS
from state.engine_metrics import ScrapeProblem
from tests.fakes.backend import FakeBackend
from tests.integration.conftest import Proxy, StartFleet, assert_no_leaks, wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engine_metrics"
LLAMACPP_BUSY = (
    (FIXTURES / "llamacpp.txt")
    .read_text()
    .replace("llamacpp:requests_processing 0", "llamacpp:requests_processing 3")
    .replace("llamacpp:requests_deferred 0", "llamacpp:requests_deferred 2")
)
# b0 good (llama.cpp), b1 404, b2 malformed, b3 slow, b4 SGLang's metrics where vLLM is configured.
FORMATS = tuple(f"metrics_format: {f}" for f in ("llamacpp", "auto", "auto", "auto", "vllm"))
EXPECTED_PROBLEM = {
    "b1": ScrapeProblem.HTTP_STATUS,
    "b2": ScrapeProblem.NO_ENGINE_METRICS,
    "b3": ScrapeProblem.TIMEOUT,
    "b4": ScrapeProblem.WRONG_ENGINE,
}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def script_metrics(backends: list[FakeBackend]) -> None:
    backends[0].metrics_text = LLAMACPP_BUSY
    backends[1].metrics_text = None
    backends[2].metrics_text = "llamacpp:requests_processing{ 3\n}}}{{{\n\x00 not prometheus\n"
    backends[3].metrics_text = LLAMACPP_BUSY
    backends[3].metrics_held = True
    backends[4].metrics_text = (FIXTURES / "sglang.txt").read_text()


async def start_with_bad_metrics(start_fleet: StartFleet) -> tuple[Proxy, list[FakeBackend]]:
    return await start_fleet(
        5,
        "metrics_poll: {interval_s: 3600, timeout_s: 0.3, stale_after_s: 600}\n",
        backend_fields=FORMATS,
        prepare=script_metrics,
    )


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def send_requests(proxy: Proxy, n: int) -> None:
    async with aiohttp.ClientSession() as client:
        for i in range(n):
            body = {"model": "m1", "messages": [{"role": "user", "content": f"hi {i}"}], "stream": i % 2 == 1}
            async with client.post(proxy.url + "/v1/chat/completions", json=body) as response:
                assert response.status == 200, await response.text()
                await response.read()


async def sluice_metrics(proxy: Proxy) -> Samples:
    async with aiohttp.ClientSession() as client, client.get(proxy.url + "/metrics") as response:
        return parse(await response.text())


async def test_bad_engine_metrics_never_halt_routing(start_fleet: StartFleet) -> None:
    proxy, backends = await start_with_bad_metrics(start_fleet)
    slow = backends[3]
    await slow.wait_until(lambda: slow.metrics_scrapes >= 1)
    # The slow backend's scrape is held open while every backend serves requests (round robin).
    await send_requests(proxy, 10)
    assert not slow.metrics_release.is_set()
    assert [len(b.requests) for b in backends] == [2] * 5
    views = proxy.ctx.fleet.snapshot().by_id()
    assert all(view.health is Health.READY for view in views.values())
    await assert_no_leaks(proxy, backends)


async def test_bad_engine_metrics_are_stale_and_counted_by_problem(start_fleet: StartFleet) -> None:
    proxy, _ = await start_with_bad_metrics(start_fleet)
    collector = proxy.app[ENGINE_METRICS]
    statuses = collector.status.values()
    await wait_for(lambda: all(s.scrapes_ok_total or s.consecutive_failures for s in statuses))
    views = proxy.ctx.fleet.snapshot().by_id()
    good = views["b0"]
    assert (good.metrics_stale, good.engine_running, good.engine_waiting) == (False, 3, 2)
    assert all(views[b].metrics_stale and views[b].engine_waiting is None for b in EXPECTED_PROBLEM)
    assert {b: collector.status[b].last_problem for b in EXPECTED_PROBLEM} == EXPECTED_PROBLEM

    values = await sluice_metrics(proxy)
    stale = {b: values[("sluice_backend_engine_metrics_stale", (("backend", b),))] for b in views}
    assert stale == {"b0": 0.0, "b1": 1.0, "b2": 1.0, "b3": 1.0, "b4": 1.0}
    assert values[("sluice_backend_engine_running_requests", (("backend", "b0"),))] == 3.0
    assert values[("sluice_backend_engine_waiting_requests", (("backend", "b0"),))] == 2.0
    assert ("sluice_backend_engine_waiting_requests", (("backend", "b1"),)) not in values
    failures = {
        labels: value
        for (name, labels), value in values.items()
        if name == "sluice_engine_metrics_scrape_failures_total"
    }
    assert failures == {
        (("backend", b), ("problem", problem.value)): 1.0 for b, problem in EXPECTED_PROBLEM.items()
    }


async def test_the_collector_polls_for_the_apps_lifetime_only(start_fleet: StartFleet) -> None:
    proxy, _ = await start_fleet(2, "metrics_poll: {interval_s: 0.05}\n")
    collector = proxy.app[ENGINE_METRICS]
    await wait_for(lambda: all(s.consecutive_failures >= 2 for s in collector.status.values()))
    assert len(polling_tasks()) == 2
    await proxy.runner.cleanup()
    assert polling_tasks() == []


def polling_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("engine-metrics:") and not t.done()]
