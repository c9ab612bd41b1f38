"""Pick the adapter for one scrape: the configured engine, or the one detected from metric names.

Rules (``BackendConfig.metrics_format``):

* ``auto``: the engine whose signature metrics (``EngineAdapter.signature``)
  appear is used; none → ``NO_ENGINE_METRICS``; more than one →
  ``AMBIGUOUS_ENGINE`` (set the format explicitly). Detection runs on every
  scrape, so a backend replaced by another engine is followed.
* an engine name: its adapter is used if its signature metrics appear; if they
  don't and another engine's do → ``WRONG_ENGINE``; if none do →
  ``NO_ENGINE_METRICS``.

A failed scrape returns no metrics at all (the backend's engine data goes
stale) rather than a half-filled record that could read as "idle".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.types import EngineMetrics
from state.engine_metrics import llamacpp, sglang, tgi, vllm
from state.engine_metrics.adapter import EngineAdapter
from state.engine_metrics.exposition import Exposition, parse_exposition
from state.engine_metrics.status import ScrapeProblem

ADAPTERS: Mapping[str, EngineAdapter] = {
    a.engine: a for a in (vllm.ADAPTER, sglang.ADAPTER, llamacpp.ADAPTER, tgi.ADAPTER)
}
WANTED_NAMES: frozenset[str] = frozenset().union(*(a.metric_names for a in ADAPTERS.values()))


@dataclass(frozen=True, slots=True)
class Conversion:
    """The outcome of turning one metrics body into ``EngineMetrics``."""

    metrics: EngineMetrics | None
    engine: str | None = None
    problem: ScrapeProblem | None = None
    detail: str = ""
    malformed_lines: int = 0
    first_malformed: str | None = None


def detect_engines(exposition: Exposition) -> tuple[str, ...]:
    """Engines whose signature metrics appear in the scrape, in registry order."""
    return tuple(name for name, adapter in ADAPTERS.items() if adapter.present_in(exposition))


def convert_text(text: str, metrics_format: str, scraped_at_s: float) -> Conversion:
    """Parse a ``/metrics`` body and convert it with the right adapter; never raises."""
    exposition = parse_exposition(text, WANTED_NAMES)
    engine, problem, detail = _choose(metrics_format, detect_engines(exposition), exposition)
    metrics = None
    if problem is None and engine is not None:
        metrics = ADAPTERS[engine].convert(exposition, scraped_at_s)
    return Conversion(
        metrics,
        engine,
        problem,
        detail,
        malformed_lines=exposition.malformed_lines,
        first_malformed=exposition.first_malformed,
    )


def _choose(
    metrics_format: str, found: tuple[str, ...], exposition: Exposition
) -> tuple[str | None, ScrapeProblem | None, str]:
    if metrics_format == "auto":
        if not found:
            return None, ScrapeProblem.NO_ENGINE_METRICS, _none_found(exposition)
        if len(found) > 1:
            return (
                None,
                ScrapeProblem.AMBIGUOUS_ENGINE,
                f"metrics of {', '.join(found)} present; set metrics_format",
            )
        return found[0], None, ""
    if metrics_format not in ADAPTERS:
        return None, ScrapeProblem.INTERNAL, f"no adapter for metrics_format {metrics_format!r}"
    if metrics_format in found:
        return metrics_format, None, ""
    if found:
        return (
            found[0],
            ScrapeProblem.WRONG_ENGINE,
            f"configured {metrics_format}, got {', '.join(found)} metrics",
        )
    return None, ScrapeProblem.NO_ENGINE_METRICS, _none_found(exposition)


def _none_found(exposition: Exposition) -> str:
    if exposition.malformed_lines:
        return f"no parsable engine metrics; {exposition.malformed_lines} malformed line(s)"
    return "no vllm:, sglang:, llamacpp: or tgi_ metrics in the body"
