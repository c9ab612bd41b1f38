"""Arrival processes and length draws shared by the workload generators.

All draws take an explicit ``random.Random`` so a seed fixes the sequence.

* Poisson at rate λ: exponential gaps with mean 1/λ.
* Gamma with burstiness ``k`` (vLLM ``--burstiness``): gaps ~ Gamma(shape=k,
  scale=1/(λ·k)), so the mean rate stays λ while the gap CV is 1/√k
  (k = 1 is Poisson, k < 1 burstier, k > 1 smoother).
* Piecewise-constant rate (step overload, spikes): each segment is generated
  with its own rate by the same gap law, restarted at the segment boundary
  (exact for Poisson by memorylessness; for Gamma it keeps the shape within
  each segment).
* ``stochastic_round``: rounds x up with probability frac(x) so expected
  counts are exact (used for rate thinning/superposition and window counts).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


def gap_s(rng: random.Random, rate_rps: float, burstiness: float = 1.0) -> float:
    """One inter-arrival gap of a Gamma renewal process with mean ``1/rate_rps``."""
    if burstiness == 1.0:
        return rng.expovariate(rate_rps)
    return rng.gammavariate(burstiness, 1.0 / (rate_rps * burstiness))


def renewal_times(
    rng: random.Random, rate_rps: float, start_s: float, end_s: float, burstiness: float = 1.0
) -> Iterator[float]:
    """Arrival times in ``[start_s, end_s)`` of a Gamma renewal process (first gap drawn too)."""
    if rate_rps <= 0:
        return
    t = start_s + gap_s(rng, rate_rps, burstiness)
    while t < end_s:
        yield t
        t += gap_s(rng, rate_rps, burstiness)


@dataclass(frozen=True, slots=True)
class RateSegment:
    duration_s: float
    rate_rps: float


def piecewise_times(
    rng: random.Random, segments: Sequence[RateSegment], burstiness: float = 1.0
) -> Iterator[float]:
    start = 0.0
    for segment in segments:
        yield from renewal_times(rng, segment.rate_rps, start, start + segment.duration_s, burstiness)
        start += segment.duration_s


def stochastic_round(rng: random.Random, x: float) -> int:
    whole = math.floor(x)
    return whole + (1 if rng.random() < x - whole else 0)


def uniform_length(rng: random.Random, mean_tokens: int, range_ratio: float) -> int:
    """vLLM ``random`` dataset lengths: uniform integer in ``[mean·(1−r), mean·(1+r)]``, at least 1."""
    if range_ratio <= 0:
        return max(1, mean_tokens)
    low = max(1, math.floor(mean_tokens * (1 - range_ratio)))
    high = max(low, math.ceil(mean_tokens * (1 + range_ratio)))
    return rng.randint(low, high)
