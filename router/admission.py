"""Admission in the data plane: the whole-proxy cap, then the ``Decider``'s verdict.

- ``limits.max_in_flight`` reached → 429 ``overloaded`` (reason ``overload``).
- ``Admit`` → go on with the snapshot the verdict was made on.
- ``Shed(reason, retry_after_s)`` → 429 with ``Retry-After`` and
  ``x-sluice-shed-reason``.
- ``Queue(deadline_s)`` → the request takes a place in the waiting room
  (possibly evicting less important queued requests, which get 429
  ``queue_full``) and waits there until a slot frees, its deadline passes
  (429 ``queue_timeout``) or its client leaves (it leaves the queue at once).
"""

from __future__ import annotations

from core.clock import Clock
from core.errors import Shed as ShedError
from core.protocols import Decider
from core.types import FleetSnapshot, Queue, RequestFeatures, Shed, ShedReason
from router.waiting_room import AsyncWaitingRoom
from state.fleet import FleetState

OVERLOAD_RETRY_AFTER_S = 1.0


def _shed_error(reason: ShedReason, retry_after_s: float) -> ShedError:
    return ShedError(
        f"request shed ({reason.value}); retry after {retry_after_s:.0f} s",
        retry_after_s=retry_after_s,
        reason=reason.value,
    )


def admit(
    features: RequestFeatures, fleet: FleetState, decider: Decider, max_in_flight: int | None
) -> tuple[FleetSnapshot, Queue | None]:
    """The snapshot to route on and, when the verdict is ``Queue``, that verdict (then await
    ``wait_in_room``); raises a ``Rejected`` error (429) for a shed request.

    Not a coroutine: most requests are admitted at once, and awaiting a coroutine that never
    waits still costs its creation and frame on every request.
    """
    if max_in_flight is not None and fleet.total_in_flight >= max_in_flight:
        raise ShedError(
            f"Sluice is at its limit of {max_in_flight} requests in flight; retry later",
            retry_after_s=OVERLOAD_RETRY_AFTER_S,
            reason=ShedReason.OVERLOAD.value,
        )
    snapshot = fleet.snapshot()
    verdict = decider.admit(features, snapshot)
    if isinstance(verdict, Shed):
        raise _shed_error(verdict.reason, verdict.retry_after_s)
    return snapshot, verdict if isinstance(verdict, Queue) else None


async def wait_in_room(
    features: RequestFeatures,
    verdict: Queue,
    fleet: FleetState,
    decider: Decider,
    clock: Clock,
    room: AsyncWaitingRoom,
) -> FleetSnapshot:
    """Queue the request (evicting less important ones if the decider says so) until it may go on;
    returns the snapshot to route on, or raises the 429 of an eviction, a refusal or a timeout."""
    placed = decider.enqueue(features, verdict)
    for evicted_id in placed.evicted:
        room.reject(evicted_id, _shed_error(ShedReason.QUEUE_FULL, placed.evicted_retry_after_s))
    if placed.shed is not None:
        raise _shed_error(placed.shed.reason, placed.shed.retry_after_s)
    await room.wait(
        features.request_id, verdict.deadline_s, clock.now_s(), lambda: decider.retry_after_s(features)
    )
    return fleet.snapshot()
