"""One timer per upstream attempt for first-byte and idle-gap timeouts.

Why not ``asyncio.timeout`` around every read: rescheduling a timer per SSE
chunk costs a heap operation per chunk. Here the relay loop only stores a new
``deadline`` after each chunk (one float); the single timer, when it fires,
re-arms itself at the current deadline if activity moved it, and only
cancels the task once the deadline has really passed (lazy rescheduling, as
nginx does for its read timeouts).

Cancellation is the task's ``cancel()``; ``expired`` tells the caller that a
``CancelledError`` came from this watchdog (then ``task.uncancel()`` is used,
as ``asyncio.timeout`` does, so a simultaneous outside cancellation — the
client going away — is never swallowed).
"""

from __future__ import annotations

import asyncio


class Watchdog:
    __slots__ = ("_armed_at", "_handle", "_loop", "_task", "deadline", "fired")

    def __init__(self, deadline: float, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``deadline`` is in ``loop.time()`` seconds; ``loop``, the running one, when the caller has it
        (``asyncio.get_running_loop()`` is a system call on CPython 3.11)."""
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        task = asyncio.current_task(self._loop)
        if task is None:
            raise RuntimeError("Watchdog must be created inside a task")
        self._task = task
        self.deadline = deadline
        self.fired = False
        self._armed_at = deadline
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(deadline, self._check)

    def _arm(self) -> None:
        self._armed_at = self.deadline
        self._handle = self._loop.call_at(self.deadline, self._check)

    def _check(self) -> None:
        if self._loop.time() >= self.deadline:
            self._handle = None
            self.fired = True
            self._task.cancel()
        else:
            self._arm()

    def push(self, seconds: float) -> None:
        """Move the deadline to ``seconds`` from now (after activity).

        Later deadlines only update a float; an earlier one (the switch from
        the long first-byte timeout to the idle timeout) re-arms the timer.
        """
        self.deadline = self._loop.time() + seconds
        if self.deadline < self._armed_at and self._handle is not None:
            self._handle.cancel()
            self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def expired(self) -> bool:
        """Call in ``except CancelledError``: True iff this watchdog caused it and nobody else cancelled."""
        self.stop()
        return self.fired and self._task.uncancel() == 0
