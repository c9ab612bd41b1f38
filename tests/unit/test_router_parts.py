"""Router parts: SSE tally and usage, hop-by-hop headers, retry budget, intake, watchdog, metrics."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from core.clock import ManualClock
from core.errors import InvalidParameter, MalformedJSON, MissingParameter, UnknownModel, UnsupportedMediaType
from router import intake, sse
from router.hop_headers import client_response_headers, upstream_request_headers
from router.metric_types import Counter, Histogram, LoopCollector
from router.retry_budget import RetryBudget
from router.sse import StreamTally, find_usage
from router.watchdog import Watchdog, WatchdogTimer

EVENT = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'
USAGE = (
    b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13,'
    b'"prompt_tokens_details":{"cached_tokens":5}}}\n\n'
)


def test_tally_counts_events_across_any_chunking() -> None:
    stream = EVENT * 4 + b"data: [DONE]\n\n"
    for size in (1, 2, 3, 7, 50, len(stream)):
        tally = StreamTally()
        for i in range(0, len(stream), size):
            tally.feed(stream[i : i + size])
        assert tally.events == 5, size
        usage, tokens = tally.summary()
        assert usage is None
        assert tokens == 4


def test_tally_counts_crlf_events_and_prefers_usage() -> None:
    tally = StreamTally()
    tally.feed(EVENT.replace(b"\n\n", b"\r\n\r\n") * 2)
    assert tally.events == 2
    tally.feed(EVENT + USAGE)
    tally.feed(b"data: [DONE]\n\n")
    usage, tokens = tally.summary()
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens) == (9, 4, 5)
    assert tokens == 4


def test_find_usage_in_bodies() -> None:
    body = b'{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'
    usage = find_usage(body)
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens) == (3, 2, None)
    assert find_usage(b'{"usage": null}') is None
    assert find_usage(b'{"usage": {"prompt_tokens": "many"}}') is not None
    assert find_usage(b'{"usage": {broken') is None
    assert find_usage(b"no usage here") is None


def test_hop_by_hop_headers_removed_both_ways() -> None:
    source = CIMultiDict(
        [
            ("Host", "proxy"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "10"),
            ("X-Custom", "a"),
            ("X-Custom", "b"),
            ("x-request-id", "old"),
            ("Authorization", "Bearer k"),
        ]
    )
    up = upstream_request_headers(source, "rid-1")
    assert up == [
        ("X-Custom", "a"),
        ("X-Custom", "b"),
        ("Authorization", "Bearer k"),
        ("x-request-id", "rid-1"),
    ]
    down = client_response_headers(
        CIMultiDict(
            [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked"), ("x-request-id", "r")]
        )
    )
    assert list(down.items()) == [("Content-Type", "text/event-stream"), ("x-request-id", "r")]


def test_retry_budget_ratio_floor_and_window() -> None:
    clock = ManualClock(0.0)
    budget = RetryBudget(ratio=0.1, window_s=10.0, min_retries=2, clock=clock)
    assert budget.try_spend()
    assert budget.try_spend()
    assert not budget.try_spend()  # floor of 2 used up at low volume
    for _ in range(50):
        budget.record_request()
    assert budget.try_spend()  # 10% of 50 = 5 allowed: 3 more
    assert budget.try_spend()
    assert budget.try_spend()
    assert not budget.try_spend()
    assert budget.window_counts == (50, 5)
    clock.advance(10.5)  # everything left the window
    assert budget.window_counts == (0, 0)
    assert budget.try_spend()


def test_intake_checks() -> None:
    intake.check_content_type(None)
    intake.check_content_type("application/json; charset=utf-8")
    intake.check_content_type("application/vnd.api+json")
    with pytest.raises(UnsupportedMediaType):
        intake.check_content_type("text/plain")
    with pytest.raises(MalformedJSON, match="not valid JSON"):
        intake.parse_json_object(b'{"a": ')
    with pytest.raises(MissingParameter):
        intake.requested_model({}, frozenset({"m"}))
    with pytest.raises(UnknownModel) as info:
        intake.requested_model({"model": "x" * 500}, frozenset({"m"}))
    assert len(info.value.message) < 200  # client input is shortened in messages
    # An unknown class is not an error: it gets the default class (issue 7, "Bad input").
    assert intake.priority_from("gold", "standard", ("critical", "standard")) == "standard"
    assert intake.priority_from(None, "standard", ("standard",)) == "standard"
    assert intake.tenant_from(None) == "default"
    with pytest.raises(InvalidParameter):
        intake.tenant_from("t" * 500)
    assert intake.session_key_from(None, {"user": "u1"}) == "u1"
    assert intake.session_key_from("s9", {"user": "u1"}) == "s9"
    assert intake.valid_request_id("abc-1") == "abc-1"
    assert intake.valid_request_id("has space") is None
    ids = intake.RequestIds()
    assert ids.next() != ids.next()


async def test_watchdog_cancels_its_task_only_when_expired() -> None:
    loop = asyncio.get_running_loop()

    async def stalled() -> str:
        watchdog = Watchdog(loop.time())  # already due
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "timeout" if watchdog.expired() else "cancelled"
        return "unreachable"

    assert await stalled() == "timeout"

    started = asyncio.Event()

    async def outside_cancel() -> None:
        watchdog = Watchdog(loop.time() + 3600)
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            assert not watchdog.expired()
            raise

    task = asyncio.create_task(outside_cancel())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_shared_watchdog_timer_fires_each_watchdog_at_its_own_deadline() -> None:
    """One timer for many watchdogs: only the expired one's task is cancelled, the others run on."""
    loop = asyncio.get_running_loop()
    timer = WatchdogTimer(loop)
    outcomes: dict[str, str] = {}
    registered: list[str] = []
    started = asyncio.Event()

    async def attempt(name: str, timeout_s: float, release: asyncio.Event) -> None:
        watchdog = Watchdog(loop.time() + timeout_s, timer, loop)
        try:
            registered.append(name)
            if len(registered) == 3:
                started.set()
            await release.wait()
            outcomes[name] = "done"
        except asyncio.CancelledError:
            outcomes[name] = "timeout" if watchdog.expired() else "cancelled"
        finally:
            watchdog.stop()

    never, later = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(attempt("long", 3600.0, later)),
        asyncio.create_task(attempt("short", 0.01, never)),  # earlier than the armed timer: re-arms it
        asyncio.create_task(attempt("other", 3600.0, later)),
    ]
    await started.wait()
    await tasks[1]
    assert outcomes == {"short": "timeout"}
    assert len(timer) == 2  # the fired one is forgotten, the others still watched
    later.set()
    await asyncio.gather(*tasks)
    assert outcomes == {"short": "timeout", "long": "done", "other": "done"}
    assert len(timer) == 0
    timer.close()


async def test_watchdog_push_moves_the_shared_timer_earlier_only_when_needed() -> None:
    loop = asyncio.get_running_loop()
    timer = WatchdogTimer(loop)
    fired = asyncio.Event()

    async def stream() -> str:
        watchdog = Watchdog(loop.time() + 3600.0, timer, loop)
        watchdog.push(0.01)  # the idle timeout after a chunk, shorter than the first-byte one
        try:
            await fired.wait()
        except asyncio.CancelledError:
            return "timeout" if watchdog.expired() else "cancelled"
        finally:
            watchdog.stop()
        return "done"

    assert await asyncio.create_task(stream()) == "timeout"
    timer.close()


def test_loop_metrics_render() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    counter = Counter("t_total", "doc", ("a",))
    hist = Histogram("t_seconds", "doc", ("a",), (0.1, 1.0))
    counter.labels("x").inc(2)
    child = hist.labels("x")
    for value in (0.05, 0.1, 0.5, 5.0):
        child.observe(value)
    registry = CollectorRegistry()
    registry.register(LoopCollector([counter, hist]))
    text = generate_latest(registry).decode()
    assert 't_total{a="x"} 2.0' in text
    assert 't_seconds_bucket{a="x",le="0.1"} 2.0' in text
    assert 't_seconds_bucket{a="x",le="1.0"} 3.0' in text
    assert 't_seconds_bucket{a="x",le="+Inf"} 4.0' in text
    assert 't_seconds_sum{a="x"} 5.65' in text
    with pytest.raises(ValueError, match="expected labels"):
        counter.labels("x", "y")


_ONE_BYTE_PER_STEP = re.compile(rb'"usage"\s*:\s*(\{(?:[^{}]|\{[^{}]*\})*\})')  # the plain form


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from([b'"usage"', b":", b" ", b"{", b"}", b'"a":1', b",", b"null", b"x", b"\n"]),
        max_size=24,
    )
)
def test_usage_pattern_matches_as_the_plain_form(pieces: list[bytes]) -> None:
    """The possessive pattern of ``router.sse`` finds exactly what the backtracking form finds."""
    tail = b"".join(pieces)
    for start in range(len(tail) + 1):
        ours, plain = sse._USAGE_OBJECT.match(tail, start), _ONE_BYTE_PER_STEP.match(tail, start)
        assert (ours and ours.group(1)) == (plain and plain.group(1))


def test_response_headers_sluice_names_replace_the_backends_in_place() -> None:
    from types import SimpleNamespace
    from typing import Any

    from router.exchange import Exchange
    from router.relay import _response_headers

    ex = Exchange("rid-9", 0.0)
    ex.backend_id = "b0"

    def names(backend: list[tuple[str, str]]) -> list[tuple[str, str]]:
        resp: Any = SimpleNamespace(headers=CIMultiDict(backend))
        return list(CIMultiDict(_response_headers(resp, ex)).items())

    plain = [("Content-Type", "application/json"), ("Connection", "keep-alive"), ("X-Own", "1")]
    assert names(plain) == [
        ("Content-Type", "application/json"),
        ("X-Own", "1"),
        ("x-request-id", "rid-9"),
        ("x-sluice-backend", "b0"),
    ]
    clashing = [("X-Request-Id", "theirs"), ("Content-Type", "application/json")]
    assert names(clashing) == [
        ("x-request-id", "rid-9"),
        ("Content-Type", "application/json"),
        ("x-sluice-backend", "b0"),
    ]
