"""Why a scrape gave no usable metrics, and each backend's scrape record.

``ScrapeProblem`` values are low-cardinality and meant as a metric label
(e.g. ``sluice_engine_metrics_scrape_failures_total{backend, problem}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ScrapeProblem(StrEnum):
    UNREACHABLE = "unreachable"  # connection refused/reset, DNS, TLS
    TIMEOUT = "timeout"  # no complete answer within metrics_poll.timeout_s
    HTTP_STATUS = "http_status"  # anything but 200 (a 404 means metrics are not enabled)
    BAD_RESPONSE = "bad_response"  # broken HTTP framing or encoding
    TOO_LARGE = "too_large"  # body above metrics_poll.max_body_bytes
    NO_ENGINE_METRICS = "no_engine_metrics"  # malformed text, or no known engine's metrics in it
    WRONG_ENGINE = "wrong_engine"  # another engine's metrics than configured
    AMBIGUOUS_ENGINE = "ambiguous_engine"  # format "auto" and several engines' metrics present
    INTERNAL = "internal"  # a bug in Sluice; logged with a traceback


@dataclass(slots=True)
class ScrapeStatus:
    """Mutable per-backend record kept by the collector (read it, don't write it)."""

    engine: str | None = None
    scrapes_ok_total: int = 0
    scrapes_failed_total: int = 0
    failures_by_problem: dict[ScrapeProblem, int] = field(default_factory=dict)
    consecutive_failures: int = 0
    last_ok_s: float | None = None
    last_problem: ScrapeProblem | None = None
    last_detail: str = ""
    malformed_lines_total: int = 0
