"""The open-loop client against a local scripted SSE server (127.0.0.1, ephemeral port).

Timing is exact: the client runs on a ``SteppedTimer`` and the server moves
that clock before each write and waits until the client has read it, so the
recorded TTFT/ITL/E2E are known to the microsecond without real sleeps.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from core import headers
from core.types import Endpoint
from loadgen.client import ClientOptions, LoadClient, TargetUnreachable
from loadgen.fake_server import FakeOpenAIServer, FakeRequest, Responder, chat_chunk, token_streamer
from loadgen.records import Outcome
from loadgen.replay import replay
from loadgen.results import SLO
from loadgen.workload import WorkloadRequest
from loadgen.workloads import build_workload
from tests.loadgen_support import SteppedTimer

DEADLINE_S = 10.0


def req(i: int, arrival_s: float = 0.0, *, after: str | None = None, think_s: float = 0.0) -> WorkloadRequest:
    return WorkloadRequest(
        request_id=f"r{i}",
        arrival_s=arrival_s,
        endpoint=Endpoint.CHAT,
        body={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        true_output_tokens=3,
        tenant="acme",
        priority="critical",
        session_id="s" if after or think_s else None,
        after_request_id=after,
        think_time_s=think_s,
    )


async def run_client(
    handler: Callable[[FakeRequest, Responder], Awaitable[None]],
    requests: list[WorkloadRequest],
    timer: SteppedTimer | None = None,
    **options: object,
) -> tuple[LoadClient, FakeOpenAIServer]:
    async with FakeOpenAIServer(handler) as server:
        client = LoadClient(ClientOptions(server.url, **options), timer)  # type: ignore[arg-type]
        await asyncio.wait_for(client.run(requests), DEADLINE_S)
        return client, server


async def test_ttft_itl_tpot_e2e_are_measured_exactly() -> None:
    timer = SteppedTimer()
    seen_headers: dict[str, str] = {}

    async def handler(request: FakeRequest, reply: Responder) -> None:
        seen_headers.update(request.headers)
        await reply.start(headers={headers.BACKEND: "gpu-7"})
        script = [
            (0.200, chat_chunk(role="assistant")),
            (0.250, chat_chunk(text="Hel")),
            (0.300, chat_chunk(text="lo")),
            (0.400, chat_chunk(text="!")),
            (0.420, chat_chunk(usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})),
            (0.450, "[DONE]"),
        ]
        for t_s, event in script:
            timer.arm(t_s)
            await reply.event(event)
            await timer.read()
        await reply.finish()

    client, _ = await run_client(handler, [req(0)], timer)
    (record,) = client.records()
    assert record.outcome is Outcome.OK and record.status == 200 and record.backend == "gpu-7"
    assert record.ttft_ms == pytest.approx(250.0)
    assert record.itl_ms == pytest.approx([50.0, 100.0])
    assert record.e2e_ms == pytest.approx(450.0)
    assert record.output_tokens == 3 and record.output_tokens_from_usage
    assert record.tpot_ms == pytest.approx(100.0)
    assert (record.tenant, record.priority, record.prompt_tokens) == ("acme", "critical", 5)
    assert seen_headers[headers.SIM_OUTPUT_TOKENS] == "3"
    assert seen_headers[headers.TENANT] == "acme" and seen_headers[headers.REQUEST_ID] == "r0"


def shed_then_stream(
    retry_after: str = "2", retry_after_ms: str | None = None, seen: list[FakeRequest] | None = None
) -> Callable[[FakeRequest, Responder], Awaitable[None]]:
    calls = {"n": 0}
    stream = token_streamer()

    async def handler(request: FakeRequest, reply: Responder) -> None:
        calls["n"] += 1
        if seen is not None:
            seen.append(request)
        if calls["n"] == 1:
            body = {
                "error": {"message": "busy", "type": "rate_limit_error", "code": "overloaded", "param": None}
            }
            extra = {"Retry-After": retry_after, "x-sluice-shed-reason": "slo_infeasible"}
            if retry_after_ms is not None:
                extra["retry-after-ms"] = retry_after_ms
            await reply.json(429, body, extra)
        else:
            await stream(request, reply)

    return handler


async def test_429_is_recorded_with_its_retry_after() -> None:
    client, server = await run_client(shed_then_stream(), [req(0)], SteppedTimer())
    (record,) = client.records()
    assert record.outcome is Outcome.SHED and record.status == 429
    assert (record.error, record.shed_reason, record.retry_after_s) == ("overloaded", "slo_infeasible", 2.0)
    assert record.attempts == 1 and server.requests_seen == 1


async def test_honour_retry_after_waits_and_retries() -> None:
    timer = SteppedTimer()
    client, server = await run_client(shed_then_stream(), [req(0)], timer, honour_retry_after=True)
    (record,) = client.records()
    assert record.outcome is Outcome.OK and record.attempts == 2 and server.requests_seen == 2
    assert record.retry_wait_ms == pytest.approx(2000.0)
    assert record.retry_after_s == 2.0
    assert record.ttft_ms is not None and record.ttft_ms >= 2000.0  # the user waited the Retry-After too


async def test_retrying_client_behaves_like_the_openai_client() -> None:
    # retry-after-ms is read first, and every attempt says which one it is (x-stainless-retry-count).
    seen: list[FakeRequest] = []
    timer = SteppedTimer()
    handler = shed_then_stream("3", retry_after_ms="2500", seen=seen)
    client, _ = await run_client(handler, [req(0)], timer, honour_retry_after=True)
    (record,) = client.records()
    assert record.outcome is Outcome.OK and record.attempts == 2
    assert record.retry_wait_ms == pytest.approx(2500.0)
    assert [r.headers.get(headers.CLIENT_RETRY_COUNT) for r in seen] == ["0", "1"]


async def test_a_retry_after_beyond_the_openai_bound_is_not_waited_out() -> None:
    client, server = await run_client(
        shed_then_stream("121"), [req(0)], SteppedTimer(), honour_retry_after=True
    )
    (record,) = client.records()
    assert record.outcome is Outcome.SHED and record.attempts == 1 and server.requests_seen == 1


async def test_503_and_other_statuses() -> None:
    async def handler(request: FakeRequest, reply: Responder) -> None:
        if request.headers[headers.REQUEST_ID] == "r0":
            await reply.json(503, {"error": {"message": "x", "type": "t", "code": "no_healthy_backend"}})
        else:  # llama.cpp's shape: the status in "code", the kind in "type"
            await reply.json(
                400, {"error": {"code": 400, "message": "x", "type": "exceed_context_size_error"}}
            )

    client, _ = await run_client(handler, [req(0), req(1)], SteppedTimer())
    r0, r1 = client.records()
    assert (r0.outcome, r0.status, r0.error) == (Outcome.UNAVAILABLE, 503, "no_healthy_backend")
    assert (r1.outcome, r1.status, r1.error) == (Outcome.ERROR, 400, "exceed_context_size_error")


async def test_disconnect_mid_stream_keeps_partial_timing() -> None:
    async def handler(request: FakeRequest, reply: Responder) -> None:
        await reply.start()
        await reply.event(chat_chunk(text="a"))
        await reply.event(chat_chunk(text="b"))
        reply.abort()

    client, _ = await run_client(handler, [req(0)])
    (record,) = client.records()
    assert (record.outcome, record.error) == (Outcome.ERROR, "disconnected")
    assert record.ttft_ms is not None and record.output_tokens == 2 and not record.output_tokens_from_usage


async def test_error_event_mid_stream() -> None:
    async def handler(request: FakeRequest, reply: Responder) -> None:
        await reply.start()
        await reply.event(chat_chunk(text="a"))
        await reply.event(
            {"error": {"message": "gone", "type": "server_error", "code": "upstream_failed_mid_stream"}}
        )
        await reply.event("[DONE]")
        await reply.finish()

    client, _ = await run_client(handler, [req(0)])
    assert [(r.outcome, r.error) for r in client.records()] == [(Outcome.ERROR, "upstream_failed_mid_stream")]


async def test_arrivals_never_wait_for_completions() -> None:
    """Five requests; the server answers none until all five are in flight (a closed loop would hang)."""
    all_in = asyncio.Event()
    seen = []
    stream = token_streamer()

    async def handler(request: FakeRequest, reply: Responder) -> None:
        seen.append(request.headers[headers.REQUEST_ID])
        if len(seen) == 5:
            all_in.set()
        await all_in.wait()
        await stream(request, reply)

    client, _ = await run_client(handler, [req(i, arrival_s=0.1 * i) for i in range(5)], SteppedTimer())
    assert sorted(seen) == [f"r{i}" for i in range(5)]
    assert all(r.outcome is Outcome.OK for r in client.records())
    assert [r.sent_s for r in client.records()] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


async def test_dependent_turn_waits_for_parent_plus_think_time() -> None:
    timer = SteppedTimer()

    async def handler(request: FakeRequest, reply: Responder) -> None:
        await reply.start()
        timer.arm(5.0 if request.headers[headers.REQUEST_ID] == "r0" else timer.now + 1.0)
        await reply.event(chat_chunk(text="x"))
        await timer.read()
        await reply.event("[DONE]")
        await reply.finish()

    requests = [req(0, 0.0, think_s=0.0), req(1, 0.5, after="r0", think_s=2.0)]
    client, _ = await run_client(handler, requests, timer)
    r0, r1 = client.records()
    assert r0.end_s == pytest.approx(5.0)
    assert r1.sent_s == pytest.approx(7.0)  # parent end 5.0 + think 2.0, not its lower bound 0.5
    assert r1.scheduled_s == pytest.approx(7.0) and r1.send_lag_ms == pytest.approx(0.0)
    assert r1.end_s == pytest.approx(8.0)
    assert all(r.outcome is Outcome.OK for r in (r0, r1))


async def test_max_concurrency_caps_requests_in_flight() -> None:
    release, two_in = asyncio.Event(), asyncio.Event()
    active, peak = [0], [0]
    stream = token_streamer()

    async def handler(request: FakeRequest, reply: Responder) -> None:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        if active[0] == 2:
            two_in.set()
        await release.wait()
        await stream(request, reply)
        active[0] -= 1

    async with FakeOpenAIServer(handler) as server:
        client = LoadClient(ClientOptions(server.url, max_concurrency=2), SteppedTimer())
        task = asyncio.create_task(client.run([req(i) for i in range(4)]))
        await asyncio.wait_for(two_in.wait(), DEADLINE_S)
        assert server.requests_seen == 2 and client.counters.sent == 2 and client.counters.scheduled == 4
        release.set()
        records = await asyncio.wait_for(task, DEADLINE_S)
    assert peak[0] == 2 and all(r.outcome is Outcome.OK for r in records)


async def test_cancel_marks_in_flight_cancelled_and_keeps_records() -> None:
    hold, streaming = asyncio.Event(), []
    both_streaming = asyncio.Event()

    async def handler(request: FakeRequest, reply: Responder) -> None:
        await reply.start()
        await reply.event(chat_chunk(text="first"))
        streaming.append(request)
        if len(streaming) == 2:
            both_streaming.set()
        await hold.wait()

    async with FakeOpenAIServer(handler) as server:
        client = LoadClient(ClientOptions(server.url))
        task = asyncio.create_task(client.run([req(0), req(1), req(2, arrival_s=3600.0)]))
        await asyncio.wait_for(both_streaming.wait(), DEADLINE_S)
        assert client.counters.scheduled == 3  # r2 was pulled and is waiting for its arrival time
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        records = client.records()
    assert [r.outcome for r in records] == [Outcome.CANCELLED, Outcome.CANCELLED, Outcome.NOT_SENT]
    assert records[0].sent_s is not None and records[2].sent_s is None


async def test_preflight_names_an_unreachable_url() -> None:
    async with FakeOpenAIServer() as server:
        url = server.url
    client = LoadClient(ClientOptions(url + "/v1"))
    with pytest.raises(TargetUnreachable, match=f"cannot reach {url}/v1"):
        await client.preflight(timeout_s=2.0)


async def test_replay_marks_a_mid_run_workload_error_partial(tmp_path: Path) -> None:
    def msg(role: str) -> str:
        return f'{{"role": "{role}", "from": "x", "text": "hi", "n_tokens": 2, "n_chars": 2}}'

    good = "".join(f'{{"id": "c{i}", "messages": [{msg("user")}, {msg("assistant")}]}}\n' for i in range(3))
    path = tmp_path / "chat.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(good + '{"id": "bad", "messages": 7}\n')
    workload = build_workload("sharegpt", {"time_scale": 0.001}, {"trace": str(path)})
    async with FakeOpenAIServer() as server:
        result = await asyncio.wait_for(
            replay(workload, ClientOptions(server.url), slo=SLO(ttft_ms=1e4)), DEADLINE_S
        )
    assert result.partial and result.partial_reason is not None
    assert f"{path}:4: expected 'id' string and 'messages' list" in result.partial_reason
    assert [r.outcome for r in result.records] == [Outcome.OK] * 3
    assert result.document["partial"] is True and result.document["summary"]["completed"] == 3


async def test_drain_timeout_cancels_what_is_still_running_and_returns_normally() -> None:
    streaming, hold = asyncio.Event(), asyncio.Event()

    async def handler(request: FakeRequest, reply: Responder) -> None:
        await reply.start()
        await reply.event(chat_chunk(text="first"))
        streaming.set()
        await hold.wait()

    class GatedTimer(SteppedTimer):
        """r1 comes due only once r0 is streaming, so the drain starts with r0 mid-stream."""

        async def sleep_until(self, t_s: float) -> None:
            if t_s > 0:
                await streaming.wait()
            await super().sleep_until(t_s)

    async with FakeOpenAIServer(handler) as server:
        client = LoadClient(ClientOptions(server.url, drain_timeout_s=0.0), GatedTimer())
        records = await asyncio.wait_for(client.run([req(0), req(1, arrival_s=1.0)]), DEADLINE_S)
        hold.set()
    assert [r.outcome for r in records] == [Outcome.CANCELLED, Outcome.CANCELLED]
    assert records[0].ttft_ms is not None and client.counters.finished == 2
