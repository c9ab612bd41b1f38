"""Global retry budget: retries may add at most ``ratio`` of the request volume.

Rule (after Finagle/Envoy retry budgets and the SRE book's per-client 10%
retry ratio): over a sliding window of ``window_s`` seconds, a retry is
allowed iff ``retries < max(min_retries, ratio * requests)``. The floor
``min_retries`` keeps retries possible at low volume (one failed request in a
quiet minute may still fail over); the ratio caps them when many backends
fail at once, so a fleet-wide outage cannot double the load with retries.

The window is ``N_BUCKETS`` buckets; counts older than the window fall out
whole buckets at a time. ``record_request`` is O(1); the clock is injected.
"""

from __future__ import annotations

from core.clock import Clock

N_BUCKETS = 10


class RetryBudget:
    __slots__ = (
        "_bucket_s",
        "_clock",
        "_current",
        "_min_retries",
        "_ratio",
        "_requests",
        "_requests_total",
        "_retries",
        "_retries_total",
    )

    def __init__(self, ratio: float, window_s: float, min_retries: int, clock: Clock) -> None:
        if not 0.0 <= ratio <= 1.0 or window_s <= 0 or min_retries < 0:
            raise ValueError("need 0 <= ratio <= 1, window_s > 0, min_retries >= 0")
        self._ratio = ratio
        self._min_retries = min_retries
        self._bucket_s = window_s / N_BUCKETS
        self._clock = clock
        self._requests = [0] * N_BUCKETS
        self._retries = [0] * N_BUCKETS
        self._requests_total = 0
        self._retries_total = 0
        self._current = int(clock.now_s() / self._bucket_s)

    def _advance(self) -> int:
        """Index of the current bucket, after expiring every bucket that left the window."""
        now_bucket = int(self._clock.now_s() / self._bucket_s)
        if now_bucket != self._current:
            for step in range(1, min(now_bucket - self._current, N_BUCKETS) + 1):
                i = (self._current + step) % N_BUCKETS
                self._requests_total -= self._requests[i]
                self._retries_total -= self._retries[i]
                self._requests[i] = 0
                self._retries[i] = 0
            self._current = now_bucket
        return now_bucket % N_BUCKETS

    def record_request(self) -> None:
        self._requests[self._advance()] += 1
        self._requests_total += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget if it allows; False means do not retry."""
        i = self._advance()
        if self._retries_total >= max(self._min_retries, self._ratio * self._requests_total):
            return False
        self._retries[i] += 1
        self._retries_total += 1
        return True

    @property
    def window_counts(self) -> tuple[int, int]:
        """(requests, retries) currently inside the window."""
        self._advance()
        return self._requests_total, self._retries_total
