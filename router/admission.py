"""Admission in the data plane: the whole-proxy cap, then the ``Decider``'s verdict.

- ``limits.max_in_flight`` reached → 429 ``overloaded`` (reason ``overload``).
- ``Admit`` → go on with the snapshot the verdict was made on.
- ``Shed(reason, retry_after_s)`` → 429 ``overloaded`` with ``Retry-After``.
- ``Queue(deadline_s)``: the waiting room is not built yet (a later issue
  adds it here, behind this same function). Until then a ``Queue`` verdict is
  refused at once with 429 ``queue_timeout`` and ``Retry-After`` set to the
  time left until the deadline: refusing early is honest, waiting without a
  waiting room would not be. The built-in ``DecisionEngine`` never queues yet.
"""

from __future__ import annotations

from core.clock import Clock
from core.errors import QueueTimeout
from core.errors import Shed as ShedError
from core.protocols import Decider
from core.types import FleetSnapshot, Queue, RequestFeatures, Shed, ShedReason
from state.fleet import FleetState

OVERLOAD_RETRY_AFTER_S = 1.0


async def admit(
    features: RequestFeatures,
    fleet: FleetState,
    decider: Decider,
    clock: Clock,
    max_in_flight: int | None,
) -> FleetSnapshot:
    """Return the snapshot to route on, or raise a ``Rejected`` error (429).

    Async although nothing awaits yet: the waiting room for ``Queue`` will.
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
        raise ShedError(
            f"request shed ({verdict.reason.value}); retry later",
            retry_after_s=verdict.retry_after_s,
            reason=verdict.reason.value,
        )
    if isinstance(verdict, Queue):
        raise QueueTimeout(
            "request would have to wait for capacity; retry later",
            retry_after_s=max(0.0, verdict.deadline_s - clock.now_s()),
            reason=ShedReason.QUEUE_TIMEOUT.value,
        )
    return snapshot
