"""A fleet's goodput capacity under one routing policy: the highest rate at which 90% / 99% meet the SLO.

The question a capacity planner asks ("how much of this traffic can these GPUs take at our SLO
with this router?"), answered in virtual time by ``loadgen.goodput.goodput_capacity`` (bracket by
doubling, then geometric bisection; DistServe / MLPerf Server style). Every evaluated rate replays
the workload brought to that rate (``loadgen.bench.scaling``) for ``duration_s`` on the whole fleet
with Sluice's ``DecisionEngine`` (the proxy's own decision code, predictors included) deciding, and
attainment is counted after ``warmup_s``. Admission control is off unless asked for: with it on,
shed requests count as misses, so the capacity is what the fleet serves, not what it refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.config import LoadedConfig
from loadgen.bench.capacity import replay_virtual
from loadgen.bench.scaling import native_shape, scaled, scaling_for
from loadgen.goodput import goodput_capacity
from loadgen.records import RequestRecord
from loadgen.results import SLO
from loadgen.sim.fleet_config import Fleet, virtual_sluice_config
from loadgen.workloads import Workload


def fleet_config(fleet: Fleet, policy: str, admission: bool) -> LoadedConfig:
    """The Sluice config the search decides with: one route with ``policy``."""
    base: dict[str, Any] = {
        "routes": [{"name": "default", "policy": {"name": policy}}],
        "admission": {"enabled": admission},
    }
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
) -> dict[str, Any]:
    """JSON-ready capacities per target, with every evaluated point (rate, attainment, requests)."""
    loaded = fleet_config(fleet, policy, admission)
    shape = native_shape(workload, seed, duration_s)

    def run_at_rate(rate_rps: float) -> list[RequestRecord]:
        scaling = scaling_for(workload, shape, scale_by, rate_rps, duration_s, seed, warmup_s)
        return replay_virtual(fleet, loaded, scaled(workload, seed, scaling, duration_s), seed)

    found = goodput_capacity(
        run_at_rate,
        slo,
        tuple(targets),
        start_rps=max(shape.rate_rps, 0.01),
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
            {"rate_rps": p.rate_rps, "attainment_frac": p.attainment_frac, "requests": p.requests}
            for p in points
        ],
    }
