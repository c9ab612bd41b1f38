"""The waiting room's asyncio side: one future per queued request, woken when a slot frees.

The queue itself (order, classes, eviction, deadlines, reservations) lives in
the ``Decider`` (``decision.admission_control``), shared with the
virtual-time simulator. This module only parks handler coroutines on futures
and wakes them:

* ``pump()`` asks the decider for dispatchable requests until there are none
  and resolves their futures. It runs (coalesced, via ``call_soon``) whenever
  capacity may have changed — an in-flight guard released, a backend's health
  changed, an outcome observed (limits adapt) — and every ``PUMP_TICK_S`` as a
  safety net (``router.app`` runs that tick).
* A waiting handler stops at its deadline: if the decider still holds it
  (``leave_queue`` is True) it answers 429 ``queue_timeout``; if it was woken
  in the same instant it simply proceeds.
* A client that disconnects cancels its handler; ``leave_queue`` removes it at
  once, so a departed client never takes a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from core.errors import QueueTimeout, Rejected
from core.protocols import Decider
from core.types import FleetSnapshot, ShedReason

PUMP_TICK_S = 0.05


class AsyncWaitingRoom:
    def __init__(self, decider: Decider, snapshot: Callable[[], FleetSnapshot]) -> None:
        self._decider = decider
        self._snapshot = snapshot
        self._futures: dict[str, asyncio.Future[None]] = {}
        self._pump_scheduled = False

    def __len__(self) -> int:
        return len(self._futures)

    def schedule_pump(self) -> None:
        """Run ``pump`` soon, once, however many times capacity changed meanwhile."""
        if self._pump_scheduled or not self._futures:
            return
        self._pump_scheduled = True
        asyncio.get_running_loop().call_soon(self._pump_now)

    def _pump_now(self) -> None:
        self._pump_scheduled = False
        self.pump()

    def pump(self) -> int:
        """Wake every queued request that now has a slot; returns how many were woken."""
        woken = 0
        while self._futures:
            request_id = self._decider.pop_dispatchable(self._snapshot())
            if request_id is None:
                break
            future = self._futures.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(None)
                woken += 1
        return woken

    def reject(self, request_id: str, error: Rejected) -> None:
        """Fail a queued request (evicted by a more important one)."""
        future = self._futures.pop(request_id, None)
        if future is not None and not future.done():
            future.set_exception(error)

    async def wait(
        self, request_id: str, deadline_s: float, now_s: float, retry_after_s: Callable[[], float]
    ) -> None:
        """Park until woken (returns), evicted (raises its 429) or the deadline passes (429 queue_timeout)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures[request_id] = future
        self.schedule_pump()  # a slot may be free already (a limit grew): the room, in order, decides
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout=max(0.0, deadline_s - now_s))
        except TimeoutError:
            if self._decider.leave_queue(request_id):
                raise QueueTimeout(
                    "no capacity freed before this request's queue deadline; retry later",
                    retry_after_s=retry_after_s(),
                    reason=ShedReason.QUEUE_TIMEOUT.value,
                ) from None
            # Woken in the same instant the deadline fired: the slot is reserved for us, go on.
        except asyncio.CancelledError:
            self._decider.leave_queue(request_id)
            raise
        finally:
            self._futures.pop(request_id, None)
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                with contextlib.suppress(Exception):
                    future.exception()
