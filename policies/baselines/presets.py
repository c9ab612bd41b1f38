"""The peer baselines as ready-made pipelines, registered by their config names.

Each baseline is one pipeline of existing plugins, so every policy explains
its decisions the same way (per-scorer scores, removed map). The rule of each
lives in the docstring of the plugin it uses; docs/policies.md has the table.

| name                  | scorers (weight)                 | picker     |
|-----------------------|----------------------------------|------------|
| round_robin           | -                                | round_robin|
| random                | -                                | random     |
| least_outstanding     | least_requests (1)               | max_score  |
| least_tokens          | least_tokens (1)                 | max_score  |
| power_of_two          | least_requests (1)               | p2c        |
| consistent_hash       | consistent_hash (1)              | max_score  |
| sglang_cache_aware    | sglang_cache_aware (1)           | max_score  |
| dynamo_cost           | dynamo_cost (1)                  | max_score, or softmax when temperature > 0 |
| prodstack_loadaware   | prodstack_loadaware (1)          | max_score  |
"""

from __future__ import annotations

from pydantic import Field

from policies.base import Picker
from policies.params import (
    ConsistentHashParams,
    DynamoCostParams,
    LeastRequestsParams,
    LeastTokensParams,
    P2CParams,
    ProdstackLoadAwareParams,
    SGLangCacheAwareParams,
    SoftmaxParams,
)
from policies.pickers.max_score import MaxScorePicker
from policies.pickers.p2c import P2CPicker
from policies.pickers.random_order import RandomPicker
from policies.pickers.round_robin import RoundRobinPicker
from policies.pickers.softmax import SoftmaxPicker
from policies.pipeline import Pipeline
from policies.registry import BuildContext, PolicyParams, register
from policies.scorers.consistent_hash import ConsistentHashScorer
from policies.scorers.dynamo_cost import DynamoCostScorer
from policies.scorers.least_requests import LeastRequestsScorer
from policies.scorers.least_tokens import LeastTokensScorer
from policies.scorers.prodstack_loadaware import ProdstackLoadAwareScorer
from policies.scorers.sglang_cache_aware import SGLangCacheAwareScorer


class NoParams(PolicyParams):
    pass


@register("round_robin", NoParams, "next backend in turn")
def round_robin(params: NoParams, ctx: BuildContext | None = None) -> Pipeline:
    return Pipeline("round_robin", (), (), RoundRobinPicker())


@register("random", NoParams, "uniformly random backend")
def random_policy(params: NoParams, ctx: BuildContext | None = None) -> Pipeline:
    return Pipeline("random", (), (), RandomPicker())


@register("least_outstanding", NoParams, "fewest in-flight requests (LOR/JSQ)")
def least_outstanding(params: NoParams, ctx: BuildContext | None = None) -> Pipeline:
    return Pipeline(
        "least_outstanding", (), ((LeastRequestsScorer(LeastRequestsParams()), 1.0),), MaxScorePicker()
    )


class LeastTokensPolicyParams(PolicyParams):
    decode_weight: float = Field(1.0, ge=0.0)


@register("least_tokens", LeastTokensPolicyParams, "least outstanding prompt + predicted decode tokens")
def least_tokens(params: LeastTokensPolicyParams, ctx: BuildContext | None = None) -> Pipeline:
    scorer = LeastTokensScorer(LeastTokensParams(decode_weight=params.decode_weight))
    return Pipeline("least_tokens", (), ((scorer, 1.0),), MaxScorePicker())


@register("power_of_two", NoParams, "fewer in-flight of two random backends")
def power_of_two(params: NoParams, ctx: BuildContext | None = None) -> Pipeline:
    return Pipeline(
        "power_of_two", (), ((LeastRequestsScorer(LeastRequestsParams()), 1.0),), P2CPicker(P2CParams())
    )


@register("consistent_hash", ConsistentHashParams, "session key on a hash ring, bounded load")
def consistent_hash(params: ConsistentHashParams, ctx: BuildContext | None = None) -> Pipeline:
    return Pipeline("consistent_hash", (), ((ConsistentHashScorer(params), 1.0),), MaxScorePicker())


@register("sglang_cache_aware", SGLangCacheAwareParams, "SGLang router cache_aware (0.3 / 64 / 1.5)")
def sglang_cache_aware(params: SGLangCacheAwareParams, ctx: BuildContext | None = None) -> Pipeline:
    return Pipeline("sglang_cache_aware", (), ((SGLangCacheAwareScorer(params), 1.0),), MaxScorePicker())


class DynamoPolicyParams(DynamoCostParams):
    temperature: float = Field(0.0, ge=0.0)


@register("dynamo_cost", DynamoPolicyParams, "Dynamo KV router: argmin w·prefill_blocks + decode_blocks")
def dynamo_cost(params: DynamoPolicyParams, ctx: BuildContext | None = None) -> Pipeline:
    scorer = DynamoCostScorer(
        DynamoCostParams(
            overlap_score_weight=params.overlap_score_weight, block_size_tokens=params.block_size_tokens
        )
    )
    picker: Picker = (
        SoftmaxPicker(SoftmaxParams(temperature=params.temperature))
        if params.temperature > 0
        else MaxScorePicker()
    )
    return Pipeline("dynamo_cost", (), ((scorer, 1.0),), picker)


@register("prodstack_loadaware", ProdstackLoadAwareParams, "production-stack: hit ratio - beta·relative load")
def prodstack_loadaware(params: ProdstackLoadAwareParams, ctx: BuildContext | None = None) -> Pipeline:
    return Pipeline("prodstack_loadaware", (), ((ProdstackLoadAwareScorer(params), 1.0),), MaxScorePicker())
