"""``least_requests`` scorer: fewer requests in flight scores higher (LOR / JSQ on in-flight count).

Formula: ``score = (max_q - q) / (max_q - min_q)`` over the candidates, with
``q`` the backend's in-flight request count as Sluice accounts it (always
current, unlike engine-reported queues). With ``per_weight: true`` the load is
``q / weight`` so a backend configured with weight 3 may carry three times the
requests of a weight-1 one. No other parameters. Scores every candidate 1 when
all carry the same load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core.types import BackendId, BackendView
from policies.context import RouteContext
from policies.params import LeastRequestsParams
from policies.registry import BuildContext, register_plugin
from policies.scorers._normalise import lower_is_better

TYPE = "least_requests"


class LeastRequestsScorer:
    consumes = ("in_flight_requests", "weight")

    def __init__(self, params: LeastRequestsParams) -> None:
        self.name = TYPE
        self._per_weight = params.per_weight

    def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]:
        if self._per_weight:
            return lower_is_better({v.backend_id: v.in_flight_requests / v.weight for v in candidates})
        return lower_is_better({v.backend_id: float(v.in_flight_requests) for v in candidates})


@register_plugin("scorer", TYPE, LeastRequestsParams, "fewest in-flight requests")
def _build(params: LeastRequestsParams, ctx: BuildContext) -> LeastRequestsScorer:
    return LeastRequestsScorer(params)
