"""What an engine adapter is, and the aggregation rules the adapters share.

An adapter turns one engine's parsed ``/metrics`` samples into the
engine-neutral ``core.types.EngineMetrics``. It names the samples it reads
(``metric_names``, so the parser skips the rest) and a few that prove the body
comes from its engine (``signature``, used by auto-detection and to spot a
backend exporting another engine's metrics than configured).

Labelled series: one backend URL may export several series of one metric —
per data-parallel engine (vLLM ``engine``, SGLang ``dp_rank``), per model name,
or per tensor/pipeline/expert-parallel rank that all report the same
scheduler (SGLang ``tp_rank``, ``pp_rank``, ``moe_ep_rank``). Rules:

* replica ranks that repeat one scheduler's numbers are de-duplicated by
  keeping only the lowest rank present (``dedupe_labels``);
* request counts and cumulative counters are **summed** over what remains
  (a DP group's queue is the sum of its engines' queues);
* usage fractions are **averaged**, weighted by each series' capacity when the
  engine exports one (``weighted_fraction``), else unweighted;
* non-finite values are ignored; a negative count is treated as absent;
  fractions are clamped into [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from core.types import EngineMetrics
from state.engine_metrics.exposition import Exposition, Sample


@dataclass(frozen=True, slots=True)
class EngineAdapter:
    engine: str
    metric_names: frozenset[str]
    signature: frozenset[str]
    convert: Callable[[Exposition, float], EngineMetrics]

    def present_in(self, exposition: Exposition) -> bool:
        """Whether any of this engine's signature metrics appear in the scrape."""
        return any(exposition.has(name) for name in self.signature)


def dedupe_labels(samples: list[Sample], labels: Iterable[str]) -> list[Sample]:
    """Keep, for each label in ``labels`` that the series carry, only the lowest value's series."""
    for label in labels:
        values = {s.labels[label] for s in samples if label in s.labels}
        if len(values) > 1:
            lowest = min(values, key=_rank_key)
            samples = [s for s in samples if s.labels.get(label, lowest) == lowest]
    return samples


def _rank_key(value: str) -> tuple[int, int | str]:
    return (0, int(value)) if value.lstrip("-").isdigit() else (1, value)


def total(samples: list[Sample]) -> float | None:
    """Sum of the series, ``None`` when there are none."""
    return sum(s.value for s in samples) if samples else None


def count(samples: list[Sample]) -> int | None:
    """A request count: the rounded sum, ``None`` if absent or negative."""
    value = total(samples)
    if value is None or value < 0:
        return None
    return round(value)


def counter(samples: list[Sample]) -> float | None:
    """A cumulative counter: the sum, ``None`` if absent or negative."""
    value = total(samples)
    return None if value is None or value < 0 else value


def clamp_frac(value: float | None) -> float | None:
    if value is None:
        return None
    return min(1.0, max(0.0, value))


def weighted_fraction(
    samples: list[Sample], weights: Mapping[str, float] | None = None, key_label: str = ""
) -> float | None:
    """Mean of fraction-valued series, weighted by ``weights[series.labels[key_label]]`` if given."""
    if not samples:
        return None
    if weights and all(s.labels.get(key_label) in weights for s in samples):
        denominator = sum(weights[s.labels[key_label]] for s in samples)
        if denominator > 0:
            numerator = sum(s.value * weights[s.labels[key_label]] for s in samples)
            return clamp_frac(numerator / denominator)
    return clamp_frac(sum(s.value for s in samples) / len(samples))


def first_present(exposition: Exposition, *names: str) -> list[Sample]:
    """The series of the first name that appears (newer names first, then older aliases)."""
    for name in names:
        series = exposition.series(name)
        if series:
            return series
    return []
