"""``predicted_cost`` scorer: lower predicted latency on this backend scores higher.

Formula, per backend ``b`` (costs from the predictor, else the fallback
estimator; see ``policies.context``):

- objective ``ttft``: ``c(b) = TTFT̂(b)`` = predicted queue wait + prefill of
  the uncached prompt tokens;
- objective ``e2e``: ``c(b) = TTFT̂(b) + (L̂ - 1)·TPOT̂(b)`` with the
  tail-aware output length ``L̂ = p50 + tail_weight·(p90 - p50)`` (so decode
  time is charged at that backend's own predicted speed);
- objective ``slo``: the route's SLO decides. TPOT is a constraint, not a cost:
  the ``slo_headroom`` filter keeps the backends predicted to meet it, and
  among them this scores the deadlines. With a TTFT bound (or only a TPOT
  bound) ``c(b) = TTFT̂(b)``, as ``ttft``; with an E2E bound ``c(b)`` is the
  larger fraction of a deadline the request is predicted to use,
  ``max(TTFT̂/S_ttft, E2Ê/S_e2e)``; without any SLO, ``e2e``. Why: goodput
  counts a request that meets every bound, however fast. ``e2e`` saves decode
  time the SLO does not ask for by queueing requests on the fast decoders for
  most of the TTFT budget, and a TTFT model that under-predicts deep queues
  turns that into misses (docs/policies.md, "Objective"). Scoring TPOT as a
  fraction too (``max(.., TPOT̂/S_tpot)``) was measured and rejected: a TPOT
  well inside its bound then outweighs the TTFT and the choice drifts back to
  ``e2e``'s.

Score ``min_c / c(b)`` (in (0, 1]; the cheapest scores 1 and a backend twice as
slow scores 0.5), which keeps relative distances, unlike min-max. Parameters:
``objective`` (default ``e2e``), ``tail_weight`` (default 1.0 = p90; 0 =
median). Scores every candidate 1 when all predicted costs are equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core.types import BackendId, BackendView
from policies.context import RouteContext
from policies.params import PredictedCostParams
from policies.registry import BuildContext, register_plugin

TYPE = "predicted_cost"
_MIN_COST_MS = 1e-3


class PredictedCostScorer:
    consumes = ("predictions", "prefix_matched_tokens", "in_flight_*", "engine_running", "ewma_tpot_ms")

    def __init__(self, params: PredictedCostParams) -> None:
        self.name = TYPE
        self._objective = params.objective
        self._tail_weight = params.tail_weight

    def costs_ms(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> dict[BackendId, float]:
        """Each candidate's cost in ms, or (``slo`` with an E2E bound) a fraction of a deadline."""
        values = self.cost_values(ctx, candidates)
        return {candidates[i].backend_id: values[i] for i in range(len(values))}

    def cost_values(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> list[float]:
        """``costs_ms`` as a list in candidate order (the hot path: no dict keyed by backend id)."""
        objective = self._objective
        if objective == "slo":
            slo = ctx.request.slo
            if slo.e2e_ms is not None:
                return self._deadline_fractions(ctx, candidates, slo.ttft_ms, slo.e2e_ms)
            objective = "ttft" if slo.ttft_ms is not None or slo.tpot_ms is not None else "e2e"
        out: list[float] = []
        decode_steps = ctx.output_tokens(self._tail_weight) - 1.0 if objective == "e2e" else 0.0
        pairs = ctx.ttft_tpot_all(candidates)  # one per candidate, in order
        for i in range(len(pairs)):  # not zip(..., strict=True): a generic keyword call in compiled code
            ttft_ms, tpot_ms = pairs[i]
            cost_ms = ttft_ms + decode_steps * tpot_ms
            out.append(cost_ms if cost_ms > _MIN_COST_MS else _MIN_COST_MS)
        return out

    def _deadline_fractions(
        self,
        ctx: RouteContext,
        candidates: Sequence[BackendView],
        ttft_slo_ms: float | None,
        e2e_slo_ms: float,
    ) -> list[float]:
        """``max(TTFT̂/S_ttft, E2Ê/S_e2e)`` over the route's deadlines, per candidate, in order."""
        inv_ttft = 1.0 / ttft_slo_ms if ttft_slo_ms is not None else 0.0
        inv_e2e = 1.0 / e2e_slo_ms
        decode_steps = ctx.output_tokens(self._tail_weight) - 1.0
        floor = _MIN_COST_MS * max(inv_ttft, inv_e2e)
        out: list[float] = []
        pairs = ctx.ttft_tpot_all(candidates)  # one per candidate, in order
        for i in range(len(pairs)):  # not zip(..., strict=True): a generic keyword call in compiled code
            ttft_ms, tpot_ms = pairs[i]
            frac = max(ttft_ms * inv_ttft, (ttft_ms + decode_steps * tpot_ms) * inv_e2e)
            out.append(frac if frac > floor else floor)
        return out

    def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]:
        values = self.score_values(ctx, candidates)
        return {candidates[i].backend_id: values[i] for i in range(len(values))}

    def score_values(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> list[float]:
        """``score`` in candidate order (``Scorer.score_values``): ``min_c / c(b)`` per candidate."""
        costs = self.cost_values(ctx, candidates)
        best = 0.0
        first = True
        for cost in costs:  # min() as a loop (a generic call from compiled code): same value
            if first or cost < best:
                best, first = cost, False
        for i in range(len(costs)):  # in place: the list is this call's own
            costs[i] = best / costs[i]
        return costs


@register_plugin("scorer", TYPE, PredictedCostParams, "lowest predicted TTFT, E2E or SLO fraction")
def _build(params: PredictedCostParams, ctx: BuildContext) -> PredictedCostScorer:
    return PredictedCostScorer(params)
