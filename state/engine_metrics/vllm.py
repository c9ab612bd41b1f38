"""vLLM adapter: ``vllm:*`` metrics (V1 engine names first, then the older V0 / pre-0.10 aliases).

=========================  ==========================================================================
EngineMetrics field        vLLM metric (Prometheus type)
=========================  ==========================================================================
``running``                ``vllm:num_requests_running`` (gauge), summed over ``engine``/``model_name``
``waiting``                ``vllm:num_requests_waiting`` (gauge), plus V0's ``vllm:num_requests_swapped``
                           when exported (swapped requests wait to resume), summed
``kv_usage_frac``          ``vllm:kv_cache_usage_perc`` (gauge, 0..1; despite the name not a percent),
                           else the deprecated ``vllm:gpu_cache_usage_perc``; averaged over DP engines,
                           weighted by each engine's KV capacity when known
``kv_capacity_tokens``     ``vllm:cache_config_info`` labels ``num_gpu_blocks`` x ``block_size``, summed
                           over engines (the info gauge is always 1; the numbers are in its labels)
``prefix_cache_*_total``   ``vllm:prefix_cache_queries_total`` / ``vllm:prefix_cache_hits_total``
                           (counters, in tokens), else the deprecated ``vllm:gpu_prefix_cache_queries_total``
                           / ``vllm:gpu_prefix_cache_hits_total``
``prefix_hit_rate_frac``   V0's ``vllm:gpu_prefix_cache_hit_rate`` gauge, only if no counters exist
``preemptions_total``      ``vllm:num_preemptions_total`` (counter)
=========================  ==========================================================================
"""

from __future__ import annotations

from core.types import EngineMetrics
from state.engine_metrics.adapter import (
    EngineAdapter,
    count,
    counter,
    first_present,
    weighted_fraction,
)
from state.engine_metrics.exposition import Exposition

ENGINE = "vllm"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
SWAPPED = "vllm:num_requests_swapped"
KV_USAGE = "vllm:kv_cache_usage_perc"
KV_USAGE_OLD = "vllm:gpu_cache_usage_perc"
CACHE_CONFIG = "vllm:cache_config_info"
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_HITS = "vllm:prefix_cache_hits_total"
PREFIX_QUERIES_OLD = "vllm:gpu_prefix_cache_queries_total"
PREFIX_HITS_OLD = "vllm:gpu_prefix_cache_hits_total"
PREFIX_HIT_RATE_OLD = "vllm:gpu_prefix_cache_hit_rate"
PREEMPTIONS = "vllm:num_preemptions_total"


def kv_capacity_by_engine(exposition: Exposition) -> dict[str, float]:
    """Tokens of KV cache per DP engine (``engine`` label, "" when absent), from the cache-config info."""
    capacity: dict[str, float] = {}
    for sample in exposition.series(CACHE_CONFIG):
        try:
            blocks = int(sample.labels["num_gpu_blocks"])
            block_size = int(sample.labels["block_size"])
        except (KeyError, ValueError):  # "None" before the engine has profiled memory
            continue
        if blocks > 0 and block_size > 0:
            capacity[sample.labels.get("engine", "")] = float(blocks * block_size)
    return capacity


def convert(exposition: Exposition, scraped_at_s: float) -> EngineMetrics:
    capacity = kv_capacity_by_engine(exposition)
    waiting = count(exposition.series(WAITING))
    swapped = count(exposition.series(SWAPPED))
    if waiting is not None and swapped is not None:
        waiting += swapped
    queries = first_present(exposition, PREFIX_QUERIES, PREFIX_QUERIES_OLD)
    hits = first_present(exposition, PREFIX_HITS, PREFIX_HITS_OLD)
    hit_rate = None if queries else weighted_fraction(exposition.series(PREFIX_HIT_RATE_OLD))
    return EngineMetrics(
        engine=ENGINE,
        scraped_at_s=scraped_at_s,
        running=count(exposition.series(RUNNING)),
        waiting=waiting,
        kv_usage_frac=weighted_fraction(
            first_present(exposition, KV_USAGE, KV_USAGE_OLD), capacity, "engine"
        ),
        kv_capacity_tokens=round(sum(capacity.values())) if capacity else None,
        prefix_cache_queries_tokens_total=counter(queries),
        prefix_cache_hits_tokens_total=counter(hits) if queries else None,
        prefix_hit_rate_frac=hit_rate,
        preemptions_total=counter(exposition.series(PREEMPTIONS)),
    )


ADAPTER = EngineAdapter(
    engine=ENGINE,
    metric_names=frozenset(
        {
            RUNNING,
            WAITING,
            SWAPPED,
            KV_USAGE,
            KV_USAGE_OLD,
            CACHE_CONFIG,
            PREFIX_QUERIES,
            PREFIX_HITS,
            PREFIX_QUERIES_OLD,
            PREFIX_HITS_OLD,
            PREFIX_HIT_RATE_OLD,
            PREEMPTIONS,
        }
    ),
    signature=frozenset({RUNNING, WAITING, KV_USAGE, KV_USAGE_OLD}),
    convert=convert,
)
