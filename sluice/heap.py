"""Garbage-collector settings of a long-running Sluice process, shared with the benchmarks that time it.

Why tune the collector at all: CPython's default generation-0 threshold (700
allocations) runs a young collection every few requests while the proxy holds
64 requests in flight, so it scans the same live request objects (aiohttp's
request and response, futures, the exchange) again and again and promotes
them to generation 1, whose collections then scan them once more. Measured on
the overhead benchmark's chat load (``bench/overhead.py`` setup, default
config, ``gc.callbacks`` timing in the serving process): 4.2 % of the
process's CPU in the collector with the defaults, 0.8 % with a threshold of
5,000, where most request objects have died before the collection looks at
them. The price is a longer young collection, ~0.6 ms instead of ~0.25 ms,
rare next to a TTFT budget of hundreds of milliseconds.

Why not larger still: with a generation-0 threshold of 50,000 (measured the
same way, compiled build, two alternated 8 s runs each at 5,000 and 50,000)
the collector's share went from 0.9-1.0 % to 0.7-0.9 % of the process's CPU,
within the noise of the CPU per request, while each young collection grew from
~0.6 ms to 9-11 ms, a pause every request in flight waits through; resident
memory after the run was the same (82.4-82.9 MB both). Not worth a 15x longer
pause.

``gc.freeze`` moves the start-up objects (config, predictor tables, imported
modules) out of the generations, so full collections stop rescanning them.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 5_000
GEN1_THRESHOLD = 10
GEN2_THRESHOLD = 10


def settle_after_startup() -> tuple[int, int, int]:
    """Freeze what start-up built and set the serving thresholds; returns the previous thresholds."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    return previous


def restore(previous: tuple[int, int, int]) -> None:
    """Undo ``settle_after_startup`` (for benchmarks that time several engines in one process)."""
    gc.unfreeze()
    gc.set_threshold(*previous)
