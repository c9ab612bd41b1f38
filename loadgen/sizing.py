"""Scale a workload so a simulated fleet is busy but not overloaded (``sluice demo``, peer benchmarks).

1. **Probe** the workload as published (scale 1) over ``probe_window_s`` of its own timeline from
   ``start_s``: request rate and mean prompt/output tokens, prompt tokens counted with the
   simulator's estimator on the rendered text (so they are what the backends will see).
2. **Capacity** of the fleet for that mean request: the sum of the per-backend closed-form
   capacities of ``loadgen.sim.capacity`` (no prefix reuse assumed, which under-states what a
   cache-aware router can reach).
3. **Target** = ``load_frac`` x capacity, reached by one scaling knob:
   ``time`` (``time_scale = probe rate / target``): the trace is replayed faster, so the run covers
   ``duration / time_scale`` seconds of it with its own burst structure; right for fixed traces
   (Azure), where ``rate`` would superpose copies of each row at the same instant.
   ``rate`` (``rate_scale = target / probe rate``): for generators (ShareGPT sessions, Poisson),
   which draw more arrivals at the same span.

The result carries every number, so a run's output can say exactly how the load was chosen.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from core.features import prompt_text
from core.tokens import estimate_tokens
from loadgen.sim.capacity import BackendCapacity, RequestShape, fleet_capacity
from loadgen.sim.fleet_config import Fleet
from loadgen.workloads import Workload, WorkloadError, build_workload

ScaleKnob = Literal["time", "rate"]


@dataclass(frozen=True, slots=True)
class Sizing:
    workload: Workload
    knob: ScaleKnob
    scale: float
    probe_requests: int
    probe_window_s: float
    trace_rate_rps: float
    shape: RequestShape
    capacities: tuple[BackendCapacity, ...]
    load_frac: float

    @property
    def capacity_rps(self) -> float:
        return sum(c.capacity_rps for c in self.capacities)

    @property
    def target_rps(self) -> float:
        return self.load_frac * self.capacity_rps

    def describe(self) -> dict[str, Any]:
        """Plain JSON for results files."""
        return {
            "knob": self.knob,
            "scale": self.scale,
            "probe_requests": self.probe_requests,
            "probe_window_s": self.probe_window_s,
            "trace_rate_rps": self.trace_rate_rps,
            "mean_prompt_tokens": self.shape.prompt_tokens,
            "mean_output_tokens": self.shape.output_tokens,
            "capacity_rps": self.capacity_rps,
            "load_frac": self.load_frac,
            "target_rps": self.target_rps,
            "backends": [asdict(c) for c in self.capacities],
        }

    def lines(self) -> list[str]:
        """Human-readable account of the sizing."""
        per_backend = ", ".join(f"{c.name} ({c.gpu}) {c.capacity_rps:.1f}" for c in self.capacities)
        how = (
            f"time scale {self.scale:.3f} (replays {1 / self.scale:.1f}x faster than recorded)"
            if self.knob == "time"
            else f"rate scale {self.scale:.2f}"
        )
        return [
            f"workload {self.workload.name}: {self.trace_rate_rps:.2f} req/s as recorded, mean prompt "
            f"{self.shape.prompt_tokens:.0f} / output {self.shape.output_tokens:.0f} tokens "
            f"(probe: {self.probe_requests} requests over {self.probe_window_s:.0f} s)",
            f"fleet capacity for that request: {self.capacity_rps:.1f} req/s ({per_backend})",
            f"offered load: {self.load_frac:.0%} of capacity = {self.target_rps:.1f} req/s, by {how}",
        ]


def _probe(
    name: str, options: Mapping[str, Any], params: Mapping[str, Any], window_s: float
) -> tuple[int, RequestShape]:
    probe = build_workload(name, {**options, "duration_s": window_s}, params)
    prompts: list[int] = []
    outputs: list[int] = []
    for request in probe.requests():
        prompts.append(max(1, estimate_tokens(prompt_text(request.endpoint, request.body))))
        outputs.append(max(1, request.true_output_tokens))
    if not prompts:
        raise WorkloadError(f"workload {name!r} has no requests in its first {window_s:g} s from start_s")
    return len(prompts), RequestShape(statistics.fmean(prompts), statistics.fmean(outputs))


def size_workload(
    name: str,
    fleet: Fleet,
    *,
    duration_s: float,
    load_frac: float,
    knob: ScaleKnob,
    options: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    probe_window_s: float = 600.0,
) -> Sizing:
    """The module docstring's three steps; ``options``/``params`` as for ``build_workload``."""
    if not 0 < load_frac <= 2:
        raise WorkloadError("load fraction must be in (0, 2]")
    base = dict(options or {})
    base.pop("time_scale", None)
    base.pop("rate_scale", None)
    n, shape = _probe(name, base, params or {}, probe_window_s)
    capacities = fleet_capacity(((b.name, b.profile) for b in fleet.backends), shape)
    trace_rate_rps = n / probe_window_s
    target_rps = load_frac * sum(c.capacity_rps for c in capacities)
    scale = trace_rate_rps / target_rps if knob == "time" else target_rps / trace_rate_rps
    scaled = {**base, "duration_s": duration_s, f"{knob}_scale": scale}
    workload = build_workload(name, scaled, params or {})
    return Sizing(workload, knob, scale, n, probe_window_s, trace_rate_rps, shape, capacities, load_frac)
