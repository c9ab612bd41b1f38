"""The decision explanation a client and an operator see: response headers and ``/debug/decisions``."""

from __future__ import annotations

import aiohttp
import orjson

from core import headers
from tests.integration.conftest import StartFleet, assert_no_leaks

POLICY = "routes:\n  - {name: default, policy: {name: sluice_predictive}}\n"
CHAT = {"model": "m1", "messages": [{"role": "user", "content": "Explain KV caches in two sentences."}]}


async def test_headers_and_the_debug_ring_buffer_explain_the_same_decision(start_fleet: StartFleet) -> None:
    proxy, backends = await start_fleet(2, extra=POLICY)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            proxy.url + "/v1/chat/completions", json=CHAT, headers={headers.REQUEST_ID: "dbg-1"}
        ) as resp:
            assert resp.status == 200
            chosen = resp.headers[headers.BACKEND]
            assert resp.headers[headers.POLICY] == "sluice_predictive"
            assert float(resp.headers[headers.PREDICTED_TTFT_MS]) > 0
        async with session.get(proxy.url + "/debug/decisions", params={"request_id": "dbg-1"}) as resp:
            assert resp.status == 200
            log = orjson.loads(await resp.read())
        async with session.get(proxy.url + "/debug/decisions", params={"limit": "1", "top_n": "1"}) as resp:
            newest = orjson.loads(await resp.read())
    assert log["count"] == 1
    record = log["decisions"][0]
    assert (record["request_id"], record["policy"], record["model"]) == ("dbg-1", "sluice_predictive", "m1")
    assert record["chosen"] == chosen
    assert {b["backend"] for b in record["ranked"]} == {b.name for b in backends}
    assert newest["count"] == 1 and len(newest["decisions"][0]["ranked"]) == 1
    await assert_no_leaks(proxy, backends)


async def test_bad_query_parameters_are_openai_errors(start_fleet: StartFleet) -> None:
    proxy, _ = await start_fleet(1)
    async with aiohttp.ClientSession() as session:
        for params in ({"limit": "0"}, {"limit": "many"}, {"top_n": "1000"}):
            async with session.get(proxy.url + "/debug/decisions", params=params) as resp:
                body = orjson.loads(await resp.read())
                assert resp.status == 400, params
                assert body["error"]["code"] == "invalid_value"
                assert body["error"]["param"] == next(iter(params))


async def test_debug_endpoints_can_be_turned_off(start_fleet: StartFleet) -> None:
    proxy, _ = await start_fleet(1, extra="listen: {debug_endpoints: false}\n")
    async with aiohttp.ClientSession() as session, session.get(proxy.url + "/debug/decisions") as resp:
        assert resp.status == 404
        assert orjson.loads(await resp.read())["error"]["code"] == "not_found"
