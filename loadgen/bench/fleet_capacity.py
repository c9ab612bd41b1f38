"""A fleet's goodput capacity under one routing policy: the highest rate at which 90% / 99% meet the SLO.

The question a capacity planner asks ("how much of this traffic can these GPUs take at our SLO
with this router?"), answered in virtual time by ``loadgen.goodput.goodput_capacity`` (bracket by
doubling, then geometric bisection; DistServe / MLPerf Server style). Every evaluated rate replays
the workload brought to that rate (``loadgen.bench.scaling``) for ``duration_s`` on the whole fleet
with Sluice's ``DecisionEngine`` (the proxy's own decision code, predictors included) deciding, and
attainment is counted after ``warmup_s``. Admission control is off unless asked for: with it on,
shed requests count as misses, so the capacity is what the fleet serves, not what it refuses.

The route carries the searched SLO (TTFT/TPOT), as a ``sluice bench`` point's route does: SLO-aware
policies (``sluice_predictive``'s headroom filter and ``slo`` objective) aim at the bound they are
judged by. The policy may also be a bench-only one (``oracle``): its decider is built exactly as a
matrix point builds it (``loadgen.bench.policies``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from core.config import LoadedConfig
from loadgen.bench.capacity import replay_virtual
from loadgen.bench.policies import config_policy, decider_factory
from loadgen.bench.scaling import NativeShape, native_shape, scaled, scaling_for
from loadgen.goodput import goodput_capacity
from loadgen.records import RequestRecord
from loadgen.results import SLO
from loadgen.sim.fleet_config import Fleet, virtual_sluice_config
from loadgen.workloads import Workload


def fleet_config(
    fleet: Fleet,
    policy: str,
    admission: bool,
    slo: SLO | None = None,
    policy_params: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """The Sluice config the search decides with: one route with ``policy`` and the SLO it is judged by."""
    route: dict[str, Any] = {"name": "default", "policy": config_policy(policy, policy_params or {})}
    if slo is not None:
        bounds = {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms, "e2e_ms": slo.e2e_ms}
        route["slo"] = {k: v for k, v in bounds.items() if v is not None}
    base: dict[str, Any] = {"routes": [route], "admission": {"enabled": admission}}
    return virtual_sluice_config(fleet, base)


def search_fleet_capacity(
    fleet: Fleet,
    workload: Workload,
    policy: str,
    *,
    slo: SLO,
    targets: Sequence[float],
    scale_by: str,
    seed: int,
    duration_s: float,
    warmup_s: float,
    rel_tol: float = 0.05,
    max_runs: int = 30,
    admission: bool = False,
    policy_params: Mapping[str, Any] | None = None,
    start_rps: float | None = None,
    min_measured: int = 0,
    max_duration_s: float | None = None,
) -> dict[str, Any]:
    """JSON-ready capacities per target, with every evaluated point (rate, attainment, requests).

    ``start_rps`` (default: the workload's native rate) is where the bracketing starts; a good guess
    (e.g. the fleet's capacity from the matrix) saves the doubling/halving runs.

    ``min_measured``: replay a rate for longer than ``duration_s`` when that is needed for about this
    many requests after the warm-up (up to ``max_duration_s``). A 99 % attainment over 800 requests
    is decided by 8 misses; a policy whose capacity is low would otherwise be judged on far fewer
    requests than one whose capacity is high. Each point records its ``duration_s``.
    """
    params = dict(policy_params or {})
    loaded = fleet_config(fleet, policy, admission, slo, params)
    decider = decider_factory(policy, params, loaded, seed, slo)

    # as the matrix runner: a rate-scaled workload is counted over the replay window, a time-scaled
    # trace over its whole length (cut to the window first, it could not be compressed at all)
    def shape_of(length_s: float) -> NativeShape:
        key = length_s if scale_by == "rate" else -1.0
        if key not in shapes:
            shapes[key] = native_shape(workload, seed, length_s if scale_by == "rate" else None)
        return shapes[key]

    shapes: dict[float, NativeShape] = {}
    longest_s = max(duration_s, max_duration_s if max_duration_s is not None else duration_s)
    durations: dict[float, float] = {}

    def window_s(rate_rps: float) -> float:
        wanted_s = warmup_s + min_measured / rate_rps if min_measured > 0 else duration_s
        return min(max(duration_s, math.ceil(wanted_s)), longest_s)

    def run_at_rate(rate_rps: float) -> list[RequestRecord]:
        length_s = window_s(rate_rps)
        durations[round(rate_rps, 9)] = length_s
        shape = shape_of(length_s)
        scaling = scaling_for(workload, shape, scale_by, rate_rps, length_s, seed, warmup_s)
        return replay_virtual(fleet, loaded, scaled(workload, seed, scaling, length_s), seed, decider)

    found = goodput_capacity(
        run_at_rate,
        slo,
        tuple(targets),
        start_rps=max(start_rps if start_rps is not None else shape_of(duration_s).rate_rps, 0.01),
        min_rps=0.01,
        max_rps=1e4,
        rel_tol=rel_tol,
        max_runs=max_runs,
        warmup_s=warmup_s,
    )
    points = sorted(
        {p.rate_rps: p for r in found.values() for p in r.points}.values(), key=lambda p: p.rate_rps
    )
    return {
        "capacity": {
            f"{target:g}": {
                "rate_rps": result.rate_rps,
                "failing_rate_rps": result.failing_rate_rps,
                "converged": result.converged,
            }
            for target, result in found.items()
        },
        "points": [
            {
                "rate_rps": p.rate_rps,
                "attainment_frac": p.attainment_frac,
                "requests": p.requests,
                "measured": p.measured,
                "duration_s": durations.get(round(p.rate_rps, 9), duration_s),
            }
            for p in points
        ],
    }
