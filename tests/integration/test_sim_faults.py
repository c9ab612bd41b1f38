"""Fault injection on simulated backends: from the fleet file, the backend admin and the fleet admin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import orjson
import pytest

from core.headers import SIM_OUTPUT_TOKENS
from loadgen.sim.fleet_config import load_fleet_text
from loadgen.sim.runner import SimFleet
from loadgen.sim.server import SimBackend

FLEET = """
backends:
  - {name: a, profile: h100-llama3.1-8b}
  - {name: b, profile: h100-llama3.1-8b}
"""
SHORT = {"prompt": "hi", "max_tokens": 3}


@pytest.fixture
async def fleet() -> AsyncIterator[SimFleet]:
    sim = SimFleet(load_fleet_text(FLEET))
    await sim.start(admin_port=0)
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def read_all_lines(resp: aiohttp.ClientResponse, into: list[bytes] | None = None) -> None:
    while line := await resp.content.readline():
        if into is not None:
            into.append(line)


async def set_faults(http: aiohttp.ClientSession, backend: SimBackend, **patch: object) -> dict[str, object]:
    async with http.post(backend.url + "/admin/faults", json=patch) as resp:
        assert resp.status == 200, await resp.text()
        result: dict[str, object] = await resp.json()
        return result


async def complete(http: aiohttp.ClientSession, backend: SimBackend) -> int:
    async with http.post(backend.url + "/v1/completions", json=SHORT) as resp:
        await resp.read()
        return resp.status


async def test_error_rate_answers_with_the_configured_status(
    fleet: SimFleet, http: aiohttp.ClientSession
) -> None:
    backend = fleet.backends[0]
    state = await set_faults(http, backend, error_rate=1.0, error_status=503)
    assert state["error_rate"] == 1.0
    async with http.post(backend.url + "/v1/completions", json=SHORT) as resp:
        body = orjson.loads(await resp.read())
    assert resp.status == 503
    assert body["error"]["code"] == "simulated_fault"
    await set_faults(http, backend, error_rate=0.0)
    assert await complete(http, backend) == 200


async def test_hang_parks_everything_until_cleared(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    backend = fleet.backends[0]
    await set_faults(http, backend, hang=True)
    pending = asyncio.ensure_future(complete(http, backend))
    health = asyncio.ensure_future(http.get(backend.url + "/health"))
    await until(lambda: len(backend._parked) == 2, "both requests to be parked")
    assert not pending.done() and not health.done()
    assert (await set_faults(http, backend, hang=False))["hang"] is False
    assert await pending == 200
    resp = await health
    assert resp.status == 200
    resp.release()


async def test_crash_drops_streams_refuses_connections_and_restarts_empty(
    fleet: SimFleet, http: aiohttp.ClientSession
) -> None:
    backend, other = fleet.backends
    body = {"prompt": "a long generation", "stream": True}
    resp = await http.post(backend.url + "/v1/completions", json=body, headers={SIM_OUTPUT_TOKENS: "100000"})
    await resp.content.readline()
    admin = f"http://127.0.0.1:{fleet.admin_port}/admin/backends/{backend.name}/faults"
    async with http.post(admin, json={"crashed": True}) as answer:
        assert answer.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await read_all_lines(resp)
    resp.release()
    assert backend.engine.num_running == 0 and backend.engine.pool.usage_frac == 0.0
    with pytest.raises(aiohttp.ClientConnectorError):
        await complete(http, backend)
    assert await complete(http, other) == 200  # the rest of the fleet is untouched
    async with http.post(admin, json={"crashed": False}) as answer:
        assert answer.status == 200
    assert await complete(http, backend) == 200


async def test_refuse_connections_keeps_open_streams(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    backend = fleet.backends[0]
    body = {"prompt": "streaming", "stream": True}
    resp = await http.post(backend.url + "/v1/completions", json=body, headers={SIM_OUTPUT_TOKENS: "30"})
    await resp.content.readline()
    await set_faults(http, backend, refuse_connections=True)
    async with aiohttp.ClientSession() as fresh:  # a new connection, not the pooled one
        with pytest.raises(aiohttp.ClientConnectorError):
            await complete(fresh, backend)
    rest = await resp.read()
    assert rest.endswith(b"data: [DONE]\n\n")
    await set_faults(http, backend, refuse_connections=False)
    async with aiohttp.ClientSession() as fresh:
        assert await complete(fresh, backend) == 200


async def test_drop_mid_stream_cuts_the_response(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    backend = fleet.backends[0]
    await set_faults(http, backend, drop_stream_rate=1.0)
    body = {"prompt": "streaming", "stream": True}
    resp = await http.post(backend.url + "/v1/completions", json=body, headers={SIM_OUTPUT_TOKENS: "50"})
    lines: list[bytes] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        await read_all_lines(resp, lines)
    resp.release()
    assert lines and b"data: [DONE]\n" not in lines
    await until(lambda: backend.engine.num_running == 0, "the dropped request to be aborted")


async def test_slowdown_stretches_engine_steps(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    backend = fleet.backends[0]
    await set_faults(http, backend, slowdown=3.0)
    engine = backend.engine
    assert engine._slowdown == 3.0
    model = backend.profile.step_time
    body = {"prompt": "x" * 400, "max_tokens": 2}
    async with http.post(backend.url + "/v1/completions", json=body) as resp:
        assert resp.status == 200
    # the request's first token came one (slowed) prefill step after it was scheduled
    assert engine.busy_s == pytest.approx(
        3.0 * 1e-6 * (2 * model.base_us + 100 * model.prefill_us_per_token + model.decode_us_per_token)
    )


async def test_bad_fault_patches_are_rejected(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    backend = fleet.backends[0]
    for patch in ({"error_rate": 2}, {"slowdown": 0}, {"explode": True}, {"error_status": 418}):
        async with http.post(backend.url + "/admin/faults", json=patch) as resp:
            assert resp.status == 400, patch
            assert (await resp.json())["error"]["code"] == "invalid_value"
    async with http.post(backend.url + "/admin/faults", data=b"{") as resp:
        assert resp.status == 400
    async with http.get(f"http://127.0.0.1:{fleet.admin_port}/admin/backends") as resp:
        listing = await resp.json()
    assert [b["backend"] for b in listing] == ["a", "b"]
    assert listing[0]["faults"]["slowdown"] == 1.0


async def test_fault_schedule_from_the_fleet_file(http: aiohttp.ClientSession) -> None:
    schedule = "fault_schedule: [{at_s: 0, set: {error_rate: 1.0, error_status: 502}}]"
    text = FLEET.replace(
        "{name: b, profile: h100-llama3.1-8b}", "{name: b, profile: h100-llama3.1-8b, " + schedule + "}"
    )
    sim = SimFleet(load_fleet_text(text))
    await sim.start()
    try:
        backend = sim.backends[1]
        await until(lambda: backend.faults.error_rate == 1.0, "the scheduled fault")
        assert await complete(http, backend) == 502
        assert await complete(http, sim.backends[0]) == 200
    finally:
        await sim.stop()
