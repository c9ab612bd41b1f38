"""Send one workload request over HTTP, stream the answer and fill its ``RequestRecord``.

One attempt = one POST. The record gets the HTTP status, the backend that
answered (``x-sluice-backend``), the shed reason and ``Retry-After`` of a 429,
the OpenAI error ``code`` of an error body (or ``x-sluice-error-code``), and the
stream timing (``loadgen.stream``). Transport failures become short error
codes: ``connect_error``, ``timeout``, ``disconnected`` (the server closed the
connection mid-response), ``bad_stream_chunk``, ``no_content`` (a 200 stream
with no generated text, which vLLM's client also counts as failed).
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from core import headers as hdr
from core.errors import ERROR_CODE_HEADER, RETRY_AFTER_MS_HEADER, SHED_REASON_HEADER
from loadgen.records import Outcome, RequestRecord
from loadgen.stream import SSEDecoder, StreamTimer, message_text

ERROR_BODY_LIMIT_BYTES = 64 * 1024


class Timer(Protocol):
    """The client's clock and its way of waiting; real time in production, jumpable in tests."""

    def now_s(self) -> float: ...

    async def sleep_until(self, t_s: float) -> None: ...


class RealTimer:
    __slots__ = ()

    def now_s(self) -> float:
        return time.monotonic()

    async def sleep_until(self, t_s: float) -> None:
        delay_s = t_s - time.monotonic()
        if delay_s > 0:
            await asyncio.sleep(delay_s)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status: int | None
    retry_after_s: float | None


def parse_retry_after(value: str | None, now_epoch_s: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110); None if absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        now = time.time() if now_epoch_s is None else now_epoch_s
        return max(0.0, when.timestamp() - now)
    return seconds if seconds >= 0 else None


def retry_after_from(response_headers: Mapping[str, str]) -> float | None:
    """The server's delay as the openai client reads it: ``retry-after-ms`` first, then ``Retry-After``."""
    value = response_headers.get(RETRY_AFTER_MS_HEADER)
    if value is not None:
        try:
            ms = float(value)
        except ValueError:
            ms = math.nan
        if math.isfinite(ms) and ms >= 0:
            return ms / 1000.0
    return parse_retry_after(response_headers.get("Retry-After"))


def _error_code(body: bytes, response_headers: Mapping[str, str]) -> str | None:
    code = response_headers.get(ERROR_CODE_HEADER)
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        # OpenAI/vLLM/Sluice put a string in "code"; llama.cpp puts the status there, the kind in "type".
        for key in ("code", "type"):
            value = parsed["error"].get(key)
            if isinstance(value, str) and value:
                return value
    return code


def _outcome_for_status(status: int) -> Outcome:
    if status == 429:
        return Outcome.SHED
    if status == 503:
        return Outcome.UNAVAILABLE
    return Outcome.ERROR


class Sender:
    """Posts requests through one shared ``aiohttp.ClientSession``."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, timer: Timer, api_key: str | None
    ) -> None:
        self._session = session
        self._base_url = base_url
        self._timer = timer
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def attempt(
        self,
        record: RequestRecord,
        path: str,
        body: bytes,
        request_headers: Mapping[str, str],
        first_sent_s: float,
    ) -> AttemptResult:
        """One POST; updates ``record`` in place (outcome, status, timing) and returns what a retry needs."""
        timer = StreamTimer(first_sent_s)
        record.attempts += 1
        headers = {"Content-Type": "application/json", **self._auth, **request_headers}
        try:
            async with self._session.post(self._base_url + path, data=body, headers=headers) as response:
                record.status = response.status
                record.backend = response.headers.get(hdr.BACKEND, record.backend)
                if response.status >= 400:
                    return await self._failed(record, response)
                await self._consume(response, timer)
        except asyncio.CancelledError:
            self._apply_timing(record, timer)
            record.outcome = Outcome.CANCELLED
            raise
        except aiohttp.ClientConnectorError:
            self._fail(record, timer, "connect_error")
            return AttemptResult(None, None)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            self._fail(record, timer, "timeout")
            return AttemptResult(record.status, None)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            self._fail(record, timer, "disconnected")
            return AttemptResult(record.status, None)
        except aiohttp.ClientError as exc:
            self._fail(record, timer, f"client_error:{type(exc).__name__}")
            return AttemptResult(record.status, None)
        except orjson.JSONDecodeError:
            self._fail(record, timer, "bad_response")
            return AttemptResult(record.status, None)
        self._apply_timing(record, timer)
        if timer.error is not None:
            record.outcome, record.error = Outcome.ERROR, timer.error
        elif timer.first_s is None:
            record.outcome, record.error = Outcome.ERROR, "no_content"
        else:
            record.outcome, record.error = Outcome.OK, None
        return AttemptResult(record.status, None)

    async def _consume(self, response: aiohttp.ClientResponse, timer: StreamTimer) -> None:
        if not response.content_type.startswith("text/event-stream"):
            payload = orjson.loads(await response.read())
            now_s = self._timer.now_s()
            if isinstance(payload, dict):
                if message_text(payload):
                    timer.on_content(now_s)
                usage = payload.get("usage")
                if isinstance(usage, dict):
                    timer.on_usage(usage)
            timer.finish(now_s)
            return
        decoder = SSEDecoder()
        async for data in response.content.iter_any():
            payloads = decoder.feed(data)
            if payloads:
                now_s = self._timer.now_s()
                for raw in payloads:
                    timer.on_payload(now_s, raw)
                if timer.done:
                    break
        if not timer.done:
            for raw in decoder.flush():
                timer.on_payload(self._timer.now_s(), raw)
        timer.finish(self._timer.now_s())

    async def _failed(self, record: RequestRecord, response: aiohttp.ClientResponse) -> AttemptResult:
        body = await response.content.read(ERROR_BODY_LIMIT_BYTES)
        record.end_s = self._timer.now_s()
        record.outcome = _outcome_for_status(response.status)
        record.error = _error_code(body, response.headers) or f"http_{response.status}"
        retry_after_s = retry_after_from(response.headers)
        if response.status == 429:
            record.shed_reason = response.headers.get(SHED_REASON_HEADER)
            record.retry_after_s = retry_after_s
            if record.attempts == 1:
                record.first_retry_after_s = retry_after_s
        return AttemptResult(response.status, retry_after_s)

    def _fail(self, record: RequestRecord, timer: StreamTimer, code: str) -> None:
        self._apply_timing(record, timer)
        record.outcome, record.error = Outcome.ERROR, code
        record.end_s = self._timer.now_s()

    @staticmethod
    def _apply_timing(record: RequestRecord, timer: StreamTimer) -> None:
        sent = timer.sent_s
        record.ttft_ms = (timer.first_s - sent) * 1000.0 if timer.first_s is not None else None
        record.itl_ms = [gap * 1000.0 for gap in timer.gaps_s]
        record.output_tokens = timer.output_tokens
        record.output_tokens_from_usage = timer.usage_tokens is not None
        record.prompt_tokens = timer.prompt_tokens
        record.cached_prompt_tokens = timer.cached_tokens
        if timer.end_s is not None:
            record.end_s = timer.end_s
            record.e2e_ms = (timer.end_s - sent) * 1000.0


def encode_body(body: Mapping[str, Any]) -> bytes:
    return orjson.dumps(body)
