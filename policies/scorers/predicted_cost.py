"""``predicted_cost`` scorer: lower predicted latency on this backend scores higher.

Formula, per backend ``b`` (costs from the predictor, else the fallback
estimator; see ``policies.context``):

- objective ``ttft``: ``c(b) = TTFT̂(b)`` = predicted queue wait + prefill of
  the uncached prompt tokens;
- objective ``e2e``: ``c(b) = TTFT̂(b) + (L̂ - 1)·TPOT̂(b)`` with the
  tail-aware output length ``L̂ = p50 + tail_weight·(p90 - p50)`` (so decode
  time is charged at that backend's own predicted speed).

Score ``min_c / c(b)`` (in (0, 1]; the cheapest scores 1 and a backend twice as
slow scores 0.5), which keeps relative distances, unlike min-max. Parameters:
``objective`` (default ``e2e``), ``tail_weight`` (default 1.0 = p90; 0 =
median). Scores every candidate 1 when all predicted costs are equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field

from core.types import BackendId, BackendView
from policies.context import RouteContext
from policies.registry import BuildContext, PolicyParams, register_plugin

TYPE = "predicted_cost"
_MIN_COST_MS = 1e-3


class PredictedCostParams(PolicyParams):
    objective: Literal["ttft", "e2e"] = "e2e"
    tail_weight: float = Field(1.0, ge=0.0, le=2.0)


class PredictedCostScorer:
    consumes = ("predictions", "prefix_matched_tokens", "in_flight_*", "engine_running", "ewma_tpot_ms")

    def __init__(self, params: PredictedCostParams) -> None:
        self.name = TYPE
        self._objective = params.objective
        self._tail_weight = params.tail_weight

    def costs_ms(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> dict[BackendId, float]:
        out: dict[BackendId, float] = {}
        decode_steps = ctx.output_tokens(self._tail_weight) - 1.0 if self._objective == "e2e" else 0.0
        for view in candidates:
            ttft_ms, tpot_ms = ctx.ttft_tpot(view)
            cost_ms = ttft_ms + decode_steps * tpot_ms
            out[view.backend_id] = cost_ms if cost_ms > _MIN_COST_MS else _MIN_COST_MS
        return out

    def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]:
        costs = self.costs_ms(ctx, candidates)
        best = min(costs.values())
        return {backend_id: best / cost for backend_id, cost in costs.items()}


@register_plugin("scorer", TYPE, PredictedCostParams, "lowest predicted TTFT or E2E")
def _build(params: PredictedCostParams, ctx: BuildContext) -> PredictedCostScorer:
    return PredictedCostScorer(params)
