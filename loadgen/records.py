"""The per-request record: what the load client (real time) and the simulated fleet (virtual time) produce.

One ``RequestRecord`` per workload request, whatever happened to it; the
results module summarises lists of them, so a real replay and a simulation are
reported identically. Times are seconds on the run's own clock with 0 = run
start (``*_s``); latencies are milliseconds (``*_ms``).

Metric definitions (the same as vLLM's ``benchmark_serving`` and AIPerf where
they agree; see ``docs/results-schema.md`` for where they differ):

* ``ttft_ms``: first chunk with non-empty generated text (``delta.content``,
  ``delta.reasoning_content`` or completions ``text``) minus the send time of
  the request's first attempt. Role-only and empty chunks are ignored, as AIPerf
  does. With ``--honour-retry-after`` the time spent waiting out 429s is
  included (it is what the user waited).
* ``itl_ms``: every gap between consecutive non-empty content chunks.
* ``e2e_ms``: end of the stream (``[DONE]`` or the connection's end) minus the
  same send time.
* ``tpot_ms`` = (E2E − TTFT) / (output tokens − 1), defined for ≥ 2 tokens.
* ``output_tokens``: ``usage.completion_tokens`` when the server sent usage,
  else the number of non-empty content chunks (``output_tokens_from_usage``).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson


class Outcome(StrEnum):
    """How a request ended; a small closed set usable as a table column or label."""

    OK = "ok"  # 2xx and the stream completed
    SHED = "shed"  # 429 (after any retries)
    UNAVAILABLE = "unavailable"  # 503
    ERROR = "error"  # any other status, transport error, timeout or error mid-stream
    CANCELLED = "cancelled"  # the run was interrupted while the request was in flight
    NOT_SENT = "not_sent"  # the run ended before the request's send time


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    scheduled_s: float
    true_output_tokens: int
    source: str = ""
    tenant: str = "default"
    priority: str = "standard"
    session_id: str | None = None
    trace_prompt_tokens: int | None = None
    outcome: Outcome = Outcome.NOT_SENT
    sent_s: float | None = None
    end_s: float | None = None
    status: int | None = None
    error: str | None = None
    shed_reason: str | None = None
    retry_after_s: float | None = None
    first_retry_after_s: float | None = None  # Retry-After of the first refused attempt
    attempts: int = 0
    retry_wait_ms: float = 0.0
    backend: str | None = None
    ttft_ms: float | None = None
    e2e_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    output_tokens: int = 0
    output_tokens_from_usage: bool = False
    prompt_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    kv_usage_frac: float | None = None

    @property
    def tpot_ms(self) -> float | None:
        if self.ttft_ms is None or self.e2e_ms is None or self.output_tokens < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.output_tokens - 1)

    @property
    def send_lag_ms(self) -> float | None:
        """How late the first attempt left compared with the schedule (client or concurrency-cap delay)."""
        if self.sent_s is None:
            return None
        return (self.sent_s - self.scheduled_s) * 1000.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["outcome"] = self.outcome.value
        out["itl_ms"] = [round(gap, 4) for gap in self.itl_ms]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRecord:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown record fields {unknown}")
        values = dict(data)
        values["outcome"] = Outcome(values.get("outcome", Outcome.NOT_SENT.value))
        return cls(**values)


@dataclass(frozen=True, slots=True)
class BackendSample:
    """One observation of a backend's state over time (from the simulated fleet or a metrics scrape)."""

    t_s: float
    backend: str
    kv_usage_frac: float | None = None
    running: int | None = None
    waiting: int | None = None


def write_records(path: Path, records: Iterable[RequestRecord]) -> None:
    """One JSON object per line, gzip-compressed when ``path`` ends in ``.gz``."""
    lines = b"".join(orjson.dumps(r.to_json()) + b"\n" for r in records)
    if path.suffix == ".gz":
        with gzip.open(path, "wb", compresslevel=5) as handle:
            handle.write(lines)
    else:
        path.write_bytes(lines)


def read_records(path: Path) -> Iterator[RequestRecord]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield RequestRecord.from_json(orjson.loads(line))
