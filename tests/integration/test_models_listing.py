"""``GET /v1/models``: the configured models, described by the backends' own ``/v1/models``.

The backends' lists are read by the background health checks (the start-up round, then
``proxy.check_health()``), never per client request.
"""

from __future__ import annotations

import logging

import aiohttp
import orjson
import pytest

from tests.fakes.backend import FakeBackend
from tests.integration.conftest import Proxy, StartFleet

VLLM_M1 = {"id": "m1", "object": "model", "created": 123, "owned_by": "vllm", "max_model_len": 4096}


async def get_json(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, orjson.loads(await response.read())


async def listing(proxy: Proxy) -> dict[str, dict]:
    status, body = await get_json(proxy.url + "/v1/models")
    assert status == 200
    assert body["object"] == "list"
    return {entry["id"]: entry for entry in body["data"]}


def describe(backends: list[FakeBackend]) -> None:
    """b0 serves m1 (with vLLM's extras) and a model no config names; b1 (config: m1, m2) lists m1."""
    backends[0].models_body = orjson.dumps({"object": "list", "data": [VLLM_M1, {"id": "stray"}]})
    if len(backends) > 1:
        backends[1].models = ("m1", "m2")  # the proxy's config is written from this
        backends[1].models_body = orjson.dumps(
            {"object": "list", "data": [{"id": "m1", "owned_by": "other"}]}
        )


async def test_configured_models_carry_what_the_backends_report(
    start_fleet: StartFleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sluice.models")
    proxy, _ = await start_fleet(2, prepare=describe)
    models = await listing(proxy)
    assert list(models) == ["m1", "m2"]  # exactly what Sluice routes, in config order
    assert models["m1"] == VLLM_M1  # the first configured backend's description wins
    assert models["m2"] == {"id": "m2", "object": "model", "created": 0, "owned_by": "sluice"}
    status, m1 = await get_json(proxy.url + "/v1/models/m1")
    assert (status, m1) == (200, VLLM_M1)
    status, stray = await get_json(proxy.url + "/v1/models/stray")
    assert (status, stray["error"]["code"]) == (404, "model_not_found")
    warnings = sorted(r.getMessage() for r in caplog.records if r.name == "sluice.models")
    assert len(warnings) == 2, warnings
    assert "b0" in warnings[0] and "'stray'" in warnings[0] and "not routed" in warnings[0]
    assert "b1" in warnings[1] and "'m2'" in warnings[1]  # configured, but not in the backend's list


async def test_client_requests_never_reach_the_backends_model_lists(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(2, prepare=describe)
    fetched = [b.models_requests for b in backends]
    assert fetched == [1, 1]  # the start-up health round
    for _ in range(5):
        await listing(proxy)
    assert [b.models_requests for b in backends] == fetched


async def test_a_bad_answer_keeps_the_last_good_one_and_a_restart_refreshes(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(1, prepare=describe)
    assert (await listing(proxy))["m1"]["max_model_len"] == 4096
    backends[0].models_body = b"<html>not json</html>"
    backends[0].health_status = 503
    await proxy.check_health()
    backends[0].health_status = 200
    await proxy.check_health()  # ready again: its list is read again, and is unusable
    assert backends[0].models_requests == 2
    assert (await listing(proxy))["m1"]["max_model_len"] == 4096
    restarted = {**VLLM_M1, "max_model_len": 8192}
    backends[0].models_body = orjson.dumps({"object": "list", "data": [restarted]})
    backends[0].health_status = 503
    await proxy.check_health()
    backends[0].health_status = 200
    await proxy.check_health()
    assert (await listing(proxy))["m1"]["max_model_len"] == 8192
