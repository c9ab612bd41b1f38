"""``dynamo_cost`` scorer: NVIDIA Dynamo KV router's cost (docs "Router Design"; scheduler.rs).

Formula, per backend, in KV blocks of ``block_size_tokens``:

- ``prefill_blocks = max(0, prompt_tokens - matched_tokens) / block_size``
  (Dynamo: (ISL - overlap_blocks·block_size) / block_size);
- ``decode_blocks = in_flight_prompt_tokens / block_size + ceil(prompt_tokens / block_size)``
  (the backend's active blocks plus the request's own, "potential active blocks");
- ``logit = overlap_score_weight · prefill_blocks + decode_blocks``; lower wins.

Score ``(max_logit - logit) / (max_logit - min_logit)``, so with the
``max_score`` picker this is Dynamo's temperature-0 argmin, and with the
``softmax`` picker at temperature T it is Dynamo's softmax sampling over
normalised logits. Fidelity: Dynamo counts active blocks including generated
tokens and de-duplicates shared prefixes; Sluice counts the prompt tokens in
flight (its own accounting), so shared prefixes in flight are counted once per
request. Parameters: ``overlap_score_weight`` (default 1; 0 = pure load
balancing), ``block_size_tokens`` (default 16, vLLM's block). Scores every
candidate 1 when all logits are equal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core.types import BackendId, BackendView
from policies.context import RouteContext
from policies.params import DynamoCostParams
from policies.registry import BuildContext, register_plugin
from policies.scorers._normalise import lower_is_better

TYPE = "dynamo_cost"


class DynamoCostScorer:
    consumes = ("prefix_matched_tokens", "prompt_tokens", "in_flight_prompt_tokens")

    def __init__(self, params: DynamoCostParams) -> None:
        self.name = TYPE
        self._weight = params.overlap_score_weight
        self._block = float(params.block_size_tokens)

    def logits(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> dict[BackendId, float]:
        prompt = ctx.features.prompt_tokens
        own_blocks = -(-prompt // int(self._block))
        out: dict[BackendId, float] = {}
        for view in candidates:
            prefill_blocks = max(0, prompt - ctx.matched_tokens(view.backend_id)) / self._block
            decode_blocks = view.in_flight_prompt_tokens / self._block + own_blocks
            out[view.backend_id] = self._weight * prefill_blocks + decode_blocks
        return out

    def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]:
        return lower_is_better(self.logits(ctx, candidates))


@register_plugin("scorer", TYPE, DynamoCostParams, "Dynamo KV router cost: w·prefill_blocks + decode_blocks")
def _build(params: DynamoCostParams, ctx: BuildContext) -> DynamoCostScorer:
    return DynamoCostScorer(params)
