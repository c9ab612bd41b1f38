"""Prefix-cache hit rate from counter deltas between scrapes."""

from __future__ import annotations

import pytest

from core.types import EngineMetrics
from state.engine_metrics import PrefixHitRateTracker, prefix_hit_rate


def scrape(queries: float | None, hits: float | None, gauge: float | None = None) -> EngineMetrics:
    return EngineMetrics(
        engine="vllm",
        scraped_at_s=0.0,
        prefix_cache_queries_tokens_total=queries,
        prefix_cache_hits_tokens_total=hits,
        prefix_hit_rate_frac=gauge,
    )


def test_rate_is_the_interval_delta_not_the_lifetime_ratio() -> None:
    # Lifetime ratio 9,100 / 11,000 = 0.83, but in this interval only 100 of 1,000 tokens hit.
    assert prefix_hit_rate(scrape(10_000, 9_000), scrape(11_000, 9_100)) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, scrape(100, 50)),  # first scrape
        (scrape(100, 50), scrape(100, 50)),  # idle: no new queries
        (scrape(100, 50), scrape(40, 10)),  # counters reset (engine restart)
        (scrape(None, None), scrape(100, 50)),
        (scrape(100, 50), scrape(None, None)),
    ],
)
def test_no_rate_without_a_valid_interval(before: EngineMetrics | None, after: EngineMetrics) -> None:
    assert prefix_hit_rate(before, after) is None


def test_rate_is_clamped_when_hits_run_ahead_of_queries() -> None:
    assert prefix_hit_rate(scrape(100, 0), scrape(110, 20)) == 1.0


def test_tracker_keeps_last_rate_while_idle_or_stale_and_restarts_after_reset() -> None:
    tracker = PrefixHitRateTracker()
    assert tracker.update("b", scrape(1000, 0)) is None
    assert tracker.update("b", scrape(2000, 500)) == pytest.approx(0.5)
    assert tracker.update("b", scrape(2000, 500)) == pytest.approx(0.5)  # idle
    assert tracker.update("b", None) == pytest.approx(0.5)  # failed scrape
    assert tracker.update("b", scrape(3000, 1400)) == pytest.approx(0.9)
    assert tracker.update("b", scrape(10, 5)) is None  # restart: old rate is void
    assert tracker.update("b", scrape(110, 30)) == pytest.approx(0.25)
    assert tracker.rate("other") is None


def test_tracker_uses_the_engine_gauge_when_there_are_no_counters() -> None:
    tracker = PrefixHitRateTracker()
    assert tracker.update("s", scrape(None, None, gauge=0.42)) == pytest.approx(0.42)
    assert tracker.update("s", scrape(None, None, gauge=None)) is None
    tracker.update("t", scrape(0, 0))
    tracker.update("t", scrape(10, 10))
    tracker.forget("t")
    assert tracker.rate("t") is None
