"""Loop-local counters and histograms, exposed through a ``prometheus_client`` collector.

Why not ``prometheus_client.Counter``/``Histogram`` directly: each of their
updates takes a lock and walks the buckets linearly (~2 µs for one observe
plus one inc, measured), and the proxy updates several per request. All of
Sluice's updates happen on the one event-loop thread, so plain integers are
correct; ``bisect`` finds the bucket. Rendering to the Prometheus text format
(at scrape time only) still goes through ``prometheus_client``.

Children are created per label tuple and cached; callers keep a reference to
the child they update on the hot path. Label values must come from bounded
sets (configured names, status classes, small enums): nothing taken verbatim
from a request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

LabelValues = tuple[str, ...]


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot: above every finite bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value


class Counter:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[LabelValues, CounterChild] = {}

    def labels(self, *values: str) -> CounterChild:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            child = self._children[values] = CounterChild()
        return child

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._children.items():
            family.add_metric(list(values), child.value)
        return family


class Histogram:
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        bounds = tuple(sorted(float(b) for b in buckets))
        if not bounds or bounds[-1] == float("inf"):
            raise ValueError("give the finite bucket bounds; +Inf is added")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = bounds
        self._children: dict[LabelValues, HistogramChild] = {}

    def labels(self, *values: str) -> HistogramChild:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            child = self._children[values] = HistogramChild(self.bounds)
        return child

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [*(repr(b) for b in self.bounds), "+Inf"]
        for values, child in self._children.items():
            cumulative = 0
            buckets = []
            for edge, count in zip(edges, child.counts, strict=True):
                cumulative += count
                buckets.append((edge, float(cumulative)))
            family.add_metric(list(values), buckets, child.sum)
        return family


class GaugeSource:
    """A gauge whose samples are computed at scrape time by ``read``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        read: Callable[[], Iterator[tuple[LabelValues, float]]],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._read = read

    def family(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, value in self._read():
            family.add_metric(list(values), value)
        return family


class CounterSource:
    """A counter kept by another component (e.g. the engine-metrics collector), read at scrape time."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        read: Callable[[], Iterator[tuple[LabelValues, float]]],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._read = read

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, value in self._read():
            family.add_metric(list(values), value)
        return family


Metric = Counter | Histogram | GaugeSource | CounterSource


class LoopCollector(Collector):
    """Hands every registered metric to a ``prometheus_client`` registry at scrape time."""

    def __init__(self, metrics: Sequence[Metric]) -> None:
        self._metrics = tuple(metrics)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily | GaugeMetricFamily]:
        for metric in self._metrics:
            yield metric.family()
