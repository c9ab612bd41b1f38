"""Poll every backend's engine ``/metrics`` and hand normalised results to a callback.

One asyncio task per backend scrapes ``url + metrics_path`` every
``metrics_poll.interval_s`` (a slow backend never delays the others), converts
the body with the configured or detected adapter (``detect.py``) and calls
``on_metrics(backend_id, EngineMetrics | None)``. ``None`` means "this scrape
gave nothing usable": the receiver (the proxy's fleet state) keeps Sluice's own
in-flight accounting and lets the engine data go stale.

Failure handling — nothing here raises into the caller or blocks the loop:

* the whole request (connect, headers, body) is bounded by ``timeout_s``;
* the body is read in chunks and abandoned past ``max_body_bytes``;
* bodies above ``offload_parse_bytes`` are parsed in a worker thread;
* each problem (``ScrapeProblem``) is logged as a warning the first time and
  then at most once per ``warn_every_s`` per backend and problem, with a count
  of the suppressed repeats; recovery is logged once at INFO;
* an exception in the callback is logged and polling continues.

Use one collector per process, started and stopped with the app (aiohttp
``cleanup_ctx``). It makes its own ``ClientSession`` unless given one; its own
is the better choice, so that a saturated data-plane connection pool never
delays a scrape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import aiohttp

from core.clock import Clock, MonotonicClock
from core.config import SluiceConfig
from core.types import BackendId, EngineMetrics
from state.engine_metrics.detect import Conversion, convert_text
from state.engine_metrics.status import ScrapeProblem, ScrapeStatus

log = logging.getLogger("sluice.engine_metrics")

MetricsCallback = Callable[[BackendId, EngineMetrics | None], None]
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_OFFLOAD_PARSE_BYTES = 64 * 1024
_READ_CHUNK_BYTES = 64 * 1024
_HEADERS = {"Accept": "text/plain;version=0.0.4;q=1.0, */*;q=0.1", "User-Agent": "sluice-engine-metrics"}


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    backend_id: BackendId
    url: str
    metrics_format: str


def targets_from_config(config: SluiceConfig) -> tuple[ScrapeTarget, ...]:
    """One target per backend whose ``metrics_format`` is not ``none``."""
    return tuple(
        ScrapeTarget(b.name, b.url + b.metrics_path, b.metrics_format)
        for b in config.backends
        if b.metrics_format != "none"
    )


class _ScrapeFailed(Exception):
    def __init__(self, problem: ScrapeProblem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


class _RateLimitedWarnings:
    """First occurrence of a (backend, problem) logs at once; repeats at most every ``every_s``."""

    def __init__(self, every_s: float, clock: Clock) -> None:
        self._every_s = every_s
        self._clock = clock
        self._last_s: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def warn(self, backend_id: str, kind: str, message: str) -> None:
        key = (backend_id, kind)
        now_s = self._clock.now_s()
        last_s = self._last_s.get(key)
        if last_s is not None and now_s - last_s < self._every_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        repeats = self._suppressed.pop(key, 0)
        suffix = f" ({repeats} more since the last warning)" if repeats else ""
        log.warning("engine metrics for backend %s: %s%s", backend_id, message, suffix)
        self._last_s[key] = now_s

    def reset(self, backend_id: str) -> None:
        for key in [k for k in self._last_s if k[0] == backend_id]:
            del self._last_s[key]
            self._suppressed.pop(key, None)


class EngineMetricsCollector:
    def __init__(
        self,
        targets: Iterable[ScrapeTarget],
        on_metrics: MetricsCallback,
        *,
        interval_s: float = 1.0,
        timeout_s: float = 0.5,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        offload_parse_bytes: int = DEFAULT_OFFLOAD_PARSE_BYTES,
        warn_every_s: float = 60.0,
        session: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._targets = tuple(targets)
        self._on_metrics = on_metrics
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._max_body_bytes = max_body_bytes
        self._offload_parse_bytes = offload_parse_bytes
        self._clock = clock or MonotonicClock()
        self._session = session
        self._owns_session = session is None
        self._warnings = _RateLimitedWarnings(warn_every_s, self._clock)
        self._status = {t.backend_id: ScrapeStatus() for t in self._targets}
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_config(
        cls,
        config: SluiceConfig,
        on_metrics: MetricsCallback,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
    ) -> Self:
        poll = config.metrics_poll
        return cls(
            targets_from_config(config),
            on_metrics,
            interval_s=poll.interval_s,
            timeout_s=poll.timeout_s,
            max_body_bytes=poll.max_body_bytes,
            session=session,
            clock=clock,
        )

    @property
    def targets(self) -> tuple[ScrapeTarget, ...]:
        return self._targets

    @property
    def status(self) -> Mapping[BackendId, ScrapeStatus]:
        """Per-backend scrape record, e.g. for ``/metrics`` and ``/debug`` pages."""
        return self._status

    async def start(self) -> None:
        """Start one polling task per target (first scrape immediately)."""
        if self._tasks:
            return
        self._ensure_session()
        self._tasks = [
            asyncio.create_task(self._poll_forever(t), name=f"engine-metrics:{t.backend_id}")
            for t in self._targets
        ]

    async def stop(self) -> None:
        """Cancel the polling tasks and close the session if this collector made it."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def poll_once(self) -> dict[BackendId, EngineMetrics | None]:
        """Scrape every target concurrently once and deliver the results (for tests and warm-up)."""
        self._ensure_session()
        results = await asyncio.gather(*(self.scrape(t) for t in self._targets))
        for target, metrics in zip(self._targets, results, strict=True):
            self._deliver(target.backend_id, metrics)
        return {t.backend_id: m for t, m in zip(self._targets, results, strict=True)}

    async def scrape(self, target: ScrapeTarget) -> EngineMetrics | None:
        """One scrape of one target; ``None`` (and a rate-limited warning) on any problem. Never raises."""
        try:
            body = await self._fetch(target)
            conversion = await self._convert(body, target.metrics_format, self._clock.now_s())
        except _ScrapeFailed as failed:
            self._record_failure(target.backend_id, failed.problem, failed.detail)
            return None
        except Exception as exc:  # the task boundary: a bug in Sluice must not stop polling
            log.exception("engine metrics for backend %s: unexpected error", target.backend_id)
            self._record_failure(target.backend_id, ScrapeProblem.INTERNAL, repr(exc))
            return None
        return self._record_conversion(target.backend_id, conversion)

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),  # bounded per scrape by asyncio.timeout
                connector=aiohttp.TCPConnector(limit_per_host=2),
                headers=_HEADERS,
            )
        return self._session

    async def _poll_forever(self, target: ScrapeTarget) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started_s = loop.time()
            self._deliver(target.backend_id, await self.scrape(target))
            await asyncio.sleep(max(0.0, self._interval_s - (loop.time() - started_s)))

    async def _fetch(self, target: ScrapeTarget) -> bytes:
        session = self._ensure_session()
        try:
            async with (
                asyncio.timeout(self._timeout_s),
                session.get(target.url, allow_redirects=False, headers=_HEADERS) as response,
            ):
                if response.status != 200:
                    raise _ScrapeFailed(
                        ScrapeProblem.HTTP_STATUS, f"HTTP {response.status} from {target.url}"
                    )
                return await self._read_capped(response)
        except TimeoutError:
            raise _ScrapeFailed(
                ScrapeProblem.TIMEOUT, f"no complete answer from {target.url} within {self._timeout_s} s"
            ) from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
            raise _ScrapeFailed(ScrapeProblem.BAD_RESPONSE, f"{target.url}: {exc!r}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _ScrapeFailed(ScrapeProblem.UNREACHABLE, f"{target.url}: {exc!r}") from None

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        declared = response.content_length
        if declared is not None and declared > self._max_body_bytes:
            raise _ScrapeFailed(ScrapeProblem.TOO_LARGE, f"{declared} bytes > {self._max_body_bytes}")
        body = bytearray()
        async for chunk in response.content.iter_chunked(_READ_CHUNK_BYTES):
            body += chunk
            if len(body) > self._max_body_bytes:
                raise _ScrapeFailed(ScrapeProblem.TOO_LARGE, f"more than {self._max_body_bytes} bytes")
        return bytes(body)

    async def _convert(self, body: bytes, metrics_format: str, scraped_at_s: float) -> Conversion:
        if len(body) > self._offload_parse_bytes:
            return await asyncio.to_thread(_decode_and_convert, body, metrics_format, scraped_at_s)
        return _decode_and_convert(body, metrics_format, scraped_at_s)

    def _record_conversion(self, backend_id: BackendId, conversion: Conversion) -> EngineMetrics | None:
        status = self._status[backend_id]
        if conversion.malformed_lines:
            status.malformed_lines_total += conversion.malformed_lines
            first = conversion.first_malformed
            message = f"skipped {conversion.malformed_lines} malformed line(s), first: {first!r}"
            self._warnings.warn(backend_id, "malformed_lines", message)
        if conversion.metrics is None:
            problem = conversion.problem or ScrapeProblem.INTERNAL
            self._record_failure(backend_id, problem, conversion.detail)
            return None
        if status.consecutive_failures:
            log.info(
                "engine metrics for backend %s are back (%s) after %d failed scrape(s)",
                backend_id,
                conversion.engine,
                status.consecutive_failures,
            )
            self._warnings.reset(backend_id)
        status.engine = conversion.engine
        status.scrapes_ok_total += 1
        status.consecutive_failures = 0
        status.last_ok_s = conversion.metrics.scraped_at_s
        status.last_problem = None
        status.last_detail = ""
        return conversion.metrics

    def _record_failure(self, backend_id: BackendId, problem: ScrapeProblem, detail: str) -> None:
        status = self._status[backend_id]
        status.scrapes_failed_total += 1
        status.failures_by_problem[problem] = status.failures_by_problem.get(problem, 0) + 1
        status.consecutive_failures += 1
        status.last_problem = problem
        status.last_detail = detail
        self._warnings.warn(backend_id, problem.value, f"{problem.value}: {detail}; engine data is stale")

    def _deliver(self, backend_id: BackendId, metrics: EngineMetrics | None) -> None:
        try:
            self._on_metrics(backend_id, metrics)
        except Exception:  # the receiver's bug must not stop polling
            log.exception("engine metrics callback failed for backend %s", backend_id)


def _decode_and_convert(body: bytes, metrics_format: str, scraped_at_s: float) -> Conversion:
    return convert_text(body.decode("utf-8", errors="replace"), metrics_format, scraped_at_s)
