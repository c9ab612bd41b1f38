"""Shared helpers for the load-generator tests: the real data directory and a steppable client timer."""

from __future__ import annotations

import asyncio

import pytest

from loadgen.workloads.base import default_data_dir

DATA_DIR = default_data_dir()
needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"real traces not found at {DATA_DIR}")


class SteppedTimer:
    """A client ``Timer`` whose clock only moves when told to; ``sleep_until`` jumps instead of waiting.

    ``arm()`` then ``await read()`` lets a fake server wait until the client has
    looked at the clock after a write (i.e. processed that chunk) before it moves
    the clock again, so every timestamp the client records is known exactly.
    One shared clock: exact only while one request at a time is being timed.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self._read = asyncio.Event()

    def now_s(self) -> float:
        self._read.set()
        return self.now

    async def sleep_until(self, t_s: float) -> None:
        # Let tasks that are already runnable take their timestamps first, then jump.
        await asyncio.sleep(0)
        if t_s > self.now:
            self.now = t_s

    def arm(self, t_s: float) -> None:
        self.now = t_s
        self._read.clear()

    async def read(self) -> None:
        await asyncio.wait_for(self._read.wait(), timeout=10)
