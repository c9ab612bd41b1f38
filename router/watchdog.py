"""First-byte and idle-gap timeouts of upstream attempts: one ``Watchdog`` per attempt, one timer for all.

Why not ``asyncio.timeout`` around every read: rescheduling a timer per SSE
chunk costs a heap operation per chunk. Here the relay loop only stores a new
``deadline`` after each chunk (one float), and the timer, when it fires,
re-arms itself at the current deadline if activity moved it, and only
cancels the task once the deadline has really passed (lazy rescheduling, as
nginx does for its read timeouts).

Why one ``WatchdogTimer`` shared by every attempt on a loop instead of a timer
per watchdog: on uvloop a timer handle is a libuv handle, allocated, started,
stopped and closed per call (``call_at`` + ``cancel`` ~2.3 us, ~1 % of a small
request's CPU). The shared timer is armed at the earliest deadline of the
watchdogs it knows; a new watchdog only re-arms it when its deadline is earlier
(the common case, ``now + first_byte_s`` for every attempt, never is). When it
fires it cancels the tasks whose deadline has passed and re-arms itself at the
earliest remaining one, so each watchdog still fires at its own deadline, not
on a coarser tick. ``stop`` only forgets the watchdog (a set removal).

Cancellation is the task's ``cancel()``; ``expired`` tells the caller that a
``CancelledError`` came from this watchdog (then ``task.uncancel()`` is used,
as ``asyncio.timeout`` does, so a simultaneous outside cancellation — the
client going away — is never swallowed).
"""

from __future__ import annotations

import asyncio
import math


class WatchdogTimer:
    """The one timer of a loop's watchdogs (``router.app`` makes one per app; see the module docstring)."""

    __slots__ = ("_active", "_armed_at", "_handle", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._active: set[Watchdog] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def __len__(self) -> int:
        """Watchdogs started and neither stopped nor fired."""
        return len(self._active)

    def _watch(self, watchdog: Watchdog) -> None:
        self._active.add(watchdog)
        if watchdog.deadline < self._armed_at:
            self._arm(watchdog.deadline)

    def _arm(self, at: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = at
        self._handle = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        now = self._loop.time()
        due = [w for w in self._active if now >= w.deadline]
        for watchdog in due:
            self._active.discard(watchdog)
            watchdog.fire()
        if self._active:
            self._arm(min(w.deadline for w in self._active))

    def close(self) -> None:
        """Stop the timer (the app is stopping); the watchdogs still running will not fire."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = math.inf
        self._active.clear()


class Watchdog:
    __slots__ = ("_task", "_timer", "deadline", "fired")

    def __init__(
        self,
        deadline: float,
        timer: WatchdogTimer | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """``deadline`` is in ``loop.time()`` seconds; ``timer``, the app's shared one (else a timer of
        its own); ``loop``, the running one, when the caller has it (``asyncio.get_running_loop()`` is a
        system call on CPython 3.11)."""
        if loop is None:
            loop = timer._loop if timer is not None else asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("Watchdog must be created inside a task")
        self._task = task
        self._timer = timer if timer is not None else WatchdogTimer(loop)
        self.deadline = deadline
        self.fired = False
        self._timer._watch(self)

    def fire(self) -> None:
        """The deadline passed (called by the timer): cancel the task."""
        self.fired = True
        self._task.cancel()

    def push(self, seconds: float) -> None:
        """Move the deadline to ``seconds`` from now (after activity).

        Later deadlines only update a float; an earlier one than the timer's (the switch from the
        long first-byte timeout to the idle timeout) re-arms the timer.
        """
        timer = self._timer
        self.deadline = deadline = timer._loop.time() + seconds
        if deadline < timer._armed_at and not self.fired:
            timer._arm(deadline)

    def stop(self) -> None:
        self._timer._active.discard(self)

    def expired(self) -> bool:
        """Call in ``except CancelledError``: True iff this watchdog caused it and nobody else cancelled."""
        self.stop()
        return self.fired and self._task.uncancel() == 0
