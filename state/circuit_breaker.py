"""Passive ejection: a per-backend circuit breaker fed by real request results.

Rule: ``consecutive_failures`` failures in a row open the breaker for
``open_s`` seconds (the backend is not selectable). After that it is
half-open: exactly one probe request may go through; its success closes the
breaker, its failure re-opens it for another ``open_s``. A probe that ends
without a verdict (client cancelled it) frees the probe slot.

What counts as a failure is decided by the caller and is deliberately narrow:
connect errors, connections reset by the backend and 5xx answers. Slowness is
never a failure: long generations are healthy, and breakers that trip on
request duration turned overload into retry storms in peer routers.
"""

from __future__ import annotations

from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """State machine only; time comes in as ``now_s`` so tests drive it with a manual clock."""

    __slots__ = (
        "_consecutive_failures",
        "_failure_threshold",
        "_open_s",
        "_open_until_s",
        "_probe_in_flight",
    )

    def __init__(self, failure_threshold: int, open_s: float) -> None:
        if failure_threshold < 1 or open_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and open_s > 0")
        self._failure_threshold = failure_threshold
        self._open_s = open_s
        self._consecutive_failures = 0
        self._open_until_s: float | None = None
        self._probe_in_flight = False

    def state(self, now_s: float) -> BreakerState:
        if self._open_until_s is None:
            return BreakerState.CLOSED
        if now_s < self._open_until_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allows_request(self, now_s: float) -> bool:
        """Whether a new request may be sent now (closed, or half-open with the probe slot free)."""
        if self._open_until_s is None:  # closed: read for every snapshot view, so no state() call
            return True
        state = self.state(now_s)
        if state is BreakerState.CLOSED:
            return True
        return state is BreakerState.HALF_OPEN and not self._probe_in_flight

    def next_change_s(self) -> float | None:
        """When ``allows_request`` may flip by time alone (end of the open period), if pending."""
        return self._open_until_s

    def on_request_start(self, now_s: float) -> bool:
        """Note a request being sent; returns True when it is the half-open probe."""
        if self._open_until_s is None:  # closed (every request while healthy)
            return False
        if self.state(now_s) is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def on_success(self) -> None:
        self._consecutive_failures = 0
        self._open_until_s = None
        self._probe_in_flight = False

    def on_failure(self, now_s: float) -> None:
        self._consecutive_failures += 1
        was_probe = self._probe_in_flight
        self._probe_in_flight = False
        if was_probe or self._consecutive_failures >= self._failure_threshold:
            self._open_until_s = now_s + self._open_s

    def on_probe_abandoned(self) -> None:
        """The probe ended without a verdict (e.g. the client went away first)."""
        self._probe_in_flight = False

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures
