"""Prometheus text for one simulated backend, with vLLM's own metric names, types, labels and buckets.

Names and buckets follow vLLM v1's ``PrometheusStatLogger`` (vllm/v1/metrics/loggers.py); every
series carries ``model_name`` and ``engine="0"`` as vLLM's do. Counters are rendered the way
``prometheus_client`` renders them (``<name>_total`` with ``# TYPE <name>_total counter``), without
``_created`` series. Exported:

- gauges ``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``
  (and its deprecated alias ``vllm:gpu_cache_usage_perc``), ``vllm:cache_config_info``
  (labels ``block_size``, ``num_gpu_blocks``, ...);
- counters ``vllm:prefix_cache_queries``, ``vllm:prefix_cache_hits`` (tokens; with the deprecated
  ``vllm:gpu_prefix_cache_*`` aliases), ``vllm:num_preemptions``, ``vllm:prompt_tokens``,
  ``vllm:generation_tokens``, ``vllm:request_success{finished_reason}``;
- histograms ``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds`` and
  ``vllm:time_per_output_token_seconds`` (both observe every gap between consecutive tokens, as
  vLLM v1 does), ``vllm:e2e_request_latency_seconds``, ``vllm:request_queue_time_seconds``,
  ``vllm:request_prompt_tokens``, ``vllm:request_generation_tokens``.

Also ``sluice_sim_*`` series about the simulator itself (timer lateness, SSE writes), so a benchmark
can tell when the simulator, not the simulated GPU, is the bottleneck.

A cheap own histogram (bisect into fixed buckets) instead of ``prometheus_client``: the simulator
observes every token of every stream, and many backends share one process.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from loadgen.sim.engine import EngineStats

TTFT_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS_S = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


def one_two_five_buckets(max_value: int) -> tuple[float, ...]:
    """vLLM's ``build_1_2_5_buckets``: 1, 2, 5, 10, 20, 50, ... up to ``max_value``."""
    out: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(out)
            out.append(float(value))
        exponent += 1


class Histogram:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def observe_many(self, values: Iterable[float]) -> None:
        for value in values:
            self.observe(value)


class BackendMetrics:
    """Request-level histograms and finish counters of one backend (engine counters live in the engine)."""

    __slots__ = ("e2e", "finished_by_reason", "gen_tokens", "itl", "prompt_tokens", "queue", "ttft")

    def __init__(self, max_model_len: int) -> None:
        self.ttft = Histogram(TTFT_BUCKETS_S)
        self.itl = Histogram(ITL_BUCKETS_S)
        self.e2e = Histogram(REQUEST_LATENCY_BUCKETS_S)
        self.queue = Histogram(REQUEST_LATENCY_BUCKETS_S)
        self.prompt_tokens = Histogram(one_two_five_buckets(max_model_len))
        self.gen_tokens = Histogram(one_two_five_buckets(max_model_len))
        self.finished_by_reason: dict[str, int] = {"stop": 0, "length": 0, "abort": 0}


def _num(value: float) -> str:
    return repr(float(value))


class _Writer:
    def __init__(self, labels: str) -> None:
        self.labels = labels
        self.lines: list[str] = []

    def gauge(self, name: str, help_text: str, value: float) -> None:
        self.lines += [
            f"# HELP {name} {help_text}",
            f"# TYPE {name} gauge",
            f"{name}{{{self.labels}}} {_num(value)}",
        ]

    def counter(self, name: str, help_text: str, value: float) -> None:
        full = f"{name}_total"
        self.lines += [
            f"# HELP {full} {help_text}",
            f"# TYPE {full} counter",
            f"{full}{{{self.labels}}} {_num(value)}",
        ]

    def histogram(self, name: str, help_text: str, hist: Histogram) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, n in zip(hist.bounds, hist.counts, strict=False):
            cumulative += n
            self.lines.append(f'{name}_bucket{{{self.labels},le="{_num(bound)}"}} {_num(cumulative)}')
        self.lines.append(f'{name}_bucket{{{self.labels},le="+Inf"}} {_num(hist.count)}')
        self.lines.append(f"{name}_count{{{self.labels}}} {_num(hist.count)}")
        self.lines.append(f"{name}_sum{{{self.labels}}} {_num(hist.sum)}")


@dataclass(frozen=True, slots=True)
class DriverStats:
    """The simulator's own health: how late its timer fired (it is the bottleneck if this grows)."""

    ticks: int
    lag_sum_s: float
    lag_max_s: float
    sse_writes: int


def render(
    model: str,
    stats: EngineStats,
    metrics: BackendMetrics,
    cache_info: dict[str, str],
    driver: DriverStats | None = None,
) -> bytes:
    """The ``/metrics`` body (Prometheus text format 0.0.4)."""
    model_label = model.replace("\\", "\\\\").replace('"', '\\"')
    w = _Writer(f'engine="0",model_name="{model_label}"')
    w.gauge("vllm:num_requests_running", "Number of requests in model execution batches.", stats.running)
    w.gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", stats.waiting)
    w.gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", stats.kv_usage_frac)
    w.gauge(
        "vllm:gpu_cache_usage_perc",
        "GPU KV-cache usage. 1 means 100 percent usage.DEPRECATED: Use vllm:kv_cache_usage_perc instead.",
        stats.kv_usage_frac,
    )
    queries, hits = stats.prefix_cache_queries_tokens, stats.prefix_cache_hits_tokens
    w.counter(
        "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.", queries
    )
    w.counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", hits)
    w.counter("vllm:gpu_prefix_cache_queries", "GPU prefix cache queries. DEPRECATED.", queries)
    w.counter("vllm:gpu_prefix_cache_hits", "GPU prefix cache hits. DEPRECATED.", hits)
    w.counter(
        "vllm:num_preemptions", "Cumulative number of preemption from the engine.", stats.preemptions_total
    )
    w.counter("vllm:prompt_tokens", "Number of prefill tokens processed.", stats.prompt_tokens_total)
    w.counter(
        "vllm:generation_tokens", "Number of generation tokens processed.", stats.generation_tokens_total
    )
    w.lines += [
        "# HELP vllm:request_success_total Count of successfully processed requests.",
        "# TYPE vllm:request_success_total counter",
    ]
    for reason, n in metrics.finished_by_reason.items():
        w.lines.append(f'vllm:request_success_total{{{w.labels},finished_reason="{reason}"}} {_num(n)}')
    w.histogram(
        "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", metrics.ttft
    )
    w.histogram(
        "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", metrics.itl
    )
    w.histogram(
        "vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", metrics.itl
    )
    w.histogram(
        "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", metrics.e2e
    )
    w.histogram(
        "vllm:request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request.",
        metrics.queue,
    )
    w.histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", metrics.prompt_tokens)
    w.histogram(
        "vllm:request_generation_tokens", "Number of generation tokens processed.", metrics.gen_tokens
    )
    info = ",".join(f'{k}="{v}"' for k, v in sorted(cache_info.items()))
    w.lines += [
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
        "# TYPE vllm:cache_config_info gauge",
        f'vllm:cache_config_info{{{info},engine="0"}} 1.0',
    ]
    if driver is not None:
        w.counter("sluice_sim_ticks", "Engine timer firings of this simulated backend.", driver.ticks)
        w.counter("sluice_sim_tick_lag_seconds", "Sum of how late the engine timer fired.", driver.lag_sum_s)
        w.gauge("sluice_sim_tick_lag_max_seconds", "Largest lateness of the engine timer.", driver.lag_max_s)
        w.counter(
            "sluice_sim_sse_writes", "SSE writes (one per event or coalesced flush).", driver.sse_writes
        )
    return ("\n".join(w.lines) + "\n").encode()
