"""A tiny open-loop streaming client for the simulator benchmarks (the full one is loadgen/client.py).

Sends each request at its ``arrival_s`` (relative to the start) without waiting for others, streams
the SSE response and records, as vLLM's benchmark does: TTFT = first non-empty content chunk - send,
E2E = last chunk - send, and the number of content chunks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import orjson

from loadgen.workload import WorkloadRequest


@dataclass(slots=True)
class ClientRecord:
    request_id: str
    backend: str
    status: int = 0
    ttft_s: float | None = None
    e2e_s: float | None = None
    chunks: int = 0


async def _one(session: aiohttp.ClientSession, url: str, backend: str, wr: WorkloadRequest) -> ClientRecord:
    rec = ClientRecord(wr.request_id, backend)
    sent = time.perf_counter()
    async with session.post(
        url + wr.path, data=orjson.dumps(dict(wr.body)), headers=wr.http_headers()
    ) as resp:
        rec.status = resp.status
        last = sent
        async for line in resp.content:
            if not line.startswith(b"data: {"):
                continue
            event = orjson.loads(line[6:])
            choices = event.get("choices") or []
            if choices and (choices[0].get("delta", {}).get("content") or choices[0].get("text")):
                now = time.perf_counter()
                if rec.ttft_s is None:
                    rec.ttft_s = now - sent
                rec.chunks += 1
                last = now
        rec.e2e_s = last - sent
    return rec


async def replay(
    workload: list[WorkloadRequest], urls: dict[str, str], route: list[str]
) -> list[ClientRecord]:
    """Open-loop replay; request ``i`` goes to backend ``route[i]``."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        tasks = []
        for wr, backend in zip(workload, route, strict=True):
            delay = wr.arrival_s - (time.perf_counter() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(_one(session, urls[backend], backend, wr)))
        return list(await asyncio.gather(*tasks))
