"""Goodput, both kinds.

1. *Request goodput* (vLLM ``--goodput``): good requests per second, where a
   request is good when it completed and met every SLO bound given
   (``results.SLO.met_by``). ``request_goodput_rps`` and the ``goodput_rps``
   field of every results summary.

2. *Goodput capacity* (DistServe; MLPerf Server's search over Poisson QPS):
   the highest offered rate at which at least ``target_frac`` (90 %, 99 %) of
   requests meet both TTFT and TPOT. Found by search over rate with a caller's
   ``run_at_rate(rate_rps) -> records`` (the virtual-time simulator provides
   one; anything deterministic for a seed works):

   * bracket: from ``start_rps``, double while the target holds, or halve
     while it fails, until a passing ``lo`` and failing ``hi`` are known
     (bounded by ``min_rps``/``max_rps``);
   * bisect geometrically between them until ``hi / lo ≤ 1 + rel_tol``;
   * answer ``lo``, the highest rate *observed* to pass.

   Attainment is assumed to fall as the rate rises; with noisy runs the search
   still returns a rate that passed next to one that failed, and every
   evaluated point is returned so the curve can be inspected. Evaluations are
   memoised, so searching for 90 % and 99 % together reuses runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loadgen.records import Outcome, RequestRecord
from loadgen.results import SLO, included

RunAtRate = Callable[[float], Sequence[RequestRecord]]


def request_goodput_rps(records: Sequence[RequestRecord], slo: SLO, duration_s: float) -> float:
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    return sum(1 for r in records if slo.met_by(r)) / duration_s


def _measured(records: Sequence[RequestRecord], warmup_s: float) -> list[RequestRecord]:
    return [r for r in included(records, warmup_s) if r.outcome is not Outcome.NOT_SENT]


def attainment_frac(records: Sequence[RequestRecord], slo: SLO, warmup_s: float = 0.0) -> float:
    """Share of sent requests (after warm-up) that met the SLO; 0 when nothing was sent."""
    sent = _measured(records, warmup_s)
    return sum(1 for r in sent if slo.met_by(r)) / len(sent) if sent else 0.0


@dataclass(frozen=True, slots=True)
class RatePoint:
    """One evaluated rate: ``requests`` replayed in all, ``measured`` of them counted (after warm-up).

    ``measured`` says how much a 99 % attainment means (1 % of 300 requests is 3 misses).
    """

    rate_rps: float
    attainment_frac: float
    requests: int
    measured: int = 0


@dataclass(slots=True)
class CapacityResult:
    """``rate_rps`` is the highest rate seen to meet ``target_frac`` (None if even ``min_rps`` failed)."""

    target_frac: float
    rate_rps: float | None
    failing_rate_rps: float | None
    converged: bool
    points: list[RatePoint] = field(default_factory=list)


class _Evaluator:
    def __init__(self, run_at_rate: RunAtRate, slo: SLO, warmup_s: float, max_runs: int) -> None:
        self._run = run_at_rate
        self._slo = slo
        self._warmup_s = warmup_s
        self._max_runs = max_runs
        self.points: dict[float, RatePoint] = {}

    @property
    def exhausted(self) -> bool:
        return len(self.points) >= self._max_runs

    def __call__(self, rate_rps: float) -> RatePoint:
        key = round(rate_rps, 9)
        if key not in self.points:
            records = self._run(rate_rps)
            sent = _measured(records, self._warmup_s)
            frac = sum(1 for r in sent if self._slo.met_by(r)) / len(sent) if sent else 0.0
            self.points[key] = RatePoint(rate_rps, frac, len(records), len(sent))
        return self.points[key]


def _search(
    evaluate: _Evaluator, target_frac: float, start_rps: float, min_rps: float, max_rps: float, rel_tol: float
) -> CapacityResult:
    lo: float | None = None
    hi: float | None = None
    rate = min(max(start_rps, min_rps), max_rps)
    while not evaluate.exhausted:
        if evaluate(rate).attainment_frac >= target_frac:
            lo = rate
            if hi is not None or rate >= max_rps:
                break
            rate = min(rate * 2.0, max_rps)
        else:
            hi = rate
            if lo is not None or rate <= min_rps:
                break
            rate = max(rate / 2.0, min_rps)
    while lo is not None and hi is not None and hi / lo > 1.0 + rel_tol and not evaluate.exhausted:
        mid = math.sqrt(lo * hi)
        if evaluate(mid).attainment_frac >= target_frac:
            lo = mid
        else:
            hi = mid
    converged = (lo is not None and hi is not None and hi / lo <= 1.0 + rel_tol) or (
        lo is not None and lo >= max_rps
    ) or (lo is None and hi is not None and hi <= min_rps)  # fmt: skip
    points = sorted(evaluate.points.values(), key=lambda p: p.rate_rps)
    return CapacityResult(target_frac, lo, hi, converged, points)


def goodput_capacity(
    run_at_rate: RunAtRate,
    slo: SLO,
    targets: Sequence[float] = (0.9, 0.99),
    *,
    start_rps: float = 1.0,
    min_rps: float = 0.01,
    max_rps: float = 1e4,
    rel_tol: float = 0.05,
    max_runs: int = 40,
    warmup_s: float = 0.0,
) -> dict[float, CapacityResult]:
    """Highest offered rate meeting each attainment target (see the module docstring)."""
    if slo.empty:
        raise ValueError("goodput capacity needs at least one SLO bound")
    if not 0 < min_rps <= start_rps <= max_rps:
        raise ValueError("need 0 < min_rps <= start_rps <= max_rps")
    evaluate = _Evaluator(run_at_rate, slo, warmup_s, max_runs)
    return {t: _search(evaluate, t, start_rps, min_rps, max_rps, rel_tol) for t in targets}
