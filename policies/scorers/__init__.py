"""Pipeline scorers; importing this package registers each by its config ``type``."""

from policies.scorers import (
    consistent_hash,
    dynamo_cost,
    kv_cache,
    least_requests,
    least_tokens,
    predicted_cost,
    prefix_match,
    prodstack_loadaware,
    sglang_cache_aware,
)

__all__ = [
    "consistent_hash",
    "dynamo_cost",
    "kv_cache",
    "least_requests",
    "least_tokens",
    "predicted_cost",
    "prefix_match",
    "prodstack_loadaware",
    "sglang_cache_aware",
]
