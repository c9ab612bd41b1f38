"""The proxy's request path in virtual time: admission, the waiting room, routing, attempts, the end.

Mirrors ``router.admission``, ``router.proxy`` and ``router.exchange.finish`` call for call, on the
proxy's own ``state.fleet.FleetState``:

* admission: ``limits.max_in_flight`` (429 ``overloaded``, reason ``overload``), then
  ``Decider.admit``; ``Shed`` -> 429 ``overloaded`` with its reason and ``Retry-After``; ``Queue`` ->
  the waiting room (``loadgen.sim.virtual_room``), 429 ``queue_timeout`` at the deadline;
* routing: ``Decider.route`` on a fresh snapshot; an empty ranking -> 503 ``no_healthy_backend``;
* attempts: ``ranked[:1 + retries.max_per_request]`` in order, ``on_routed`` and an
  ``InFlightGuard`` (carrying ``RoutingDecision.predicted_output_tokens``) per attempt; a connect
  error or a status in ``retries.on_status`` moves on while another candidate is left (the global
  retry budget is not modelled); 5xx answers and connect errors are circuit-breaker failures;
* the first-byte timeout (504 ``upstream_timeout``, no breaker verdict: slowness is not failure); a
  stream broken after its first byte -> 502 ``upstream_failed_mid_stream``;
* the end: guard released, EWMA TTFT/TPOT folded in for a successful stream, ``observe(Outcome)``,
  then the waiting room is pumped (the outcome may have moved a concurrency limit).

The backend side (engines, faults, the network delay) belongs to ``loadgen.sim.virtual.VirtualFleet``,
reached through ``BackendSide``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from core.config import SluiceConfig
from core.protocols import Decider
from core.types import Admit, Queue, Shed, ShedReason
from loadgen.sim.flight import Flight
from loadgen.sim.virtual_room import PUMP_TICK_S, VirtualWaitingRoom
from state.fleet import FleetState
from state.inflight import InFlightGuard

OVERLOAD_RETRY_AFTER_S = 1.0  # router.admission.OVERLOAD_RETRY_AFTER_S
MID_STREAM = (502, "upstream_failed_mid_stream")
CONNECT = (502, "upstream_connect_error")
Handler = Callable[[float, Any], None]


class BackendSide(Protocol):
    """What the proxy needs from the simulated backends and the event loop."""

    def schedule(self, t: float, handler: Handler, payload: Any) -> None: ...

    def refusal(self, flight: Flight, backend_id: str) -> tuple[int, str] | None:
        """Status and code if the backend refuses this attempt at once (connect error, injected error)."""
        ...

    def deliver(self, flight: Flight, t: float) -> None:
        """Send the request over the network to ``flight.backend_id``."""
        ...

    def abort(self, flight: Flight, t: float) -> None: ...

    def ended(self, flight: Flight, t: float) -> None:
        """The request has its outcome (records, dependent turns)."""
        ...


def verdict(guard: InFlightGuard, status: int) -> None:
    """A backend's status answer, for its circuit breaker: 5xx is a failure, anything else works."""
    if status >= 500:
        guard.failed()
    else:
        guard.succeeded()


class VirtualProxy:
    def __init__(
        self, config: SluiceConfig, state: FleetState, decider: Decider, side: BackendSide, delay_s: float
    ) -> None:
        """``delay_s``: the one-way network delay between the proxy and a backend."""
        self.config = config
        self.delay_s = delay_s
        self.state = state
        self.decider = decider
        self.side = side
        self.room = VirtualWaitingRoom(decider, state.snapshot)
        self.pump_due = False
        self._tick_at: float | None = None
        self._first_byte_s = config.timeouts.first_byte_ms / 1000.0
        state.on_capacity_change(self._capacity_changed)

    def _capacity_changed(self) -> None:
        self.pump_due = True

    # --- admission and the waiting room ----------------------------------------------------------

    def admit(self, flight: Flight, t: float) -> None:
        """``router.admission.admit``: the whole-proxy cap, then the decider's verdict."""
        max_in_flight = self.config.limits.max_in_flight
        if max_in_flight is not None and self.state.total_in_flight >= max_in_flight:
            self._shed(flight, t, ShedReason.OVERLOAD, OVERLOAD_RETRY_AFTER_S)
            return
        decision = self.decider.admit(flight.features, self.state.snapshot())
        if isinstance(decision, Shed):
            self._shed(flight, t, decision.reason, decision.retry_after_s)
            return
        if isinstance(decision, Queue):
            placed = self.room.enqueue(flight, decision, t)
            for evicted in placed.evicted:
                self._shed(evicted, t, ShedReason.QUEUE_FULL, placed.evicted_retry_after_s)
            if placed.shed is not None:
                self._shed(flight, t, placed.shed.reason, placed.shed.retry_after_s)
            else:
                self.side.schedule(decision.deadline_s, self._on_queue_deadline, flight)
                self.pump_due = True  # as the proxy's room.wait: a slot may be free already
                self._ensure_tick(t)
            return
        assert isinstance(decision, Admit)
        self._route(flight, t)

    def _shed(self, flight: Flight, t: float, reason: ShedReason, retry_after_s: float) -> None:
        code = "queue_timeout" if reason is ShedReason.QUEUE_TIMEOUT else "overloaded"
        flight.record.shed_reason = reason.value
        flight.record.retry_after_s = retry_after_s
        self.finish(flight, t, 429, code)

    def pump(self, t: float) -> None:
        """Route every queued request that now has a slot (``router.waiting_room.pump``)."""
        self.pump_due = False
        for flight in self.room.pump():
            if not flight.done:
                assert flight.queued_at_s is not None
                flight.record.queue_wait_s = t - flight.queued_at_s
                self._route(flight, t)

    def _ensure_tick(self, t: float) -> None:
        if self._tick_at is None and len(self.room):
            self._tick_at = t + PUMP_TICK_S
            self.side.schedule(self._tick_at, self._on_tick, None)

    def _on_tick(self, t: float, _: None) -> None:
        self._tick_at = None
        self.pump(t)
        self._ensure_tick(t)

    def _on_queue_deadline(self, t: float, flight: Flight) -> None:
        if not flight.done and self.room.leave(flight):
            self._shed(flight, t, ShedReason.QUEUE_TIMEOUT, self.decider.retry_after_s(flight.features))

    # --- routing and attempts --------------------------------------------------------------------

    def _route(self, flight: Flight, t: float) -> None:
        decision = self.decider.route(flight.features, self.state.snapshot())
        flight.decision = decision
        flight.record.predicted_ttft_ms = decision.predicted_ttft_ms
        if not decision.ranked:
            self.finish(flight, t, 503, "no_healthy_backend")
            return
        self.try_next(flight, t)

    def try_next(self, flight: Flight, t: float) -> None:
        """Send to the next ranked backend, retrying before the first byte as ``router.proxy`` does."""
        assert flight.decision is not None
        ranked = flight.decision.ranked
        retries = self.config.retries
        last = min(len(ranked), 1 + retries.max_per_request)
        while flight.attempt < last:
            name = ranked[flight.attempt]
            flight.attempt += 1
            flight.record.attempts = flight.attempt
            flight.backend_id = name
            flight.dispatched_s = t
            self.decider.on_routed(flight.features, flight.decision, name)
            guard = self.state.acquire(
                name, flight.features.prompt_tokens, flight.predicted_output_tokens or 0.0
            )
            refused = self.side.refusal(flight, name)
            if refused is None:
                flight.guard = guard
                self.side.schedule(t + self._first_byte_s, self._on_timeout, (flight, flight.attempt))
                self.side.deliver(flight, t)
                return
            verdict(guard, refused[0])
            guard.release()
            flight.last_error = refused
            if refused != CONNECT and refused[0] not in retries.on_status:
                break
        status, code = flight.last_error or (503, "no_healthy_backend")
        self.finish(flight, t, status, code)

    def connection_lost(self, flight: Flight, t: float) -> None:
        """The backend went away under the attempt: before the first byte the request moves on."""
        guard = flight.guard
        if guard is not None:
            guard.failed()
        if flight.first_byte:
            self.finish(flight, t, *MID_STREAM)
            return
        if guard is not None:
            guard.release()
            flight.guard = None
        flight.last_error = CONNECT
        flight.sim = None
        self.try_next(flight, t)

    def first_byte(self, flight: Flight) -> None:
        flight.first_byte = True
        if flight.guard is not None:
            ttft_s = flight.record.ttft_s
            flight.guard.first_byte(None if ttft_s is None else flight.record.sent_s + ttft_s)

    def stream_broken(self, flight: Flight, t: float) -> None:
        if flight.guard is not None:
            flight.guard.failed()
        self.finish(flight, t, *MID_STREAM)

    def _on_timeout(self, t: float, payload: tuple[Flight, int]) -> None:
        flight, attempt = payload
        if flight.done or flight.first_byte or flight.attempt != attempt:
            return
        self.side.abort(flight, t)
        self.finish(flight, t, 504, "upstream_timeout")

    # --- the end ---------------------------------------------------------------------------------

    def finish(self, flight: Flight, t: float, status: int, code: str | None) -> None:
        """The request's end, in the order of ``router.proxy`` + ``router.exchange.finish``."""
        tpot_ms = flight.close(t, status, code, self.delay_s)
        guard, flight.guard = flight.guard, None
        if guard is not None:
            guard.release()
        record = flight.record
        backend_ttft_ms = flight.backend_ttft_ms()
        if guard is not None and code is None and backend_ttft_ms is not None and record.backend_id:
            self.state.observe_latency(record.backend_id, backend_ttft_ms, tpot_ms)
        self.side.ended(flight, t)
        self.decider.observe(flight.outcome(t))
        self.pump_due = True  # the outcome may have moved a concurrency limit
