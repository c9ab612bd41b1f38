"""The waiting room's virtual-time side: queued flights, woken when the ``Decider`` says a slot freed.

The queue itself (order, classes, eviction, reservations) lives in the ``Decider``
(``decision.admission_control``); this is the event-loop counterpart of ``router.waiting_room``, with
the same calls in the same order:

* ``enqueue`` after a ``Queue`` verdict: the decider places the request, possibly evicting less
  important ones (they get 429 ``queue_full``), or refuses it;
* ``pump`` asks ``pop_dispatchable`` until it answers ``None`` and returns the woken flights. The
  fleet runs it after any event that may have freed capacity (an in-flight guard released, a
  health change, an outcome observed) and, while anything waits, every ``PUMP_TICK_S`` as the
  proxy's safety net does (time alone can free a slot: a circuit breaker's open period ending);
* ``leave`` at a flight's deadline: ``leave_queue`` True means it still waited (429
  ``queue_timeout``), False that it was woken in the same instant and goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.protocols import Decider
from core.types import FleetSnapshot, Queue, Shed
from loadgen.sim.flight import Flight

PUMP_TICK_S = 0.05  # router.waiting_room.PUMP_TICK_S (the router is not imported here: aiohttp)


@dataclass(frozen=True, slots=True)
class Placement:
    """``shed`` set: the flight got no place. ``evicted``: queued flights pushed out for it."""

    shed: Shed | None
    evicted: tuple[Flight, ...]
    evicted_retry_after_s: float


class VirtualWaitingRoom:
    __slots__ = ("_decider", "_flights", "_snapshot")

    def __init__(self, decider: Decider, snapshot: Callable[[], FleetSnapshot]) -> None:
        self._decider = decider
        self._snapshot = snapshot
        self._flights: dict[str, Flight] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def enqueue(self, flight: Flight, verdict: Queue, now_s: float) -> Placement:
        placed = self._decider.enqueue(flight.features, verdict)
        evicted = tuple(f for rid in placed.evicted if (f := self._flights.pop(rid, None)) is not None)
        if placed.shed is None:
            flight.queued_at_s = now_s
            self._flights[flight.features.request_id] = flight
        return Placement(placed.shed, evicted, placed.evicted_retry_after_s)

    def pump(self) -> list[Flight]:
        """Every queued flight that now has a slot, in the decider's order (its slot is reserved)."""
        woken: list[Flight] = []
        while self._flights:
            request_id = self._decider.pop_dispatchable(self._snapshot())
            if request_id is None:
                break
            flight = self._flights.pop(request_id, None)
            if flight is not None:
                woken.append(flight)
        return woken

    def leave(self, flight: Flight) -> bool:
        """The flight's deadline passed: True if it was still waiting (it leaves the queue now)."""
        request_id = flight.features.request_id
        if self._flights.get(request_id) is not flight:
            return False
        if not self._decider.leave_queue(request_id):
            return False
        del self._flights[request_id]
        return True
