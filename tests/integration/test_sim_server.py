"""Simulated backends over real sockets: OpenAI API shapes, vLLM errors and metrics, peer probes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.features import prompt_text
from core.headers import SIM_OUTPUT_TOKENS
from core.tokens import estimate_tokens
from core.types import Endpoint
from loadgen.sim.fleet_config import load_fleet_text
from loadgen.sim.runner import SimFleet
from loadgen.sim.server import SimBackend

MODEL = "llama-3.1-8b"
FLEET = """
seed: 3
backends:
  - {name: h100, profile: h100-llama3.1-8b}
  - {name: a100, profile: a100-llama3.1-8b}
"""


@pytest.fixture
async def fleet() -> AsyncIterator[SimFleet]:
    sim = SimFleet(load_fleet_text(FLEET))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client(backend: SimBackend) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=backend.url + "/v1", api_key="sim", max_retries=0)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll a condition with a deadline (no fixed sleeps)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def test_streaming_chat_counts_tokens_exactly_and_reports_usage(fleet: SimFleet) -> None:
    backend = fleet.backends[0]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello " * 300}]
    async with client(backend) as api:
        stream = await api.chat.completions.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={SIM_OUTPUT_TOKENS: "17"},
        )
        content, finish, usage, roles = [], None, None, 0
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                roles += choice.delta.role == "assistant"
                if choice.delta.content:
                    content.append(choice.delta.content)
                finish = choice.finish_reason or finish
    assert roles == 1
    assert len(content) == 17
    assert finish == "stop"
    assert usage is not None
    expected_prompt = estimate_tokens(prompt_text(Endpoint.CHAT, {"messages": messages}))
    assert usage.prompt_tokens == expected_prompt
    assert usage.completion_tokens == 17
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert estimate_tokens("".join(content)) == 17  # every token is 4 characters


async def test_output_capped_by_max_tokens_ends_with_length(fleet: SimFleet) -> None:
    async with client(fleet.backends[0]) as api:
        done = await api.completions.create(
            model=MODEL, prompt="tell me a story", max_tokens=5, extra_headers={SIM_OUTPUT_TOKENS: "400"}
        )
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 5


async def test_without_header_the_output_length_is_a_seeded_draw() -> None:
    text = """
seed: 11
backends:
  - name: short
    profile: h100-llama3.1-8b
    overrides: {output_length: {median_tokens: 6, sigma: 0.8, max_tokens: 30}}
"""
    runs = []
    for _ in range(2):
        sim = SimFleet(load_fleet_text(text))
        await sim.start()
        try:
            lengths = []
            async with client(sim.backends[0]) as api:
                for _ in range(6):
                    done = await api.completions.create(model=MODEL, prompt="x" * 40)
                    assert done.usage is not None
                    lengths.append(done.usage.completion_tokens)
            runs.append(lengths)
        finally:
            await sim.stop()
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 1
    assert all(1 <= n <= 30 for n in runs[0])


async def test_shared_prefix_is_cached_on_the_same_backend_only(fleet: SimFleet) -> None:
    system = "You are a careful assistant. " * 40  # 1,160 characters
    first, other = fleet.backends
    cached = []
    for backend, question in ((first, "one?"), (first, "two?"), (other, "three?")):
        async with client(backend) as api:
            done = await api.chat.completions.create(
                model=MODEL,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
                extra_headers={SIM_OUTPUT_TOKENS: "2"},
            )
        assert done.usage is not None and done.usage.prompt_tokens_details is not None
        cached.append(done.usage.prompt_tokens_details.cached_tokens)
    shared_chars = len("system\n" + system + "\n\nuser\n")
    assert cached[0] == 0
    assert cached[1] == (shared_chars // 64) * 16  # every whole 64-character chunk of the common prefix
    assert cached[2] == 0


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code"),
    [
        ("/v1/chat/completions", b"{not json", {}, 400, "invalid_json"),
        ("/v1/chat/completions", b"[1, 2]", {}, 400, "invalid_request"),
        ("/v1/chat/completions", b'{"model": "llama-3.1-8b"}', {}, 400, "missing_required_parameter"),
        ("/v1/chat/completions", b'{"messages": "hi"}', {}, 400, "invalid_value"),
        ("/v1/completions", b'{"prompt": "hi", "model": "gpt-9"}', {}, 404, "model_not_found"),
        ("/v1/completions", b'{"prompt": "hi", "max_tokens": 0}', {}, 400, "invalid_value"),
        ("/v1/completions", b'{"prompt": "hi", "stream_options": {}}', {}, 400, "invalid_value"),
        ("/v1/completions", b'{"prompt": "hi", "n": 3}', {}, 400, "invalid_value"),
        ("/v1/completions", b'{"prompt": "hi"}', {SIM_OUTPUT_TOKENS: "many"}, 400, "invalid_value"),
        ("/v1/completions", b'{"prompt": "hi", "max_tokens": 40000}', {}, 400, "context_length_exceeded"),
        ("/v1/embeddings", b'{"input": "hi"}', {}, 404, "not_found"),
        ("/nowhere", b"", {}, 404, "not_found"),
    ],
)
async def test_bad_requests_get_openai_errors(
    fleet: SimFleet,
    http: aiohttp.ClientSession,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    url = fleet.backends[0].url + path
    async with http.post(url, data=body, headers={"content-type": "application/json", **headers}) as resp:
        payload = orjson.loads(await resp.read())
    assert resp.status == status
    assert payload["error"]["code"] == code
    assert set(payload["error"]) == {"message", "type", "code", "param"}


async def test_context_length_message_is_vllms(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    body = {"prompt": "x" * 4 * 32000, "max_tokens": 1000}
    async with http.post(fleet.backends[0].url + "/v1/completions", json=body) as resp:
        message = (await resp.json())["error"]["message"]
    assert message == (
        "This model's maximum context length is 32768 tokens. However, you requested 33000 tokens "
        "(32000 in the messages, 1000 in the completion). Please reduce the length of the messages or "
        "completion."
    )


async def test_wrong_method_is_405(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    async with http.get(fleet.backends[0].url + "/v1/chat/completions") as resp:
        assert resp.status == 405
    async with http.post(fleet.backends[0].url + "/health") as resp:
        assert resp.status == 405


async def test_what_peer_routers_probe(fleet: SimFleet, http: aiohttp.ClientSession) -> None:
    url = fleet.backends[0].url
    async with http.get(url + "/health") as resp:
        assert resp.status == 200
        assert await resp.read() == b""
    async with http.get(url + "/v1/models") as resp:
        models = await resp.json()
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert models["data"][0]["max_model_len"] == 32768
    async with http.get(url + "/get_load") as resp:
        assert await resp.json() == {"load": 0}
    async with http.get(url + "/get_model_info") as resp:  # sglang-router's optional probes
        assert (await resp.json())["model_path"] == MODEL
    async with http.get(url + "/server_info") as resp:
        assert (await resp.json())["max_total_num_tokens"] == 29205 * 16


def families(text: str) -> dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]]:
    out = {}
    for family in text_string_to_metric_families(text):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        out[family.name] = (family.type, samples)
    return out


async def test_metrics_use_vllm_names_types_and_count_prefix_hits(
    fleet: SimFleet, http: aiohttp.ClientSession
) -> None:
    backend = fleet.backends[0]
    prompt = "shared context " * 100
    async with client(backend) as api:
        for _ in range(2):
            await api.completions.create(model=MODEL, prompt=prompt, extra_headers={SIM_OUTPUT_TOKENS: "3"})
    async with http.get(backend.url + "/metrics") as resp:
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        fams = families(await resp.text())
    labels = (("engine", "0"), ("model_name", MODEL))
    expected_types = {
        "vllm:num_requests_running": "gauge",
        "vllm:num_requests_waiting": "gauge",
        "vllm:kv_cache_usage_perc": "gauge",
        "vllm:prefix_cache_queries": "counter",
        "vllm:prefix_cache_hits": "counter",
        "vllm:num_preemptions": "counter",
        "vllm:time_to_first_token_seconds": "histogram",
        "vllm:inter_token_latency_seconds": "histogram",
        "vllm:e2e_request_latency_seconds": "histogram",
        "vllm:cache_config_info": "gauge",
    }
    for name, kind in expected_types.items():
        assert fams[name][0] == kind, name
    queries = fams["vllm:prefix_cache_queries"][1][("vllm:prefix_cache_queries_total", labels)]
    hits = fams["vllm:prefix_cache_hits"][1][("vllm:prefix_cache_hits_total", labels)]
    prompt_tokens = estimate_tokens(prompt)
    assert queries == 2 * prompt_tokens
    assert hits == (len(prompt) // 64) * 16
    ttft = fams["vllm:time_to_first_token_seconds"][1]
    assert ttft[("vllm:time_to_first_token_seconds_count", labels)] == 2
    itl = fams["vllm:inter_token_latency_seconds"][1]
    assert itl[("vllm:inter_token_latency_seconds_count", labels)] == 4  # 2 gaps per 3-token request
    info = next(k for k in fams["vllm:cache_config_info"][1])
    assert ("num_gpu_blocks", "29205") in info[1]


async def test_running_gauge_and_client_disconnect_aborts(
    fleet: SimFleet, http: aiohttp.ClientSession
) -> None:
    backend = fleet.backends[0]
    body = {"prompt": "long one", "stream": True}
    resp = await http.post(backend.url + "/v1/completions", json=body, headers={SIM_OUTPUT_TOKENS: "100000"})
    first = await resp.content.readline()
    assert first.startswith(b"data: ")
    assert backend.engine.num_running == 1
    resp.close()  # the client goes away mid-stream
    await until(lambda: backend.engine.num_running == 0, "the engine to drop the request")
    assert backend.metrics.finished_by_reason["abort"] == 1
    assert backend.engine.pool.usage_frac == 0.0


async def test_coalesced_stream_carries_every_token_in_fewer_events() -> None:
    sim = SimFleet(load_fleet_text(FLEET + "stream_coalesce_ms: 40\n"))
    await sim.start()
    try:
        async with client(sim.backends[0]) as api:
            stream = await api.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                extra_headers={SIM_OUTPUT_TOKENS: "60"},
            )
            events = [
                c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content
            ]
    finally:
        await sim.stop()
    assert estimate_tokens("".join(events)) == 60
    assert len(events) < 60
    assert len(events[0]) == 4  # the first token is never held back


async def raw_exchange(port: int, data: bytes, until_bytes: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    try:
        while len(out) < until_bytes:
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk:
                break
            out += chunk
    finally:
        writer.close()
    return out


async def test_pipelined_keepalive_chunked_body_and_expect_continue(fleet: SimFleet) -> None:
    body = b'{"prompt": "hi", "max_tokens": 1}'
    chunked = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    data = (
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Expect: 100-continue\r\n\r\n"
        + chunked
        + b"GET /get_load HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    out = await raw_exchange(fleet.backends[0].port, data, 1 << 20)
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert b"HTTP/1.1 100 Continue" in out
    assert out.index(b'"text_completion"') < out.index(b'{"load":')
    assert b"connection: close" in out


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET / HTTP/2.0\r\n\r\n", b"505"),
        (b"POST /v1/completions HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n", b"413"),
        (b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
    ],
)
async def test_malformed_http_gets_an_error_and_a_close(
    fleet: SimFleet, request_bytes: bytes, status: bytes
) -> None:
    out = await raw_exchange(fleet.backends[0].port, request_bytes, 1 << 20)
    assert out.startswith(b"HTTP/1.1 " + status)
    assert b"connection: close" in out


async def test_output_lengths_by_request_id_stand_in_for_a_dropped_header(
    http: aiohttp.ClientSession,
) -> None:
    sim = SimFleet(load_fleet_text(FLEET), output_lengths={"req-7": 7})
    await sim.start()
    try:
        url = sim.backends[0].url + "/v1/completions"
        body = {"model": MODEL, "prompt": "hello there"}

        async def tokens(headers: dict[str, str]) -> int:
            async with http.post(url, json=body, headers=headers) as resp:
                assert resp.status == 200
                usage: int = (await resp.json())["usage"]["completion_tokens"]
                return usage

        assert await tokens({"x-request-id": "req-7"}) == 7  # as if a router had dropped the header
        assert await tokens({"x-request-id": "req-7", SIM_OUTPUT_TOKENS: "3"}) == 3  # the header wins
    finally:
        await sim.stop()
