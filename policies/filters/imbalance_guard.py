"""``imbalance_guard`` filter: a hard cap on load imbalance that no prediction can override.

Rule (SGLang's imbalance test applied per backend, on weight-normalised load
``L(b) = signal(b) / weight``): remove ``b`` iff ``L(b) - L_min > abs_threshold``
AND ``L(b) > rel_threshold · L_min``. The least-loaded backend always
survives, so this never empties the set.

``signal`` is ``awaiting_first_byte`` (default: requests sent to the backend
that have not produced a token yet, i.e. its queue plus the prefill in
progress) or ``in_flight_requests``. The queue is the default because it is
what runs away in a "death spiral" (sglang #14305), while a large number of
*running* decodes on a fast GPU is legitimate batching: counting all in-flight
requests would push work off an H100 that batches 5x what an L4 does.

Why a guard at all: predictions can be wrong or stale (a new backend, a
mis-learned speed, several proxy replicas acting on the same snapshot);
whatever the cost model says, no backend's queue may run away from the
others'. It reads only Sluice's own accounting, never engine metrics, so a
scrape outage cannot disable it. Parameters: ``signal`` (default
``awaiting_first_byte``), ``abs_threshold`` (default 32), ``rel_threshold``
(default 3.0); set ``weight`` per backend to express expected capacity.
Removes nothing while loads are within bounds.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.types import BackendView
from policies.context import RouteContext
from policies.params import ImbalanceGuardParams
from policies.registry import BuildContext, register_plugin

TYPE = "imbalance_guard"


class ImbalanceGuardFilter:
    keeps_order = True  # policies.base: what it keeps is an in-order subset of its input
    reason = "load far above the least-loaded backend"

    def __init__(self, params: ImbalanceGuardParams) -> None:
        self.name = TYPE
        self._queue_only = params.signal == "awaiting_first_byte"
        self._abs = params.abs_threshold
        self._rel = params.rel_threshold
        self.consumes = (params.signal, "weight")

    def filter(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Sequence[BackendView]:
        if len(candidates) < 2:
            return candidates
        if self._queue_only:
            loads = [v.awaiting_first_byte / v.weight for v in candidates]
        else:
            loads = [v.in_flight_requests / v.weight for v in candidates]
        # min()/max() written as loops, zip() as indices: builtin calls are generic calls from compiled
        # code, dearer than the comparisons (the same results: the first of equal values is kept).
        low = high = loads[0]
        for load in loads:
            if load < low:
                low = load
            elif load > high:
                high = load
        # Removed iff above BOTH limits, i.e. kept iff at or below the larger one.
        by_abs, by_rel = low + self._abs, low * self._rel
        limit = by_abs if by_abs >= by_rel else by_rel  # max(by_abs, by_rel)
        if high <= limit:
            return candidates
        return [candidates[i] for i in range(len(loads)) if loads[i] <= limit]


@register_plugin("filter", TYPE, ImbalanceGuardParams, "hard cap on queue imbalance")
def _build(params: ImbalanceGuardParams, ctx: BuildContext) -> ImbalanceGuardFilter:
    return ImbalanceGuardFilter(params)
