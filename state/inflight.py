"""RAII in-flight accounting for one upstream attempt (the analogue of SMG's ``WorkerLoadGuard``).

``FleetState.acquire`` counts a request on a backend and returns an
``InFlightGuard``; leaving its ``with`` block undoes the counts whatever
happened inside (completion, an exception, or the handler task being
cancelled because the client went away). Releasing twice is a no-op, so a
guard can also be released early by hand.

The guard also carries the passive-health verdict of the attempt
(``succeeded`` / ``failed``) to the backend's circuit breaker; a half-open
probe released without a verdict gives its probe slot back.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from state.fleet import BackendState, FleetState


class InFlightGuard:
    __slots__ = (
        "_awaiting_first_byte",
        "_backend",
        "_decode_tokens",
        "_dispatched_s",
        "_failed",
        "_fleet",
        "_is_probe",
        "_prompt_tokens",
        "_released",
        "_verdict_given",
    )

    def __init__(
        self,
        fleet: FleetState,
        backend: BackendState,
        prompt_tokens: int,
        decode_tokens: float,
        is_probe: bool,
        dispatched_s: float = 0.0,
    ) -> None:
        self._fleet = fleet
        self._dispatched_s = dispatched_s
        self._backend = backend
        self._prompt_tokens = prompt_tokens
        self._decode_tokens = decode_tokens
        self._is_probe = is_probe
        self._awaiting_first_byte = True
        self._released = False
        self._verdict_given = False
        self._failed = False

    @property
    def backend_id(self) -> str:
        return self._backend.backend_id

    def __enter__(self) -> InFlightGuard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def first_byte(self, at_s: float | None = None) -> None:
        """The backend sent its first byte (at ``at_s``, default now): no longer waiting for prefill."""
        if self._awaiting_first_byte and not self._released:
            self._awaiting_first_byte = False
            self._backend.awaiting_first_byte -= 1
            self._fleet.record_first_byte(self._backend, self._dispatched_s, at_s)

    def succeeded(self) -> None:
        """The backend answered (any status below 500): evidence that it works."""
        if not self._verdict_given:
            self._verdict_given = True
            self._fleet.breaker_success(self._backend)

    def failed(self) -> None:
        """Connect error, 5xx answer, or the backend dropping a stream it had started answering.

        May follow ``succeeded`` (headers arrived, then the connection died).
        Never used for slowness.
        """
        if not self._failed:
            self._failed = True
            self._verdict_given = True
            self._fleet.breaker_failure(self._backend)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        backend = self._backend
        backend.in_flight -= 1
        if self._awaiting_first_byte:
            backend.awaiting_first_byte -= 1
        backend.in_flight_prompt_tokens -= self._prompt_tokens
        backend.in_flight_predicted_decode_tokens -= self._decode_tokens
        if self._is_probe and not self._verdict_given:
            backend.breaker.on_probe_abandoned()
        self._fleet.on_guard_released(backend)
