"""``least_tokens`` scorer: less outstanding token work scores higher.

Formula: ``load = in_flight_prompt_tokens + decode_weight·in_flight_predicted_decode_tokens``
(prompt tokens of every request in flight plus the decode tokens predicted for
them, as Sluice accounts them), then ``score = (max - load) / (max - min)``.
Parameter ``decode_weight`` (default 1.0) sets what one predicted decode token
costs relative to one prompt token. Scores every candidate 1 when all carry the
same load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core.types import BackendId, BackendView
from policies.context import RouteContext
from policies.params import LeastTokensParams
from policies.registry import BuildContext, register_plugin
from policies.scorers._normalise import lower_is_better

TYPE = "least_tokens"


class LeastTokensScorer:
    consumes = ("in_flight_prompt_tokens", "in_flight_predicted_decode_tokens")

    def __init__(self, params: LeastTokensParams) -> None:
        self.name = TYPE
        self._decode_weight = params.decode_weight

    def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]:
        w = self._decode_weight
        return lower_is_better(
            {
                v.backend_id: v.in_flight_prompt_tokens + w * v.in_flight_predicted_decode_tokens
                for v in candidates
            }
        )


@register_plugin("scorer", TYPE, LeastTokensParams, "least outstanding prompt + predicted decode tokens")
def _build(params: LeastTokensParams, ctx: BuildContext) -> LeastTokensScorer:
    return LeastTokensScorer(params)
