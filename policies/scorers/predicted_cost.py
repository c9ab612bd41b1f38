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
        """``costs_ms`` as a list in candidate order (no dict keyed by backend id)."""
        fractions, decode_steps, inv_ttft, inv_e2e, floor = self._terms(ctx)
        out: list[float] = []
        pairs = ctx.ttft_tpot_all(candidates)  # one per candidate, in order
        for i in range(len(pairs)):  # not zip(..., strict=True): a generic keyword call in compiled code
            ttft_ms, tpot_ms = pairs[i]
            out.append(_cost(fractions, ttft_ms, tpot_ms, decode_steps, inv_ttft, inv_e2e, floor))
        return out

    def _terms(self, ctx: RouteContext) -> tuple[bool, float, float, float, float]:
        """``(fractions, decode_steps, inv_ttft, inv_e2e, floor)``: ``_cost``'s terms for this request.

        ``fractions``: the deadline fraction ``max(TTFT̂/S_ttft, E2Ê/S_e2e)`` is scored (``slo`` with an
        E2E bound), else a cost in ms (objectives ``ttft`` and ``e2e``)."""
        objective = self._objective
        if objective == "slo":
            slo = ctx.request.slo
            if slo.e2e_ms is not None:
                ttft_slo_ms = slo.ttft_ms
                inv_ttft = 1.0 / ttft_slo_ms if ttft_slo_ms is not None else 0.0
                inv_e2e = 1.0 / slo.e2e_ms
                decode_steps = ctx.output_tokens(self._tail_weight) - 1.0
                return True, decode_steps, inv_ttft, inv_e2e, _MIN_COST_MS * max(inv_ttft, inv_e2e)
            objective = "ttft" if slo.ttft_ms is not None or slo.tpot_ms is not None else "e2e"
        decode_steps = ctx.output_tokens(self._tail_weight) - 1.0 if objective == "e2e" else 0.0
        return False, decode_steps, 0.0, 0.0, _MIN_COST_MS

    def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]:
        values = self.score_values(ctx, candidates)
        return {candidates[i].backend_id: values[i] for i in range(len(values))}

    def score_values(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> list[float]:
        """``score`` in candidate order (``Scorer.score_values``): ``min_c / c(b)`` per candidate.

        One pass makes the costs (the one formula, ``_cost``) and finds the cheapest, a second divides
        in place (the list is this call's own)."""
        fractions, decode_steps, inv_ttft, inv_e2e, floor = self._terms(ctx)
        pairs = ctx.ttft_tpot_all(candidates)  # one per candidate, in order
        n = len(pairs)
        out: list[float] = []
        best = 0.0
        for i in range(n):  # min() folded in (a generic call from compiled code): the same value
            ttft_ms, tpot_ms = pairs[i]
            cost = _cost(fractions, ttft_ms, tpot_ms, decode_steps, inv_ttft, inv_e2e, floor)
            if i == 0 or cost < best:
                best = cost
            out.append(cost)
        for i in range(n):
            out[i] = best / out[i]
        return out


def _cost(
    fractions: bool,
    ttft_ms: float,
    tpot_ms: float,
    decode_steps: float,
    inv_ttft: float,
    inv_e2e: float,
    floor: float,
) -> float:
    """One candidate's cost: ``TTFT̂ + decode_steps·TPOT̂`` in ms, floored at ``_MIN_COST_MS``; with
    ``fractions`` the larger fraction of the deadlines, floored at ``floor`` (``_terms``)."""
    if not fractions:
        cost_ms = ttft_ms + decode_steps * tpot_ms
        return cost_ms if cost_ms > _MIN_COST_MS else _MIN_COST_MS
    by_ttft, by_e2e = ttft_ms * inv_ttft, (ttft_ms + decode_steps * tpot_ms) * inv_e2e
    frac = by_e2e if by_e2e > by_ttft else by_ttft  # max(by_ttft, by_e2e), the same value
    return frac if frac > floor else floor


@register_plugin("scorer", TYPE, PredictedCostParams, "lowest predicted TTFT, E2E or SLO fraction")
def _build(params: PredictedCostParams, ctx: BuildContext) -> PredictedCostScorer:
    return PredictedCostScorer(params)
