"""Clocks passed into policies, predictors and the simulator instead of calling ``time`` directly.

Injecting the clock is what makes a decision reproducible in a unit test and
lets the same engine code run in real time (``MonotonicClock``) and in
virtual time (``ManualClock`` advanced by the discrete-event loop).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_s(self) -> float:
        """Seconds on a monotonic scale; only differences are meaningful."""
        ...


class MonotonicClock:
    """Wall-time monotonic clock for the real data plane.

    ``now_s`` is ``time.monotonic`` itself, not a method wrapping it: the proxy reads the clock
    about fourteen times per request, and the wrapper's Python frame cost more than the read.
    """

    __slots__ = ()

    now_s = staticmethod(time.monotonic)


class ManualClock:
    """A clock that only moves when told to; for tests and virtual time."""

    __slots__ = ("_now_s",)

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s

    def now_s(self) -> float:
        return self._now_s

    def advance(self, delta_s: float) -> None:
        if delta_s < 0:
            raise ValueError("time cannot go backwards")
        self._now_s += delta_s

    def set(self, now_s: float) -> None:
        if now_s < self._now_s:
            raise ValueError("time cannot go backwards")
        self._now_s = now_s
