"""``prodstack_loadaware`` scorer: vLLM production-stack's load-aware score (PR #1035).

Formula: ``raw(b) = matched(b)/prompt_tokens - beta · (load(b) - mean_load) / max(1, mean_load)``
with ``load`` = in-flight requests and ``matched`` the cached prefix tokens
(production-stack asks its LMCache controller; Sluice uses its prefix index).
The highest raw score wins (random among equals, as production-stack). Raw
scores are unbounded, so they are min-max normalised to [0, 1], which keeps the
order. Parameter ``beta`` (default 1.0). Scores every candidate 1 when all raw
scores are equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core.types import BackendId, BackendView
from policies.context import RouteContext
from policies.params import ProdstackLoadAwareParams
from policies.registry import BuildContext, register_plugin
from policies.scorers._normalise import higher_is_better

TYPE = "prodstack_loadaware"


class ProdstackLoadAwareScorer:
    consumes = ("prefix_matched_tokens", "prompt_tokens", "in_flight_requests")

    def __init__(self, params: ProdstackLoadAwareParams) -> None:
        self.name = TYPE
        self._beta = params.beta

    def raw(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> dict[BackendId, float]:
        prompt = ctx.features.prompt_tokens
        mean_load = sum(v.in_flight_requests for v in candidates) / len(candidates)
        scale = max(1.0, mean_load)
        out: dict[BackendId, float] = {}
        for view in candidates:
            hit = min(ctx.matched_tokens(view.backend_id), prompt) / prompt if prompt > 0 else 0.0
            out[view.backend_id] = hit - self._beta * (view.in_flight_requests - mean_load) / scale
        return out

    def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]:
        return higher_is_better(self.raw(ctx, candidates))


@register_plugin("scorer", TYPE, ProdstackLoadAwareParams, "production-stack: hit ratio - beta·relative load")
def _build(params: ProdstackLoadAwareParams, ctx: BuildContext) -> ProdstackLoadAwareScorer:
    return ProdstackLoadAwareScorer(params)
