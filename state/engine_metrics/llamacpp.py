"""llama.cpp server adapter: ``llamacpp:*`` metrics (``llama-server --metrics``).

=========================  ==========================================================================
EngineMetrics field        llama.cpp metric (Prometheus type)
=========================  ==========================================================================
``running``                ``llamacpp:requests_processing`` (gauge: slots busy with a request)
``waiting``                ``llamacpp:requests_deferred`` (gauge: requests waiting for a free slot)
``kv_usage_frac``          ``llamacpp:kv_cache_usage_ratio`` (gauge; only older builds export it)
``kv_capacity_tokens``     not exported (the per-slot context is on ``/slots``, not ``/metrics``)
``prefix_cache_*_total``   ``llamacpp:prompt_tokens_total`` counts prompt tokens *evaluated*, excluding
                           those reused from the cache, and ``llamacpp:prompt_tokens_cached_total``
                           counts the reused ones, so queries = evaluated + cached and hits = cached
                           (both ``None`` on builds without the cached counter)
``preemptions_total``      not applicable: a slot is never preempted
=========================  ==========================================================================

One llama-server process serves one model, so its series carry no labels;
were any present, they would be summed.
"""

from __future__ import annotations

from core.types import EngineMetrics
from state.engine_metrics.adapter import EngineAdapter, count, counter, weighted_fraction
from state.engine_metrics.exposition import Exposition

ENGINE = "llamacpp"
PROCESSING = "llamacpp:requests_processing"
DEFERRED = "llamacpp:requests_deferred"
KV_USAGE = "llamacpp:kv_cache_usage_ratio"
PROMPT_EVALUATED = "llamacpp:prompt_tokens_total"
PROMPT_CACHED = "llamacpp:prompt_tokens_cached_total"


def convert(exposition: Exposition, scraped_at_s: float) -> EngineMetrics:
    evaluated = counter(exposition.series(PROMPT_EVALUATED))
    cached = counter(exposition.series(PROMPT_CACHED))
    queries = evaluated + cached if evaluated is not None and cached is not None else None
    return EngineMetrics(
        engine=ENGINE,
        scraped_at_s=scraped_at_s,
        running=count(exposition.series(PROCESSING)),
        waiting=count(exposition.series(DEFERRED)),
        kv_usage_frac=weighted_fraction(exposition.series(KV_USAGE)),
        prefix_cache_queries_tokens_total=queries,
        prefix_cache_hits_tokens_total=cached if queries is not None else None,
    )


ADAPTER = EngineAdapter(
    engine=ENGINE,
    metric_names=frozenset({PROCESSING, DEFERRED, KV_USAGE, PROMPT_EVALUATED, PROMPT_CACHED}),
    signature=frozenset({PROCESSING, DEFERRED}),
    convert=convert,
)
