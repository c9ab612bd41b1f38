"""``sglang_cache_aware`` scorer: SGLang router's cache-aware rule (sgl-router ``cache_aware.rs``).

Rule, over the candidates' in-flight request counts ``load`` (the router's own
count, as SGLang's ``worker.load()``):

1. *Imbalanced* iff ``max - min > balance_abs_threshold`` AND
   ``max > balance_rel_threshold · min``: shortest queue wins.
   Score ``(max - load) / (max - min)``.
2. Else, with ``match_rate(b) = matched_chars(b) / request_chars``, if the best
   backend's ``match_rate > cache_threshold``: highest match wins.
   Score ``match_rate(b)``.
3. Else (a miss): the backend with the *smallest tree* wins ("most cache
   capacity"). Score ``(max_size - size) / (max_size - min_size)``, with
   ``size`` = tokens the prefix index holds for the backend
   (``RoutingRequest.prefix_indexed_tokens``).

In every case the request's prefix is then recorded for the chosen backend by
the DecisionEngine's post-route hook (SGLang inserts into the chosen tree even
when imbalanced).

Fidelity: SGLang keeps a character radix tree; Sluice derives the match from
64-character chunk hashes, so ``matched_chars = 64 · matched_chunks`` and a
match ends at the last whole shared chunk (under-counting by < 64 characters);
tree size is counted in 16-token chunks rather than characters. SGLang breaks
ties by map order; here ties (equal scores) are broken at random by the
pipeline. Scores beyond the winner order the retry fallbacks (SGLang has none).

Parameters and defaults (SGLang/SMG CLI): ``cache_threshold`` 0.3,
``balance_abs_threshold`` 64, ``balance_rel_threshold`` 1.5. Scores every
candidate 1 when all loads, matches or tree sizes (as the case applies) are equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core.tokens import CHARS_PER_TOKEN
from core.types import BackendId, BackendView
from policies.context import RouteContext
from policies.params import SGLangCacheAwareParams
from policies.registry import BuildContext, register_plugin
from policies.scorers._normalise import lower_is_better

TYPE = "sglang_cache_aware"


def is_imbalanced(loads: Sequence[int], abs_threshold: float, rel_threshold: float) -> bool:
    """SGLang's imbalance test: both the absolute and the relative gap must be exceeded."""
    if not loads:
        return False
    high, low = max(loads), min(loads)
    return high - low > abs_threshold and high > rel_threshold * low


class SGLangCacheAwareScorer:
    consumes = ("in_flight_requests", "prefix_matched_tokens", "prefix_indexed_tokens", "prompt_chars")

    def __init__(self, params: SGLangCacheAwareParams) -> None:
        self.name = TYPE
        self._threshold = params.cache_threshold
        self._abs = params.balance_abs_threshold
        self._rel = params.balance_rel_threshold

    def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]:
        loads = [v.in_flight_requests for v in candidates]
        if is_imbalanced(loads, self._abs, self._rel):
            return lower_is_better({v.backend_id: float(v.in_flight_requests) for v in candidates})
        request_chars = ctx.features.prompt_chars
        rates: dict[BackendId, float] = {}
        for view in candidates:
            matched_chars = ctx.matched_tokens(view.backend_id) * CHARS_PER_TOKEN
            rates[view.backend_id] = min(1.0, matched_chars / request_chars) if request_chars > 0 else 0.0
        if max(rates.values()) > self._threshold:
            return rates
        sizes = ctx.request.prefix_indexed_tokens
        return lower_is_better({v.backend_id: float(sizes.get(v.backend_id, 0)) for v in candidates})


@register_plugin(
    "scorer", TYPE, SGLangCacheAwareParams, "SGLang cache_aware: imbalance, match, smallest tree"
)
def _build(params: SGLangCacheAwareParams, ctx: BuildContext) -> SGLangCacheAwareScorer:
    return SGLangCacheAwareScorer(params)
