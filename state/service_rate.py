"""Fleet service rate (requests finished per second), the denominator of Retry-After and queue-wait estimates.

An exponentially decayed event rate: each completion adds 1 to a counter that
decays with time constant ``tau_s``; rate = counter / tau_s. It reacts within
a few ``tau_s`` to a change in throughput and needs no window buffer. Little's
law then turns work ahead into time: wait ~= requests ahead / rate
(formulas.md §5, Retry-After via Little's law). The clock is passed in.
"""

from __future__ import annotations

import math


class ServiceRate:
    __slots__ = ("_count", "_tau_s", "_updated_s")

    def __init__(self, tau_s: float = 10.0) -> None:
        if tau_s <= 0:
            raise ValueError("tau_s must be positive")
        self._tau_s = tau_s
        self._count = 0.0
        self._updated_s: float | None = None

    def _decay(self, now_s: float) -> None:
        if self._updated_s is not None and now_s > self._updated_s:
            self._count *= math.exp(-(now_s - self._updated_s) / self._tau_s)
        if self._updated_s is None or now_s > self._updated_s:
            self._updated_s = now_s

    def record(self, now_s: float, n: float = 1.0) -> None:
        self._decay(now_s)
        self._count += n

    def rate_per_s(self, now_s: float) -> float:
        self._decay(now_s)
        return self._count / self._tau_s
