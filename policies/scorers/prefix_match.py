"""``prefix_match`` scorer: a longer cached prefix on the backend scores higher.

Formula (llm-d ``prefix-cache-scorer``):
``score = w·min(1, matched/saturation_tokens)² + (1 - w)·matched/prompt_tokens``
with ``matched`` the prompt tokens the prefix index believes are cached on the
backend (``RoutingRequest.prefix_matched_tokens``). The squared term values
absolute savings (attention cost grows with length); the ratio term the share
of the prompt saved. Parameters: ``absolute_weight`` w (default 0, as llm-d),
``saturation_tokens`` (default 8192). Scores every candidate 0 (all equal)
when no backend has a match or the prompt is empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core.types import BackendId, BackendView
from policies.context import RouteContext
from policies.params import PrefixMatchParams
from policies.registry import BuildContext, register_plugin

TYPE = "prefix_match"


class PrefixMatchScorer:
    consumes = ("prefix_matched_tokens", "prompt_tokens")

    def __init__(self, params: PrefixMatchParams) -> None:
        self.name = TYPE
        self._w = params.absolute_weight
        self._saturation = float(params.saturation_tokens)

    def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]:
        prompt = ctx.features.prompt_tokens
        if prompt <= 0:
            return dict.fromkeys((v.backend_id for v in candidates), 0.0)
        out: dict[BackendId, float] = {}
        for view in candidates:
            matched = min(ctx.matched_tokens(view.backend_id), prompt)
            absolute = min(1.0, matched / self._saturation)
            out[view.backend_id] = self._w * absolute * absolute + (1.0 - self._w) * matched / prompt
        return out


@register_plugin("scorer", TYPE, PrefixMatchParams, "longest prefix already cached (prefix index)")
def _build(params: PrefixMatchParams, ctx: BuildContext) -> PrefixMatchScorer:
    return PrefixMatchScorer(params)
