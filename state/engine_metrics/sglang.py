"""SGLang adapter: ``sglang:*`` metrics (served with ``--enable-metrics``).

=========================  ==========================================================================
EngineMetrics field        SGLang metric (Prometheus type)
=========================  ==========================================================================
``running``                ``sglang:num_running_reqs`` (gauge)
``waiting``                ``sglang:num_queue_reqs`` + ``sglang:num_grammar_queue_reqs`` (gauges; requests
                           waiting for a grammar to compile are queued too)
``kv_usage_frac``          ``sglang:token_usage`` (gauge, 0..1 of the KV token pool), else
                           ``sglang:num_used_tokens`` / ``sglang:max_total_num_tokens``
``kv_capacity_tokens``     ``sglang:max_total_num_tokens`` (gauge; newer releases)
``prefix_cache_*_total``   queries ``sglang:prompt_tokens_total``, hits ``sglang:cached_tokens_total``
                           (counters, tokens, counted when a request finishes). SGLang creates the
                           cached-tokens series on the first hit, so hits are 0 while it is absent.
``prefix_hit_rate_frac``   ``sglang:cache_hit_rate`` (gauge, the scheduler's recent hit rate)
``preemptions_total``      ``sglang:num_retracted_requests_total`` (counter of retracted requests)
=========================  ==========================================================================

Scheduler gauges carry ``tp_rank``/``pp_rank``/``moe_ep_rank`` labels; every
rank of one scheduler reports the same numbers, so only the lowest rank is
read. What remains (one series per ``dp_rank``) is summed, and usage is
averaged weighted by each DP rank's token capacity.
"""

from __future__ import annotations

from core.types import EngineMetrics
from state.engine_metrics.adapter import (
    EngineAdapter,
    clamp_frac,
    count,
    counter,
    dedupe_labels,
    total,
    weighted_fraction,
)
from state.engine_metrics.exposition import Exposition, Sample

ENGINE = "sglang"
RUNNING = "sglang:num_running_reqs"
QUEUED = "sglang:num_queue_reqs"
GRAMMAR_QUEUED = "sglang:num_grammar_queue_reqs"
TOKEN_USAGE = "sglang:token_usage"
USED_TOKENS = "sglang:num_used_tokens"
MAX_TOKENS = "sglang:max_total_num_tokens"
PROMPT_TOKENS = "sglang:prompt_tokens_total"
CACHED_TOKENS = "sglang:cached_tokens_total"
CACHE_HIT_RATE = "sglang:cache_hit_rate"
RETRACTED = "sglang:num_retracted_requests_total"
REPLICA_RANK_LABELS = ("tp_rank", "pp_rank", "moe_ep_rank")
DP_LABEL = "dp_rank"


def _scheduler(exposition: Exposition, name: str) -> list[Sample]:
    return dedupe_labels(exposition.series(name), REPLICA_RANK_LABELS)


def _kv_usage(exposition: Exposition) -> float | None:
    capacity = {s.labels.get(DP_LABEL, ""): s.value for s in _scheduler(exposition, MAX_TOKENS)}
    usage = _scheduler(exposition, TOKEN_USAGE)
    if usage:
        return weighted_fraction(usage, capacity, DP_LABEL)
    used, limit = total(_scheduler(exposition, USED_TOKENS)), total(_scheduler(exposition, MAX_TOKENS))
    if used is None or not limit:
        return None
    return clamp_frac(used / limit)


def convert(exposition: Exposition, scraped_at_s: float) -> EngineMetrics:
    waiting = count(_scheduler(exposition, QUEUED))
    grammar = count(_scheduler(exposition, GRAMMAR_QUEUED))
    if waiting is not None and grammar is not None:
        waiting += grammar
    capacity = count(_scheduler(exposition, MAX_TOKENS))
    queries = counter(exposition.series(PROMPT_TOKENS))
    hits = counter(exposition.series(CACHED_TOKENS))
    if queries is not None and hits is None:
        hits = 0.0
    return EngineMetrics(
        engine=ENGINE,
        scraped_at_s=scraped_at_s,
        running=count(_scheduler(exposition, RUNNING)),
        waiting=waiting,
        kv_usage_frac=_kv_usage(exposition),
        kv_capacity_tokens=capacity if capacity else None,
        prefix_cache_queries_tokens_total=queries,
        prefix_cache_hits_tokens_total=hits,
        prefix_hit_rate_frac=weighted_fraction(_scheduler(exposition, CACHE_HIT_RATE)),
        preemptions_total=counter(_scheduler(exposition, RETRACTED)),
    )


ADAPTER = EngineAdapter(
    engine=ENGINE,
    metric_names=frozenset(
        {
            RUNNING,
            QUEUED,
            GRAMMAR_QUEUED,
            TOKEN_USAGE,
            USED_TOKENS,
            MAX_TOKENS,
            PROMPT_TOKENS,
            CACHED_TOKENS,
            CACHE_HIT_RATE,
            RETRACTED,
        }
    ),
    signature=frozenset({RUNNING, QUEUED, TOKEN_USAGE}),
    convert=convert,
)
