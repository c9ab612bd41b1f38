"""Active health: a backend's life cycle from periodic health checks, plus drain and the breaker.

Transitions (``core.types.Health``)::

    PENDING --healthy_after passes--> READY --unhealthy_after failures--> DOWN
    PENDING --unhealthy_after failures--> DOWN --healthy_after passes--> READY
    any --drain()--> DRAINING --undrain()--> the state the checks say

``effective`` folds in the passive circuit breaker: a READY backend whose
breaker does not allow a request right now is reported DOWN, so policies see
one health value. Counters reset on every flip, so a single flaky check never
moves a backend.
"""

from __future__ import annotations

from core.types import Health
from state.circuit_breaker import CircuitBreaker


class HealthMachine:
    __slots__ = ("_draining", "_failures", "_healthy_after", "_passes", "_state", "_unhealthy_after")

    def __init__(self, healthy_after: int, unhealthy_after: int) -> None:
        if healthy_after < 1 or unhealthy_after < 1:
            raise ValueError("healthy_after and unhealthy_after must be >= 1")
        self._healthy_after = healthy_after
        self._unhealthy_after = unhealthy_after
        self._state = Health.PENDING
        self._passes = 0
        self._failures = 0
        self._draining = False

    @property
    def checked_state(self) -> Health:
        """What the active checks alone say (never DRAINING)."""
        return self._state

    def record_check(self, passed: bool) -> bool:
        """Feed one active check result; returns True when the checked state changed."""
        if passed:
            self._failures = 0
            self._passes += 1
            if self._state is not Health.READY and self._passes >= self._healthy_after:
                self._state = Health.READY
                self._passes = 0
                return True
            return False
        self._passes = 0
        self._failures += 1
        if self._state is not Health.DOWN and self._failures >= self._unhealthy_after:
            self._state = Health.DOWN
            self._failures = 0
            return True
        return False

    def drain(self) -> None:
        self._draining = True

    def undrain(self) -> None:
        self._draining = False

    def effective(self, breaker: CircuitBreaker, now_s: float) -> Health:
        if self._draining:
            return Health.DRAINING
        if self._state is Health.READY and not breaker.allows_request(now_s):
            return Health.DOWN
        return self._state
