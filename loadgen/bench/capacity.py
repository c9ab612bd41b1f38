"""A fleet's capacity for a workload, so that "0.7x / 0.9x of capacity" means the same for every policy.

Definition: the sum, over the fleet's backends, of what each backend carries **alone** within the
SLO: its goodput capacity (``loadgen.goodput.goodput_capacity``, DistServe/MLPerf style), the highest
offered rate of this workload at which at least ``capacity.target_frac`` of requests meet every SLO
bound. Searched in virtual time on a one-backend fleet with admission control off (the engine's own
capacity, not the proxy's), by scaling the workload's rate (``rate_scale = rate / native rate``) with
the search seed, after ``capacity.warmup_s``. Backends with the same profile are searched once.

Why not the goodput capacity of the whole fleet under ``round_robin``: that would define 0.9x as
"where round robin still meets the SLO", so no policy could look much better than round robin by
construction. The per-backend sum is what a perfect split by speed would carry (with every session's
prefix kept on one backend); it does not depend on any routing policy, and a good router should get
close to it. The search's evaluated points are kept in the results for inspection.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from core.config import LoadedConfig, SluiceConfig
from core.yaml_source import SourceMap
from decision.engine import DecisionEngine
from loadgen.bench.scaling import NativeShape, scaled, scaling_for
from loadgen.goodput import goodput_capacity
from loadgen.records import RequestRecord
from loadgen.results import SLO
from loadgen.sim.faults import FaultSpec
from loadgen.sim.fleet_config import BackendSpec, Fleet, sluice_config
from loadgen.sim.virtual import DeciderFactory, VirtualFleet, VirtualOptions
from loadgen.workloads import Workload

SEARCH_POLICY = "round_robin"


@dataclass(frozen=True, slots=True)
class CapacityTask:
    """Search the capacity of one profile of ``fleet`` (``backends`` share it) for ``workload``."""

    fleet: str
    workload: str
    profile: str
    backends: tuple[str, ...]


def profile_groups(fleet: Fleet) -> dict[str, tuple[str, ...]]:
    """Backend names by profile, keyed by profile name (or first backend when names collide)."""
    by_fingerprint: dict[str, list[BackendSpec]] = {}
    for spec in fleet.backends:
        by_fingerprint.setdefault(spec.profile.model_dump_json(), []).append(spec)
    names = [specs[0].profile.name for specs in by_fingerprint.values()]
    out: dict[str, tuple[str, ...]] = {}
    for specs in by_fingerprint.values():
        name = specs[0].profile.name
        out[name if names.count(name) == 1 else specs[0].name] = tuple(s.name for s in specs)
    return out


def alone(fleet: Fleet, backend: str) -> Fleet:
    """A fleet of just this backend, without faults."""
    spec: BackendSpec = next(b for b in fleet.backends if b.name == backend)
    healthy = replace(spec, faults=FaultSpec(), fault_schedule=())
    return Fleet(fleet.config, (healthy,), fleet.source)


def _search_config(fleet: Fleet, sluice: dict[str, Any]) -> LoadedConfig:
    base = {**sluice, "admission": {**sluice.get("admission", {}), "enabled": False}}
    base["routes"] = [{"name": "default", "policy": {"name": SEARCH_POLICY}}]
    urls = {b.name: f"http://{b.name}.virtual" for b in fleet.backends}
    return LoadedConfig(
        SluiceConfig.model_validate(sluice_config(fleet, urls, base)), SourceMap("<capacity>")
    )


def replay_virtual(
    fleet: Fleet,
    loaded: LoadedConfig,
    workload: Workload,
    seed: int,
    decider: DeciderFactory | None = None,
) -> list[RequestRecord]:
    """One virtual-time replay, as load-client records.

    The decider is the proxy's own ``DecisionEngine`` (seeded) unless ``decider`` builds another one
    (the matrix's ``loadgen.bench.policies.decider_factory``, so a bench-only oracle can be searched).
    """
    vf = VirtualFleet(
        fleet,
        loaded,
        decider_factory=decider
        or (lambda f: DecisionEngine.from_config(loaded, f.clock, random.Random(seed))),
        options=VirtualOptions(seed=seed),
    )
    return [r.to_load_record(with_itl=False) for r in vf.run(workload.requests())]


def search_capacity(
    fleet: Fleet,
    workload: Workload,
    shape: NativeShape,
    scale_by: str,
    *,
    slo: SLO,
    seed: int,
    duration_s: float,
    warmup_s: float,
    target_frac: float,
    rel_tol: float,
    max_runs: int,
    sluice: dict[str, Any],
) -> dict[str, Any]:
    """Goodput capacity of ``fleet`` (one backend) for ``workload``; JSON-ready, with every point.

    ``shape`` and ``scale_by`` say how the workload reaches each searched rate (``scaling_for``).
    """
    loaded = _search_config(fleet, sluice)

    def run_at_rate(rate_rps: float) -> list[RequestRecord]:
        scaling = scaling_for(workload, shape, scale_by, rate_rps, duration_s, seed, warmup_s)
        return replay_virtual(fleet, loaded, scaled(workload, seed, scaling, duration_s), seed)

    found = goodput_capacity(
        run_at_rate,
        slo,
        (target_frac,),
        start_rps=1.0,
        min_rps=0.01,
        max_rps=1e4,
        rel_tol=rel_tol,
        max_runs=max_runs,
        warmup_s=warmup_s,
    )[target_frac]
    return {
        "rate_rps": found.rate_rps,
        "failing_rate_rps": found.failing_rate_rps,
        "converged": found.converged,
        "points": [
            {"rate_rps": p.rate_rps, "attainment_frac": p.attainment_frac, "requests": p.requests}
            for p in found.points
        ],
    }
