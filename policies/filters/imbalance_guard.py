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
        n = len(candidates)
        if n < 2:
            return candidates
        queue_only = self._queue_only
        # The bounds in one pass, without a list of the loads: the kept list is built (a second pass over
        # views now in cache, the same divisions, so the same floats) only when something is removed. Why:
        # 16 boxed floats and a list per decision are fresh, cold memory on the decision path.
        # min()/max() written as loops: builtin calls are generic calls from compiled code, dearer than
        # the comparisons (the same results: the first of equal values is kept).
        view = candidates[0]
        if queue_only:  # one loop per signal: no test per backend
            low = high = view.awaiting_first_byte / view.weight
            for view in candidates:  # the first again too: no-op comparisons, and no index arithmetic
                load = view.awaiting_first_byte / view.weight
                if load < low:
                    low = load
                elif load > high:
                    high = load
        else:
            low = high = view.in_flight_requests / view.weight
            for view in candidates:
                load = view.in_flight_requests / view.weight
                if load < low:
                    low = load
                elif load > high:
                    high = load
        # Removed iff above BOTH limits, i.e. kept iff at or below the larger one.
        by_abs, by_rel = low + self._abs, low * self._rel
        limit = by_abs if by_abs >= by_rel else by_rel  # max(by_abs, by_rel)
        if high <= limit:
            return candidates
        if queue_only:
            return [v for v in candidates if v.awaiting_first_byte / v.weight <= limit]
        return [v for v in candidates if v.in_flight_requests / v.weight <= limit]


@register_plugin("filter", TYPE, ImbalanceGuardParams, "hard cap on queue imbalance")
def _build(params: ImbalanceGuardParams, ctx: BuildContext) -> ImbalanceGuardFilter:
    return ImbalanceGuardFilter(params)
