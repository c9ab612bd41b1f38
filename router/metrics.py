"""Every ``sluice_*`` metric, and the per-request recording the proxy calls.

Labels are bounded: ``route`` and ``backend`` are configured names, ``model``
is a configured model (requests for unknown models are counted under
``model="none"``), ``status_class`` is ``2xx``/``4xx``/``5xx`` or
``cancelled`` (the client went away), and ``kind``/``reason``/``code``/
``stage`` come from small fixed sets. docs/metrics.md lists them all.

Per-fleet gauges (in flight, awaiting first byte, health, EWMAs, the engine's
own figures and whether they are stale) are read from ``FleetState`` at scrape
time, so the request path never updates them. Scrape failures by problem are
read from the engine-metrics collector's ``status`` once the app has started
it (``engine_scrapes``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from core.protocols import AdmissionStats
from core.types import BackendId, Health
from predictors.refit import RefitStats
from router.metric_types import (
    Counter,
    CounterChild,
    CounterSource,
    GaugeSource,
    Histogram,
    HistogramChild,
    LabelValues,
    LoopCollector,
    Metric,
)
from state.engine_metrics import ScrapeStatus
from state.fleet import FleetState

NONE_LABEL = "none"
CANCELLED = "cancelled"
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 20.0, 60.0)
ITL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0)
E2E_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)
QUEUE_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
_STATUS_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def status_class(status: int) -> str:
    return _STATUS_CLASS.get(status // 100, "5xx")


class RequestSeries:
    """The children one (route, model, backend) updates, resolved once and cached."""

    __slots__ = ("_by_status", "_key", "_requests", "e2e", "itl", "output_tokens", "ttft")

    def __init__(self, metrics: SluiceMetrics, route: str, model: str, backend: str) -> None:
        key = (route, model, backend)
        self._requests = metrics.requests
        self._by_status: dict[str, CounterChild] = {}
        self.ttft = metrics.ttft.labels(*key)
        self.itl = metrics.itl.labels(*key)
        self.e2e = metrics.e2e.labels(*key)
        self.output_tokens = metrics.output_tokens.labels(*key)
        self._key = key

    def count(self, status_label: str) -> None:
        child = self._by_status.get(status_label)
        if child is None:
            child = self._by_status[status_label] = self._requests.labels(*self._key, status_label)
        child.inc()


class SluiceMetrics:
    def __init__(self, fleet: FleetState, admission: AdmissionStats | None = None) -> None:
        self._fleet = fleet
        self._admission = admission
        rmb = ("route", "model", "backend")
        self.requests = Counter(
            "sluice_requests_total", "Proxied requests by outcome.", (*rmb, "status_class")
        )
        self.ttft = Histogram(
            "sluice_ttft_seconds",
            "Time to first token (first body byte) of streamed responses.",
            rmb,
            TTFT_BUCKETS_S,
        )
        self.itl = Histogram(
            "sluice_inter_token_latency_seconds",
            "Mean gap between tokens of one streamed response (one sample per response).",
            rmb,
            ITL_BUCKETS_S,
        )
        self.e2e = Histogram(
            "sluice_e2e_latency_seconds", "Request arrival to last byte sent.", rmb, E2E_BUCKETS_S
        )
        self.output_tokens = Counter(
            "sluice_output_tokens_total", "Generated tokens (usage when sent, else counted events).", rmb
        )
        self.queue_time = Histogram(
            "sluice_queue_time_seconds",
            "Arrival to upstream dispatch: body read, admission wait and the routing decision.",
            ("route",),
            QUEUE_BUCKETS_S,
        )
        self.upstream_errors = Counter(
            "sluice_upstream_errors_total", "Failed upstream attempts by kind.", ("backend", "kind")
        )
        self.retries = Counter(
            "sluice_retries_total", "Retries to the next ranked backend.", ("route", "reason")
        )
        self.retries_denied = Counter(
            "sluice_retries_denied_total", "Retryable failures not retried.", ("route", "reason")
        )
        self.shed = Counter(
            "sluice_shed_total", "Requests refused with 429 by admission.", ("route", "reason", "class")
        )
        self.errors = Counter("sluice_errors_total", "Error answers by Sluice error code.", ("code",))
        self.client_disconnects = Counter(
            "sluice_client_disconnects_total", "Clients that went away before the end.", ("stage",)
        )
        self._series: dict[LabelValues, RequestSeries] = {}
        self._route_queue: dict[str, HistogramChild] = {}
        self.engine_scrapes: Mapping[BackendId, ScrapeStatus] = {}  # the collector's, set at start-up
        self.length_refit: RefitStats | None = None  # the background refit's, set at start-up if enabled
        self.registry = CollectorRegistry(auto_describe=False)
        owned = [m for m in vars(self).values() if isinstance(m, Counter | Histogram)]
        self.registry.register(
            LoopCollector([*owned, *self._fleet_gauges(), *self._admission_gauges(), *self._refit_metrics()])
        )
        ProcessCollector(registry=self.registry)

    def series(self, route: str, model: str, backend: str) -> RequestSeries:
        key = (route, model, backend)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = RequestSeries(self, route, model, backend)
        return series

    def queue(self, route: str) -> HistogramChild:
        child = self._route_queue.get(route)
        if child is None:
            child = self._route_queue[route] = self.queue_time.labels(route)
        return child

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _fleet_gauges(self) -> list[Metric]:
        fleet = self._fleet

        def per_backend(attr: str, scale: float) -> Callable[[], Iterator[tuple[LabelValues, float]]]:
            def read() -> Iterator[tuple[LabelValues, float]]:
                for view in fleet.snapshot().backends:
                    value = getattr(view, attr)
                    if value is not None:
                        yield (view.backend_id,), float(value) * scale

            return read

        def health() -> Iterator[tuple[LabelValues, float]]:
            for view in fleet.snapshot().backends:
                for state in Health:
                    yield (view.backend_id, state.value), 1.0 if view.health is state else 0.0

        def breaker_failures() -> Iterator[tuple[LabelValues, float]]:
            for backend_id in fleet.backend_ids:
                yield (backend_id,), float(fleet.backend(backend_id).breaker.consecutive_failures)

        def stale() -> Iterator[tuple[LabelValues, float]]:
            for view in fleet.snapshot().backends:
                yield (view.backend_id,), 1.0 if view.metrics_stale else 0.0

        def scrape_failures() -> Iterator[tuple[LabelValues, float]]:
            for backend_id, status in self.engine_scrapes.items():
                for problem, count in status.failures_by_problem.items():
                    yield (backend_id, problem.value), float(count)

        gauges: list[Metric] = [
            GaugeSource(name, doc, ("backend",), per_backend(attr, scale))
            for name, doc, attr, scale in _BACKEND_GAUGES
        ]
        gauges.append(
            GaugeSource(
                "sluice_backend_health",
                "1 for the backend's current health state.",
                ("backend", "state"),
                health,
            )
        )
        gauges.append(
            GaugeSource(
                "sluice_backend_consecutive_failures",
                "Circuit breaker's current failure run.",
                ("backend",),
                breaker_failures,
            )
        )
        gauges.append(
            GaugeSource(
                "sluice_backend_engine_metrics_stale",
                "1 while the backend's engine metrics are missing or stale (Sluice's own counts rule).",
                ("backend",),
                stale,
            )
        )
        gauges.append(
            CounterSource(
                "sluice_engine_metrics_scrape_failures_total",
                "Failed engine /metrics scrapes by problem.",
                ("backend", "problem"),
                scrape_failures,
            )
        )
        return gauges

    def _refit_metrics(self) -> list[Metric]:
        """The length model's background refits by result, and the last one's duration (none when off)."""

        def refits() -> Iterator[tuple[LabelValues, float]]:
            stats = self.length_refit
            if stats is not None:
                yield ("swapped",), float(stats.swaps)
                yield ("rejected",), float(stats.rejected)
                yield ("failed",), float(stats.failed)

        def duration() -> Iterator[tuple[LabelValues, float]]:
            stats = self.length_refit
            if stats is not None and stats.refits:
                yield (), stats.last_duration_s

        return [
            CounterSource(
                "sluice_length_refits_total",
                "Background refits of the output-length model by result (swapped in, rejected by the "
                "guard, failed).",
                ("result",),
                refits,
            ),
            GaugeSource(
                "sluice_length_refit_duration_seconds",
                "Duration of the last background refit of the output-length model (worker process).",
                (),
                duration,
            ),
        ]

    def _admission_gauges(self) -> list[GaugeSource]:
        admission = self._admission
        if admission is None:
            return []

        def depths() -> Iterator[tuple[LabelValues, float]]:
            for name, depth in admission.queue_depths().items():
                yield (name,), float(depth)

        def limits() -> Iterator[tuple[LabelValues, float]]:
            for backend_id, limit in admission.concurrency_limits().items():
                yield (backend_id,), float(limit)

        def rate() -> Iterator[tuple[LabelValues, float]]:
            yield (), admission.service_rate_rps()

        return [
            GaugeSource(
                "sluice_queue_depth", "Requests waiting in Sluice's waiting room.", ("class",), depths
            ),
            GaugeSource(
                "sluice_backend_concurrency_limit",
                "Current (adaptive) in-flight limit per backend.",
                ("backend",),
                limits,
            ),
            GaugeSource(
                "sluice_fleet_service_rate",
                "Requests completed per second (decayed), the denominator of Retry-After.",
                (),
                rate,
            ),
        ]


# (metric, help, BackendView attribute, scale to base units)
_BACKEND_GAUGES = (
    ("sluice_in_flight_requests", "Requests in flight per backend.", "in_flight_requests", 1.0),
    (
        "sluice_awaiting_first_byte_requests",
        "In-flight requests that have not received their first byte.",
        "awaiting_first_byte",
        1.0,
    ),
    (
        "sluice_in_flight_prompt_tokens",
        "Estimated prompt tokens in flight per backend.",
        "in_flight_prompt_tokens",
        1.0,
    ),
    ("sluice_backend_ewma_ttft_seconds", "EWMA of streamed TTFT per backend.", "ewma_ttft_ms", 1e-3),
    ("sluice_backend_ewma_tpot_seconds", "EWMA of streamed time per output token.", "ewma_tpot_ms", 1e-3),
    (
        "sluice_backend_engine_metrics_age_seconds",
        "Age of the last engine metrics scrape.",
        "metrics_age_s",
        1.0,
    ),
    (
        "sluice_backend_engine_running_requests",
        "Requests the engine reports running (last scrape).",
        "engine_running",
        1.0,
    ),
    (
        "sluice_backend_engine_waiting_requests",
        "Requests the engine reports queued (last scrape).",
        "engine_waiting",
        1.0,
    ),
    ("sluice_backend_kv_usage_ratio", "KV cache in use, 0..1 (last scrape).", "kv_usage_frac", 1.0),
    (
        "sluice_backend_prefix_cache_hit_ratio",
        "Prefix-cache hit rate between the last scrapes, 0..1.",
        "prefix_hit_rate",
        1.0,
    ),
)
