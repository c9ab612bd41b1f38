"""Prefix-cache hit rate from two scrapes of an engine's cumulative counters.

Rule: ``rate = (hits_now - hits_before) / (queries_now - queries_before)``
over the interval between two scrapes, in tokens (vLLM, SGLang and llama.cpp
all count tokens). Why deltas: the cumulative ratio since start-up barely moves
after a few hours, while routing cares about what the cache does *now*.

Edge cases:

* no new queries in the interval (idle backend): no new information, so the
  tracker keeps the last rate it computed;
* a counter went backwards (engine restarted): the interval is discarded and
  the tracker starts again from this scrape;
* the engine exports no counters but its own recent-rate gauge
  (``EngineMetrics.prefix_hit_rate_frac``, SGLang ``cache_hit_rate``): the gauge is used;
* the result is clamped into [0, 1] (hits can run ahead of queries within one
  scrape when an engine updates the two counters at different moments).
"""

from __future__ import annotations

from core.types import BackendId, EngineMetrics


def prefix_hit_rate(previous: EngineMetrics | None, current: EngineMetrics) -> float | None:
    """Hit rate over the interval between two scrapes; ``None`` when it cannot be computed."""
    now_q, now_h = current.prefix_cache_queries_tokens_total, current.prefix_cache_hits_tokens_total
    if previous is None or now_q is None or now_h is None:
        return None
    then_q, then_h = previous.prefix_cache_queries_tokens_total, previous.prefix_cache_hits_tokens_total
    if then_q is None or then_h is None:
        return None
    d_queries, d_hits = now_q - then_q, now_h - then_h
    if d_queries < 0 or d_hits < 0 or d_queries == 0:
        return None
    return min(1.0, max(0.0, d_hits / d_queries))


class PrefixHitRateTracker:
    """Keeps the previous scrape per backend and the latest known hit rate.

    ``update`` is called with every collector result; ``None`` (a failed
    scrape) keeps the state, so one missed scrape just widens the next interval.
    """

    __slots__ = ("_previous", "_rate")

    def __init__(self) -> None:
        self._previous: dict[BackendId, EngineMetrics] = {}
        self._rate: dict[BackendId, float] = {}

    def update(self, backend_id: BackendId, metrics: EngineMetrics | None) -> float | None:
        if metrics is None:
            return self._rate.get(backend_id)
        previous = self._previous.get(backend_id)
        if metrics.prefix_cache_queries_tokens_total is None:
            self._previous.pop(backend_id, None)
            self._set(backend_id, metrics.prefix_hit_rate_frac)
            return self._rate.get(backend_id)
        if previous is not None and _went_backwards(previous, metrics):
            self._rate.pop(backend_id, None)
        else:
            rate = prefix_hit_rate(previous, metrics)
            if rate is not None:
                self._rate[backend_id] = rate
        self._previous[backend_id] = metrics
        return self._rate.get(backend_id)

    def rate(self, backend_id: BackendId) -> float | None:
        return self._rate.get(backend_id)

    def forget(self, backend_id: BackendId) -> None:
        self._previous.pop(backend_id, None)
        self._rate.pop(backend_id, None)

    def _set(self, backend_id: BackendId, rate: float | None) -> None:
        if rate is None:
            self._rate.pop(backend_id, None)
        else:
            self._rate[backend_id] = min(1.0, max(0.0, rate))


def _went_backwards(previous: EngineMetrics, current: EngineMetrics) -> bool:
    pairs = (
        (previous.prefix_cache_queries_tokens_total, current.prefix_cache_queries_tokens_total),
        (previous.prefix_cache_hits_tokens_total, current.prefix_cache_hits_tokens_total),
    )
    return any(then is not None and now is not None and now < then for then, now in pairs)
