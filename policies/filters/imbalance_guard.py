"""``imbalance_guard`` filter: a hard cap on load imbalance that no prediction can override.

Rule (SGLang's imbalance test applied per backend, on weight-normalised load
``L(b) = in_flight_requests / weight``): remove ``b`` iff
``L(b) - L_min > abs_threshold`` AND ``L(b) > rel_threshold · L_min``. The
least-loaded backend always survives, so this never empties the set.

Why: predictions can be wrong or stale (a new backend, a mis-learned speed,
several proxy replicas acting on the same snapshot); whatever the cost model
says, no backend may run away from the others - the "death spiral" of
cache-affinity routers (sglang #14305). It reads only Sluice's own in-flight
accounting, never engine metrics, so a scrape outage cannot disable it.
Defaults ``abs_threshold`` 64 requests and ``rel_threshold`` 3.0 are looser
than SGLang's 1.5 because cost-based routing deliberately loads fast GPUs more
(an H100 prefills ~3x faster than an A100); set ``weight`` per backend to
express expected capacity. Removes nothing while loads are within bounds.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from core.types import BackendView
from policies.context import RouteContext
from policies.registry import BuildContext, PolicyParams, register_plugin

TYPE = "imbalance_guard"


class ImbalanceGuardParams(PolicyParams):
    abs_threshold: float = Field(64.0, ge=0.0)
    rel_threshold: float = Field(3.0, ge=1.0)


class ImbalanceGuardFilter:
    consumes = ("in_flight_requests", "weight")
    reason = "load far above the least-loaded backend"

    def __init__(self, params: ImbalanceGuardParams) -> None:
        self.name = TYPE
        self._abs = params.abs_threshold
        self._rel = params.rel_threshold

    def filter(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Sequence[BackendView]:
        if len(candidates) < 2:
            return candidates
        low = min(v.in_flight_requests / v.weight for v in candidates)
        limit_abs = low + self._abs
        limit_rel = low * self._rel
        return [
            v
            for v in candidates
            if not (
                v.in_flight_requests / v.weight > limit_abs and v.in_flight_requests / v.weight > limit_rel
            )
        ]


@register_plugin("filter", TYPE, ImbalanceGuardParams, "hard cap on in-flight imbalance")
def _build(params: ImbalanceGuardParams, ctx: BuildContext) -> ImbalanceGuardFilter:
    return ImbalanceGuardFilter(params)
