"""How a workload is brought to an offered rate for ``duration_s`` of replay, per seed.

Two knobs of ``loadgen.workloads`` (``WorkloadOptions``): ``rate_scale`` (more arrivals at the
same span: generators such as ShareGPT sessions draw more, fixed traces superpose independent
copies of each row, at the same instant) and ``time_scale`` (a fixed trace's timeline compressed).

* ``scale_by: rate``: ``rate_scale = target / native rate`` of the measured part (after the warm-up)
  of the first ``duration_s``, then re-counted on the scaled workload and corrected (a few rounds)
  because session think times do not scale with the rate.
* ``scale_by: time`` (fixed traces): each seed replays its own window of the trace, starting at an
  offset drawn from the seed. The compression is calibrated on that window's own request count, so
  the measured offered rate is the target whatever the trace's rate does there (the Azure 2023 conversation
  trace's rate varies by about 1.5x over its hour):
  ``time_scale = window rate / target``, iterated until the window it covers is stable. When the
  trace is too short to fill ``duration_s`` at that compression, the rest comes from copies
  (``rate_scale > 1``).
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field

from loadgen.bench.errors import BenchError
from loadgen.workloads import Workload

_CALIBRATION_ROUNDS = 4
_RATE_TOLERANCE = 0.02  # |offered / target - 1| at which the rate calibration stops


@dataclass(frozen=True, slots=True)
class Scaling:
    """``WorkloadOptions`` factors for one point; ``start_offset_s`` in source seconds."""

    time_scale: float
    rate_scale: float
    target_rps: float
    start_offset_s: float = 0.0


def scaled(workload: Workload, seed: int, scaling: Scaling, duration_s: float | None) -> Workload:
    """The same workload with the matrix's seed, scaling and duration."""
    options = workload.options.model_copy(
        update={
            "seed": seed,
            "time_scale": workload.options.time_scale * scaling.time_scale,
            "rate_scale": scaling.rate_scale,
            "start_s": workload.options.start_s + scaling.start_offset_s,
            "duration_s": duration_s,
            "max_requests": None,
        }
    )
    return Workload(workload.spec, options, workload.params)


@dataclass(frozen=True, slots=True)
class NativeShape:
    """The workload as configured (both scales 1): its arrival times over ``span_s`` replay seconds."""

    arrivals_s: tuple[float, ...] = field(repr=False)
    span_s: float

    @property
    def requests(self) -> int:
        return len(self.arrivals_s)

    @property
    def rate_rps(self) -> float:
        return self.requests / self.span_s

    def count(self, start_s: float, length_s: float) -> int:
        return bisect.bisect_left(self.arrivals_s, start_s + length_s) - bisect.bisect_left(
            self.arrivals_s, start_s
        )


def native_shape(workload: Workload, seed: int, duration_s: float | None) -> NativeShape:
    """The workload's arrivals within ``duration_s`` (None: the whole trace, up to its last arrival)."""
    arrivals = sorted(
        r.arrival_s for r in scaled(workload, seed, Scaling(1.0, 1.0, 0.0), duration_s).requests()
    )
    span_s = duration_s if duration_s is not None else (arrivals[-1] if arrivals else 0.0)
    if not arrivals or span_s <= 0:
        raise BenchError(f"workload {workload.name!r} has no requests to scale")
    return NativeShape(tuple(arrivals), span_s)


def scaling_for(
    workload: Workload,
    shape: NativeShape,
    scale_by: str,
    target_rps: float,
    duration_s: float,
    seed: int,
    warmup_s: float = 0.0,
) -> Scaling:
    """Reach ``target_rps`` in the measured part (after ``warmup_s``) of ``duration_s`` of replay.

    Rates are counted where they are measured: multi-turn sessions ramp up (only first turns at the
    start), so a rate averaged from time 0 would under-state the measured window's.
    """
    measured_s = duration_s - warmup_s
    if scale_by == "rate":
        return _rate_scaling(workload, shape, target_rps, duration_s, seed, warmup_s)
    span_s = shape.span_s
    floor = duration_s / span_s  # less compression than this and the trace runs out
    time_scale = max(shape.rate_rps / target_rps, floor)
    where = random.Random(f"bench-window:{seed}").random()
    offset_s, window_rate = 0.0, shape.rate_rps
    for _ in range(_CALIBRATION_ROUNDS):
        offset_s = where * max(0.0, span_s - duration_s / time_scale)
        count = shape.count(offset_s + warmup_s / time_scale, measured_s / time_scale)
        if count == 0:
            break
        window_rate = count / (measured_s / time_scale)
        time_scale = max(window_rate / target_rps, floor)
    rate_scale = target_rps * time_scale / window_rate
    return Scaling(time_scale, rate_scale, target_rps, offset_s / workload.options.time_scale)


def _rate_scaling(
    workload: Workload, shape: NativeShape, target_rps: float, duration_s: float, seed: int, warmup_s: float
) -> Scaling:
    """``rate_scale`` whose measured window offers ``target_rps``, re-counted on the scaled workload.

    One linear step (``target / native window rate``) is exact only when every arrival scales with
    the rate. Multi-turn sessions do not: ``rate_scale`` starts sessions faster but their users'
    think times stay human, so more of each session's later turns fall inside a short window
    (ShareGPT at 60 s came out 1.4x the target; at 600 s 0.85x). So the scaled workload's own
    arrivals are counted and the scale corrected, a few rounds, keeping the closest.
    """
    measured_s = duration_s - warmup_s
    window_rate = shape.count(warmup_s, measured_s) / measured_s
    if window_rate <= 0:
        raise BenchError(f"workload {workload.name!r} has no requests after the warm-up")
    rate_scale = target_rps / window_rate
    best_scale, best_error = rate_scale, math.inf
    for _ in range(_CALIBRATION_ROUNDS):
        trial = scaled(workload, seed, Scaling(1.0, rate_scale, target_rps), duration_s)
        arrivals = sorted(r.arrival_s for r in trial.requests())
        rate = NativeShape(tuple(arrivals), duration_s).count(warmup_s, measured_s) / measured_s
        if rate <= 0:
            break
        error = abs(rate / target_rps - 1.0)
        if error < best_error:
            best_scale, best_error = rate_scale, error
        if error <= _RATE_TOLERANCE:
            break
        rate_scale *= target_rps / rate
    return Scaling(1.0, best_scale, target_rps)
