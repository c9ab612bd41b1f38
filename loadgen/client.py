"""The open-loop load client: sends a workload to any OpenAI-compatible URL on the workload's schedule.

Open loop: request i leaves at ``start + arrival_s`` whether or not earlier
requests have finished, so a slow server builds a queue (as real users do)
instead of quietly lowering the offered load, which a closed-loop client would.
The only waits are the ones real clients have:

* dependent session turns (``after_request_id``) leave ``think_time_s`` after
  their parent *finished* (and never before their own ``arrival_s``); the
  turn is sent whatever the parent's outcome, so every policy compared sees
  the same requests;
* ``max_concurrency`` (optional) caps requests in flight, like vLLM's
  ``--max-concurrency``; time spent waiting for a slot shows up as send lag;
* ``honour_retry_after``: a 429 (or 503) with ``Retry-After`` is retried
  after the advertised delay, at most ``max_retries`` times; attempts and the
  total wait are recorded. As the openai client (``openai._base_client``):
  ``retry-after-ms`` is read before ``Retry-After``, a delay over
  ``OPENAI_MAX_RETRY_AFTER_S`` (or not positive) is not waited out (the client
  gives up), and every attempt carries ``x-stainless-retry-count`` (0 on the
  first attempt), whether or not the client retries.

``drain_timeout_s`` (optional) bounds the wait after the last request was
sent: what is still running then is cancelled and recorded ``cancelled``
(it counts as sent, never as good). Bounded runs (``sluice demo``, the peer
comparison) use it so an overloaded target cannot stretch the run without end.

The workload iterator is consumed lazily, so prompt text is generated only
as requests come due. ``run`` returns every request's ``RequestRecord``;
cancelling ``run`` (Ctrl-C in ``sluice replay``) cancels in-flight requests,
marks them ``cancelled`` and leaves ``records()`` usable for partial results.
Before the first request, ``preflight`` fails fast with ``TargetUnreachable``
naming the URL if nothing listens there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

from core import headers as hdr
from loadgen.records import Outcome, RequestRecord
from loadgen.sender import RealTimer, Sender, Timer, encode_body
from loadgen.workload import WorkloadRequest

# The openai client honours a server-directed delay only in (0, 120] s (``MAX_RETRY_AFTER_DELAY``)
# and retries twice by default (``DEFAULT_MAX_RETRIES``).
OPENAI_MAX_RETRY_AFTER_S = 120.0
OPENAI_DEFAULT_MAX_RETRIES = 2


def honoured_retry_after(retry_after_s: float | None) -> bool:
    """Whether the openai client would wait out this server-directed delay and retry."""
    return retry_after_s is not None and 0.0 < retry_after_s <= OPENAI_MAX_RETRY_AFTER_S


class TargetUnreachable(Exception):
    """Nothing answers at the target URL."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(f"cannot reach {url}: {reason}")


@dataclass(frozen=True, slots=True)
class ClientOptions:
    base_url: str
    max_concurrency: int | None = None
    honour_retry_after: bool = False
    max_retries: int = OPENAI_DEFAULT_MAX_RETRIES
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 600.0
    api_key: str | None = None
    drain_timeout_s: float | None = None

    @property
    def root_url(self) -> str:
        """The base URL without a trailing ``/`` or ``/v1`` (request paths start with ``/v1``)."""
        url = self.base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url


@dataclass(slots=True)
class Counters:
    """Live totals for a progress display."""

    scheduled: int = 0
    sent: int = 0
    finished: int = 0
    ok: int = 0
    shed: int = 0
    failed: int = 0

    @property
    def in_flight(self) -> int:
        return self.sent - self.finished


class LoadClient:
    def __init__(self, options: ClientOptions, timer: Timer | None = None) -> None:
        self.options = options
        self.counters = Counters()
        self._timer: Timer = timer or RealTimer()
        self._records: list[RequestRecord] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._children: dict[str, WorkloadRequest] = {}
        self._finished_at_s: dict[str, float] = {}
        self._by_id: dict[str, RequestRecord] = {}
        self._start_s = 0.0
        self._idle = asyncio.Event()
        self._semaphore = asyncio.Semaphore(options.max_concurrency) if options.max_concurrency else None
        self._sender: Sender | None = None
        self._cancelling = False

    def records(self) -> list[RequestRecord]:
        """Every request scheduled so far, in schedule order (usable after cancellation)."""
        return list(self._records)

    def _session(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.options.connect_timeout_s, sock_read=self.options.read_timeout_s
        )
        connector = aiohttp.TCPConnector(limit=self.options.max_concurrency or 0, limit_per_host=0)
        return aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=False)

    async def preflight(self, timeout_s: float = 5.0) -> None:
        """``GET /v1/models``; any HTTP answer means the target is up (even 404)."""
        url = self.options.root_url + "/v1/models"
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
                await response.read()
        except aiohttp.ClientConnectorError as exc:
            raise TargetUnreachable(self.options.base_url, str(exc.os_error or exc)) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TargetUnreachable(self.options.base_url, f"{type(exc).__name__} {exc}".strip()) from None

    async def run(self, requests: Iterable[WorkloadRequest]) -> list[RequestRecord]:
        """Send every request on schedule and wait for all of them; returns their records."""
        async with self._session() as session:
            self._sender = Sender(session, self.options.root_url, self._timer, self.options.api_key)
            self._start_s = self._timer.now_s()
            try:
                for request in requests:
                    record = self._schedule(request)
                    if request.after_request_id is None:
                        await self._timer.sleep_until(self._start_s + request.arrival_s)
                        self._launch(request, record, None)
                    else:
                        self._attach_child(request)
                await self._drain()
            except asyncio.CancelledError:
                await self._cancel_all()
                raise
            finally:
                self._sender = None
        return self.records()

    async def _drain(self) -> None:
        """Wait for what is in flight, at most ``drain_timeout_s``; then cancel the rest."""

        async def idle() -> None:
            while self._tasks or self._children:
                self._idle.clear()
                await self._idle.wait()

        try:
            await asyncio.wait_for(idle(), self.options.drain_timeout_s)
        except TimeoutError:
            await self._cancel_all()

    def _schedule(self, request: WorkloadRequest) -> RequestRecord:
        record = RequestRecord(
            request_id=request.request_id,
            scheduled_s=request.arrival_s,
            true_output_tokens=request.true_output_tokens,
            source=request.source,
            tenant=request.tenant,
            priority=request.priority,
            session_id=request.session_id,
            trace_prompt_tokens=request.trace_prompt_tokens,
        )
        self._records.append(record)
        self._by_id[request.request_id] = record
        self.counters.scheduled += 1
        return record

    def _attach_child(self, request: WorkloadRequest) -> None:
        parent = request.after_request_id
        assert parent is not None
        finished_s = self._finished_at_s.pop(parent, None)
        if finished_s is not None:
            self._launch(request, self._by_id[request.request_id], finished_s + request.think_time_s)
        else:
            self._children[parent] = request

    def _launch(self, request: WorkloadRequest, record: RequestRecord, not_before_s: float | None) -> None:
        task = asyncio.create_task(self._one(request, record, not_before_s))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def _one(self, request: WorkloadRequest, record: RequestRecord, not_before_s: float | None) -> None:
        if not_before_s is not None:
            record.scheduled_s = max(request.arrival_s, not_before_s - self._start_s)
            await self._timer.sleep_until(self._start_s + record.scheduled_s)
        try:
            if self._semaphore is not None:
                async with self._semaphore:
                    await self._send(request, record)
            else:
                await self._send(request, record)
        finally:
            self._on_finished(request, record)

    async def _send(self, request: WorkloadRequest, record: RequestRecord) -> None:
        assert self._sender is not None
        body = encode_body(request.body)
        request_headers = request.http_headers()
        first_sent_s = self._timer.now_s()
        record.sent_s = first_sent_s - self._start_s
        self.counters.sent += 1
        while True:
            attempt_headers = {**request_headers, hdr.CLIENT_RETRY_COUNT: str(record.attempts)}
            result = await self._sender.attempt(record, request.path, body, attempt_headers, first_sent_s)
            retryable = result.status in (429, 503) and honoured_retry_after(result.retry_after_s)
            if (
                not (self.options.honour_retry_after and retryable)
                or record.attempts > self.options.max_retries
            ):
                return
            assert result.retry_after_s is not None
            wait_from_s = self._timer.now_s()
            await self._timer.sleep_until(wait_from_s + result.retry_after_s)
            record.retry_wait_ms += (self._timer.now_s() - wait_from_s) * 1000.0

    def _on_finished(self, request: WorkloadRequest, record: RequestRecord) -> None:
        now_s = self._timer.now_s()
        if record.sent_s is not None:
            self.counters.finished += 1
            if record.outcome is Outcome.OK:
                self.counters.ok += 1
            elif record.outcome is Outcome.SHED:
                self.counters.shed += 1
            else:
                self.counters.failed += 1
        if record.end_s is not None:
            record.end_s -= self._start_s
        child = self._children.pop(request.request_id, None)
        if child is not None and not self._cancelling:
            self._launch(child, self._by_id[child.request_id], now_s + child.think_time_s)
        elif request.session_id is not None:
            self._finished_at_s[request.request_id] = now_s

    async def _cancel_all(self) -> None:
        self._cancelling = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for record in self._records:
            if record.sent_s is not None and record.outcome is Outcome.NOT_SENT:
                record.outcome = Outcome.CANCELLED
