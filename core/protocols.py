"""Interfaces between the layers: what the data plane and the simulator call.

``RoutingPolicy`` is implemented in ``policies/``; ``Decider`` (admission +
routing + learning hooks around one request) in ``decision/``. The proxy and
the virtual-time fleet both hold a ``Decider`` and call the same methods in
the same order, which is what makes simulated results speak for the proxy:

1. ``admit(features, snapshot)`` -> ``Admit`` | ``Queue`` | ``Shed``
   - ``Queue``: ``enqueue(features, decision)``; the request then waits until
     ``pop_dispatchable(snapshot)`` returns its id (a slot freed; call it
     whenever capacity may have changed), or it leaves with
     ``leave_queue(request_id)`` (client gone, or its deadline passed: answer
     429 with ``retry_after_s(features)``).
2. (after any wait) ``route(features, snapshot)`` -> ``RoutingDecision``
3. ``on_routed(features, decision, backend_id)`` once a backend is committed
   (also after a retry moves the request to another backend)
4. ``observe(outcome)`` when the request ends in any way
"""

from __future__ import annotations

import random
from typing import Protocol, runtime_checkable

from core.types import (
    AdmissionDecision,
    BackendId,
    EnqueueResult,
    FleetSnapshot,
    Outcome,
    RequestFeatures,
    RoutingDecision,
    RoutingRequest,
)
from core.types import Queue as QueueDecision


class RoutingPolicy(Protocol):
    """Ranks the backends that may serve a request. Pure apart from picker cursors.

    Must not call ``time`` or the module-level ``random``: ``now_s`` and
    ``rng`` are passed in. Returns an empty ``ranked`` with a ``reason``
    rather than raising when nothing can serve the request.
    """

    @property
    def name(self) -> str: ...

    def route(
        self, request: RoutingRequest, snapshot: FleetSnapshot, now_s: float, rng: random.Random
    ) -> RoutingDecision: ...


class Decider(Protocol):
    def admit(self, features: RequestFeatures, snapshot: FleetSnapshot) -> AdmissionDecision: ...

    def enqueue(self, features: RequestFeatures, decision: QueueDecision) -> EnqueueResult: ...

    def pop_dispatchable(self, snapshot: FleetSnapshot) -> str | None: ...

    def leave_queue(self, request_id: str) -> bool: ...

    def retry_after_s(self, features: RequestFeatures) -> float: ...

    def route(self, features: RequestFeatures, snapshot: FleetSnapshot) -> RoutingDecision: ...

    def on_routed(
        self, features: RequestFeatures, decision: RoutingDecision, backend_id: BackendId
    ) -> None: ...

    def observe(self, outcome: Outcome) -> None: ...


@runtime_checkable
class AdmissionStats(Protocol):
    """What a decider with admission control reports for metrics (read at scrape time)."""

    def queue_depths(self) -> dict[str, int]: ...

    def concurrency_limits(self) -> dict[BackendId, int]: ...

    def service_rate_rps(self) -> float: ...
