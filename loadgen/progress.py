"""A one-line progress bar on stderr for long runs (no dependency; redrawn in place with ``\\r``).

Shows elapsed time against the expected span when the workload's duration is
known, plus live counters: sent, in flight, ok, shed, failed. Drawn only
when stderr is a terminal unless forced, so logs and CI output stay clean.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from loadgen.client import Counters

BAR_WIDTH = 24


def render(counters: Counters, elapsed_s: float, expected_s: float | None) -> str:
    if expected_s and expected_s > 0:
        frac = min(1.0, elapsed_s / expected_s)
        filled = int(frac * BAR_WIDTH)
        head = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {elapsed_s:6.1f}/{expected_s:.0f} s"
    else:
        head = f"{elapsed_s:6.1f} s"
    return (
        f"{head}  sent {counters.sent}  in flight {counters.in_flight}  ok {counters.ok}"
        f"  shed {counters.shed}  failed {counters.failed}"
    )


class ProgressBar:
    def __init__(
        self,
        counters: Counters,
        expected_s: float | None,
        stream: TextIO | None = None,
        interval_s: float = 0.5,
        enabled: bool | None = None,
    ) -> None:
        """``enabled=None`` draws only when the stream is a terminal."""
        self._counters = counters
        self._expected_s = expected_s
        self._stream = stream or sys.stderr
        self._interval_s = interval_s
        self.enabled = self._stream.isatty() if enabled is None else enabled
        self._start = time.monotonic()

    def draw(self) -> None:
        if self.enabled:
            line = render(self._counters, time.monotonic() - self._start, self._expected_s)
            self._stream.write("\r" + line + "\033[K")
            self._stream.flush()

    async def run(self) -> None:
        """Redraw every ``interval_s`` until cancelled; leaves the final line in place."""
        if not self.enabled:
            return
        try:
            while True:
                self.draw()
                await asyncio.sleep(self._interval_s)
        finally:
            self.draw()
            self._stream.write("\n")
            self._stream.flush()
