"""Every routing plugin's parameter schema (pydantic), kept apart from the code it configures.

Why a module of their own: the plugins (``policies/pipeline.py``, ``filters``, ``scorers``,
``pickers``, ``sampling``) run on every request and are compiled with mypyc (docs/compiled.md), and
mypyc cannot compile pydantic models: a field declared ``x: int = Field(1, ge=0)`` fails at import,
and written as ``Annotated[int, Field(ge=0)] = 1`` the compiled class loses the ``Annotated``
metadata (``default_factory`` ignored, bounds dropped silently). This module is never compiled, so
the schemas validate exactly as before; each plugin module imports its own and registers it with
its factory (``policies.registry``), so names, validation and file:line errors are unchanged. The
meaning of each parameter is documented with the plugin that reads it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from policies.registry import PolicyParams


# policies/filters/imbalance_guard.py
class ImbalanceGuardParams(PolicyParams):
    signal: Literal["awaiting_first_byte", "in_flight_requests"] = "awaiting_first_byte"
    abs_threshold: float = Field(32.0, ge=0.0)
    rel_threshold: float = Field(3.0, ge=1.0)


# policies/filters/max_concurrency.py
class MaxConcurrencyParams(PolicyParams):
    fail_open: bool = False


# policies/filters/slo_headroom.py
class SLOHeadroomParams(PolicyParams):
    margin_frac: float = Field(0.0, ge=0.0, lt=1.0)
    check_tpot: bool = True
    when_infeasible: Literal["keep", "sacrifice"] = "keep"


# policies/filters/subset.py
class SubsetParams(PolicyParams):
    size: int = Field(16, ge=1)
    keep_prefix_matches: int = Field(4, ge=0)


# policies/pickers/max_score.py
class MaxScoreParams(PolicyParams):
    pass


# policies/pickers/p2c.py
class P2CParams(PolicyParams):
    top_k: int | None = Field(None, ge=1)
    near_best_frac: float = Field(0.0, ge=0.0, le=1.0)
    prefer_prefix: bool = False


# policies/pickers/random_order.py
class RandomParams(PolicyParams):
    pass


# policies/pickers/round_robin.py
class RoundRobinPickerParams(PolicyParams):
    pass


# policies/pickers/softmax.py
class SoftmaxParams(PolicyParams):
    temperature: float = Field(0.1, ge=0.0)


# policies/pipeline.py
class PluginRef(PolicyParams):
    type: str
    name: str | None = Field(None, min_length=1, description="instance name; defaults to type")
    params: dict[str, Any] = Field(default_factory=dict)


class ScorerRef(PluginRef):
    weight: float = Field(1.0, ge=0.0)


class PipelineParams(PolicyParams):
    filters: tuple[PluginRef, ...] = ()
    scorers: tuple[ScorerRef, ...] = ()
    picker: PluginRef = Field(default_factory=lambda: PluginRef(type="max_score"))


# policies/scorers/consistent_hash.py
class ConsistentHashParams(PolicyParams):
    vnodes: int = Field(100, ge=1, le=1_000)
    load_factor: float = Field(1.25, ge=1.0)


# policies/scorers/dynamo_cost.py
class DynamoCostParams(PolicyParams):
    overlap_score_weight: float = Field(1.0, ge=0.0)
    block_size_tokens: int = Field(16, ge=1)


# policies/scorers/kv_cache.py
class KVCacheParams(PolicyParams):
    unknown_score: float = Field(0.5, ge=0.0, le=1.0)


# policies/scorers/least_requests.py
class LeastRequestsParams(PolicyParams):
    per_weight: bool = False


# policies/scorers/least_tokens.py
class LeastTokensParams(PolicyParams):
    decode_weight: float = Field(1.0, ge=0.0)


# policies/scorers/predicted_cost.py
class PredictedCostParams(PolicyParams):
    objective: Literal["ttft", "e2e", "slo"] = "e2e"
    tail_weight: float = Field(1.0, ge=0.0, le=2.0)


# policies/scorers/prefix_match.py
class PrefixMatchParams(PolicyParams):
    absolute_weight: float = Field(0.0, ge=0.0, le=1.0)
    saturation_tokens: int = Field(8_192, ge=1)


# policies/scorers/prodstack_loadaware.py
class ProdstackLoadAwareParams(PolicyParams):
    beta: float = Field(1.0, ge=0.0)


# policies/scorers/sglang_cache_aware.py
class SGLangCacheAwareParams(PolicyParams):
    cache_threshold: float = Field(0.3, ge=0.0, le=1.0)
    balance_abs_threshold: int = Field(64, ge=0)
    balance_rel_threshold: float = Field(1.5, ge=1.0)
