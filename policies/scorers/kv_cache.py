"""``kv_cache`` scorer: more free KV cache scores higher (llm-d ``kv-cache-utilization-scorer``).

Formula: ``score = 1 - kv_usage_frac`` from the backend's engine metrics.
A backend whose metrics are missing or stale scores ``unknown_score``
(default 0.5, neutral) rather than 0 or 1, so a scrape outage neither
drains nor floods it (llm-d fails closed here; Sluice does not). Scores every
candidate equally when none reports fresh metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core.types import BackendId, BackendView
from policies.context import RouteContext
from policies.params import KVCacheParams
from policies.registry import BuildContext, register_plugin

TYPE = "kv_cache"


class KVCacheScorer:
    consumes = ("kv_usage_frac", "metrics_stale")

    def __init__(self, params: KVCacheParams) -> None:
        self.name = TYPE
        self._unknown = params.unknown_score

    def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]:
        return {
            v.backend_id: self._unknown
            if v.metrics_stale or v.kv_usage_frac is None
            else 1.0 - v.kv_usage_frac
            for v in candidates
        }


@register_plugin("scorer", TYPE, KVCacheParams, "most free KV cache (engine metrics)")
def _build(params: KVCacheParams, ctx: BuildContext) -> KVCacheScorer:
    return KVCacheScorer(params)
