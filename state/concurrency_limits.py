"""Adaptive per-backend in-flight limits, fed with time to first token.

Why at the proxy: an engine with continuous batching accepts everything and
queues it internally, where nobody can reorder or shed it. Keeping each
backend just below the concurrency at which its TTFT starts to inflate moves
the excess into Sluice's waiting room, where priority and deadlines apply.

Algorithms (formulas.md §5, Netflix/concurrency-limits):

* ``Gradient2Limit``: ``long`` = EWMA of TTFT over ``long_window`` samples,
  ``short`` = mean TTFT of the last window of ``short_window`` samples. If
  ``long/short > 2`` the long average decays (x0.95) so a recovered backend is
  not judged against a congested past. App-limited (in flight < limit/2):
  unchanged. Otherwise ``gradient = clamp(tolerance * long / short, 0.5, 1)``,
  ``new = limit * gradient + queue_size`` and
  ``limit = clamp((1 - s) * limit + s * new, min, max)``; a window in which the backend held
  more requests than its limit throughout (it was getting nothing new) does not cut again.
* ``VegasLimit``: ``queue = ceil(limit * (1 - noload / short))`` with
  ``noload`` the lowest short-window TTFT seen (re-probed every
  ``30 * limit`` samples); alpha = 3 log10 L, beta = 6 log10 L; grows by beta
  when the queue is tiny, by log10 L below alpha, shrinks by log10 L above beta.
* ``FixedLimit``: the backend's ``max_concurrency``.

**TTFT target** (``ttft_target_ms``): with a target, Gradient2 steers each
backend's TTFT to it (a setpoint, as Envoy's adaptive concurrency steers to
a latency goal): ``gradient = clamp(target / short, 0.5, 2)``, so a backend
well under the target grows by up to 2x per window (times the smoothing)
and one over it shrinks; Vegas counts a window at or under the target as no
queue. Why not the ratio rule alone: with continuous batching an LLM
engine's TTFT rises with its batch long before it is overloaded (a new
prompt's prefill shares steps with every running decode), so ``long/short``
reads a busy, healthy backend as congested and, recovering by only
``queue_size x smoothing`` per window, throttles it for tens of seconds;
measured in virtual time on two A100s (bench/overload.py) the ratio rule
held the fleet at 40 of its 57 requests/s through a 3x burst. The default
target is a quarter of the smallest route TTFT SLO: the backend's share of
the SLO, the rest left for waiting in Sluice's room, where order and
deadlines apply.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Protocol

from core.admission_config import ConcurrencyLimitConfig

_DROP_BACKOFF = 0.9
_SHORT_WINDOW_SAMPLES = 10
# With a TTFT target, the most a window under it may grow the limit (before smoothing): TTFT answers a
# larger batch with a lag of about one prefill, so a faster climb overshoots the knee and oscillates.
MAX_GROWTH_GRADIENT = 1.25


class LimitAlgorithm(Protocol):
    @property
    def limit(self) -> int: ...

    def on_sample(self, ttft_ms: float, in_flight: int) -> None: ...

    def on_drop(self) -> None: ...


class FixedLimit:
    __slots__ = ("_limit",)

    def __init__(self, limit: int) -> None:
        self._limit = limit

    @property
    def limit(self) -> int:
        return self._limit

    def on_sample(self, ttft_ms: float, in_flight: int) -> None:
        return None

    def on_drop(self) -> None:
        return None


class _Windowed(ABC):
    """Shared window bookkeeping: collect ``short_window`` samples, then update once."""

    def __init__(self, config: ConcurrencyLimitConfig, initial: int) -> None:
        self._config = config
        self._target_ms = config.ttft_target_ms if config.ttft_target_ms is not None else 0.0
        self._estimate = float(initial)
        self._window_sum_ms = 0.0
        self._window_n = 0
        self._window_max_in_flight = 0
        self._window_min_in_flight: float = math.inf

    @property
    def limit(self) -> int:
        return max(self._config.min, min(self._config.max, int(self._estimate)))

    def on_sample(self, ttft_ms: float, in_flight: int) -> None:
        if not math.isfinite(ttft_ms) or ttft_ms < 0:
            return
        self._window_sum_ms += ttft_ms
        self._window_n += 1
        self._window_max_in_flight = max(self._window_max_in_flight, in_flight)
        self._window_min_in_flight = min(self._window_min_in_flight, in_flight)
        if self._window_n >= _SHORT_WINDOW_SAMPLES:
            short_ms = max(self._window_sum_ms / self._window_n, 1e-3)
            in_flight_max = self._window_max_in_flight
            throttled = self._window_min_in_flight > self._estimate
            self._window_sum_ms = 0.0
            self._window_n = 0
            self._window_max_in_flight = 0
            self._window_min_in_flight = math.inf
            self._update(short_ms, in_flight_max, throttled)

    def on_drop(self) -> None:
        self._estimate = max(float(self._config.min), self._estimate * _DROP_BACKOFF)

    @abstractmethod
    def _update(self, short_ms: float, in_flight: int, throttled: bool) -> None:
        """Adjust ``self._estimate`` from one window's mean TTFT, its peak in-flight count, and whether
        the backend held more requests than its limit throughout the window (``throttled``)."""


class Gradient2Limit(_Windowed):
    def __init__(self, config: ConcurrencyLimitConfig, initial: int) -> None:
        super().__init__(config, initial)
        self._long_ms: float | None = None
        self._alpha = 2.0 / (config.long_window + 1)

    def _update(self, short_ms: float, in_flight: int, throttled: bool) -> None:
        cfg = self._config
        long_ms = (
            short_ms if self._long_ms is None else self._long_ms + self._alpha * (short_ms - self._long_ms)
        )
        if long_ms / short_ms > 2.0:
            long_ms *= 0.95
        self._long_ms = long_ms
        if in_flight < self._estimate / 2:
            return
        if self._target_ms > 0:
            gradient = max(0.5, min(MAX_GROWTH_GRADIENT, self._target_ms / short_ms))
        else:
            gradient = max(0.5, min(1.0, cfg.rtt_tolerance * long_ms / short_ms))
        new_limit = self._estimate * gradient + cfg.queue_size
        if throttled and new_limit < self._estimate:
            # One cut per congestion episode (TCP cuts its window once per round trip, not per late
            # packet): a backend holding more requests than its limit for the whole window gets nothing
            # new, so this window's TTFTs are those of requests sent before the last cut. Cutting again
            # on them cut one A100 to 96-124 slots with ~166 streams in flight in the 3x burst
            # (bench/overload.py, seed 3; 47-63 slots with ~140 streams under a 300 ms target); it then
            # took no new request until dozens of them ended, and after the burst the other backend
            # carried the load while sheddable requests timed out in the queue.
            return
        if not (self._target_ms > 0 and new_limit > self._estimate):
            # Growth under a TTFT target is taken whole: a throttled backend sees few samples, so a
            # smoothed climb would leave it throttled long after its TTFT is back under the target.
            new_limit = (1 - cfg.smoothing) * self._estimate + cfg.smoothing * new_limit
        self._estimate = max(float(cfg.min), min(float(cfg.max), new_limit))


class VegasLimit(_Windowed):
    def __init__(self, config: ConcurrencyLimitConfig, initial: int) -> None:
        super().__init__(config, initial)
        self._noload_ms: float | None = None
        self._windows_since_probe = 0

    def _update(self, short_ms: float, in_flight: int, throttled: bool) -> None:
        cfg = self._config
        self._windows_since_probe += 1
        if self._noload_ms is None or short_ms < self._noload_ms:
            self._noload_ms = short_ms
        elif self._windows_since_probe * _SHORT_WINDOW_SAMPLES > 30 * self._estimate:
            # Re-probe: forget the old minimum so a permanently slower backend is re-baselined.
            self._noload_ms = short_ms
            self._windows_since_probe = 0
        if in_flight < self._estimate / 2:
            return
        log_limit = math.log10(max(self._estimate, 1.0))
        queue = (
            0 if short_ms <= self._target_ms else math.ceil(self._estimate * (1 - self._noload_ms / short_ms))
        )
        alpha, beta = 3 * log_limit, 6 * log_limit
        if queue <= log_limit:
            self._estimate += beta
        elif queue < alpha:
            self._estimate += log_limit
        elif queue > beta:
            self._estimate -= log_limit
        self._estimate = max(float(cfg.min), min(float(cfg.max), self._estimate))


class ConcurrencyLimits:
    """One limiter per backend; ``None`` limit means unlimited (algorithm ``none``).

    ``current`` holds every limited backend's limit as a plain int, refreshed whenever a
    limiter learns (``on_sample``, ``on_drop``): admission reads the limits of a dozen
    backends per request, while they change once per window of samples.
    """

    def __init__(self, config: ConcurrencyLimitConfig, backend_max: Iterable[tuple[str, int | None]]) -> None:
        self._config = config
        self._limiters: dict[str, LimitAlgorithm] = {}
        for backend_id, max_concurrency in backend_max:
            limiter = self._make(max_concurrency)
            if limiter is not None:
                self._limiters[backend_id] = limiter
        self._current: dict[str, int] = self.limits()

    @property
    def current(self) -> Mapping[str, int]:
        """Backend -> its limit now (absent: unlimited); live, and read-only by contract (the dict itself
        is returned, since a proxy's ``get`` costs twice a dict's on the admission hot path)."""
        return self._current

    def _make(self, max_concurrency: int | None) -> LimitAlgorithm | None:
        cfg = self._config
        if cfg.algorithm == "none":
            return None
        if cfg.algorithm == "fixed":
            return FixedLimit(max_concurrency if max_concurrency is not None else cfg.initial)
        initial = min(cfg.initial, max_concurrency) if max_concurrency is not None else cfg.initial
        # A backend's configured max_concurrency is a hard ceiling for the adaptive limit too.
        bounded = (
            cfg
            if max_concurrency is None
            else cfg.model_copy(
                update={"max": max(min(cfg.max, max_concurrency), 1), "min": min(cfg.min, max_concurrency)}
            )
        )
        if cfg.algorithm == "vegas":
            return VegasLimit(bounded, initial)
        return Gradient2Limit(bounded, initial)

    def limit(self, backend_id: str) -> int | None:
        return self._current.get(backend_id)

    def limits(self) -> dict[str, int]:
        return {backend_id: limiter.limit for backend_id, limiter in self._limiters.items()}

    def on_sample(self, backend_id: str, ttft_ms: float, in_flight: int) -> None:
        limiter = self._limiters.get(backend_id)
        if limiter is not None:
            limiter.on_sample(ttft_ms, in_flight)
            self._current[backend_id] = limiter.limit

    def on_drop(self, backend_id: str) -> None:
        limiter = self._limiters.get(backend_id)
        if limiter is not None:
            limiter.on_drop()
            self._current[backend_id] = limiter.limit
