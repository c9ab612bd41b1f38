"""Engine metric adapters (vLLM, SGLang, llama.cpp, TGI) and the collector that polls them.

``EngineMetricsCollector`` polls each backend's ``/metrics`` and calls back
with ``core.types.EngineMetrics`` or ``None`` (stale); ``convert_text`` turns one
body into ``EngineMetrics`` with the configured or detected adapter;
``PrefixHitRateTracker`` derives a prefix-cache hit rate from counter deltas.
docs/backends.md maps every engine metric to its ``EngineMetrics`` field.
"""

from state.engine_metrics.collector import (
    EngineMetricsCollector,
    MetricsCallback,
    ScrapeTarget,
    targets_from_config,
)
from state.engine_metrics.detect import ADAPTERS, Conversion, convert_text, detect_engines
from state.engine_metrics.hit_rate import PrefixHitRateTracker, prefix_hit_rate
from state.engine_metrics.status import ScrapeProblem, ScrapeStatus

__all__ = [
    "ADAPTERS",
    "Conversion",
    "EngineMetricsCollector",
    "MetricsCallback",
    "PrefixHitRateTracker",
    "ScrapeProblem",
    "ScrapeStatus",
    "ScrapeTarget",
    "convert_text",
    "detect_engines",
    "prefix_hit_rate",
    "targets_from_config",
]
