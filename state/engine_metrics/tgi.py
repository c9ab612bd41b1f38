"""Text Generation Inference adapter: ``tgi_*`` metrics.

=========================  ==========================================================================
EngineMetrics field        TGI metric (Prometheus type)
=========================  ==========================================================================
``running``                ``tgi_batch_current_size`` (gauge: requests in the running batch)
``waiting``                ``tgi_queue_size`` (gauge: requests queued by the router)
``kv_usage_frac``          not exported
``kv_capacity_tokens``     not exported (``tgi_batch_current_max_tokens`` is the current batch's token
                           budget, not the KV pool)
``prefix_cache_*_total``   not exported
``preemptions_total``      not exported
=========================  ==========================================================================

With no KV or prefix-cache figures, policies fall back to Sluice's own
accounting and prefix index for those inputs on TGI backends.
"""

from __future__ import annotations

from core.types import EngineMetrics
from state.engine_metrics.adapter import EngineAdapter, count
from state.engine_metrics.exposition import Exposition

ENGINE = "tgi"
BATCH_SIZE = "tgi_batch_current_size"
QUEUE_SIZE = "tgi_queue_size"


def convert(exposition: Exposition, scraped_at_s: float) -> EngineMetrics:
    return EngineMetrics(
        engine=ENGINE,
        scraped_at_s=scraped_at_s,
        running=count(exposition.series(BATCH_SIZE)),
        waiting=count(exposition.series(QUEUE_SIZE)),
    )


ADAPTER = EngineAdapter(
    engine=ENGINE,
    metric_names=frozenset({BATCH_SIZE, QUEUE_SIZE}),
    signature=frozenset({BATCH_SIZE, QUEUE_SIZE}),
    convert=convert,
)
