"""Each engine's /metrics text → EngineMetrics, engine detection, and labelled-series rules."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from core.types import EngineMetrics
from state.engine_metrics import ScrapeProblem, convert_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engine_metrics"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


EXPECTED = {
    "vllm_v1.txt": EngineMetrics(
        engine="vllm",
        scraped_at_s=5.0,
        running=3,
        waiting=2,
        kv_usage_frac=0.4215,
        kv_capacity_tokens=27153 * 16,
        prefix_cache_queries_tokens_total=123456.0,
        prefix_cache_hits_tokens_total=45678.0,
        preemptions_total=7.0,
    ),
    # DP=2: counts and counters summed; KV use weighted by each engine's capacity
    # (0.9 * 48,000 + 0.3 * 16,000) / 64,000 = 0.75.
    "vllm_v1_dp2.txt": EngineMetrics(
        engine="vllm",
        scraped_at_s=5.0,
        running=13,
        waiting=4,
        kv_usage_frac=0.75,
        kv_capacity_tokens=64000,
        prefix_cache_queries_tokens_total=4000.0,
        prefix_cache_hits_tokens_total=1000.0,
        preemptions_total=3.0,
    ),
    # V0: swapped requests count as waiting; only the hit-rate gauge exists.
    "vllm_v0.txt": EngineMetrics(
        engine="vllm",
        scraped_at_s=5.0,
        running=12,
        waiting=7,
        kv_usage_frac=0.9712,
        kv_capacity_tokens=7281 * 16,
        prefix_hit_rate_frac=0.6237,
        preemptions_total=31.0,
    ),
    "sglang.txt": EngineMetrics(
        engine="sglang",
        scraped_at_s=5.0,
        running=24,
        waiting=10,
        kv_usage_frac=0.28,
        kv_capacity_tokens=380071,
        prefix_cache_queries_tokens_total=8128902.0,
        prefix_cache_hits_tokens_total=2466771.0,
        prefix_hit_rate_frac=0.4375,
        preemptions_total=3.0,
    ),
    # Captured: 21 + 5 prompt tokens evaluated, 21 reused from the cache.
    "llamacpp.txt": EngineMetrics(
        engine="llamacpp",
        scraped_at_s=5.0,
        running=0,
        waiting=0,
        prefix_cache_queries_tokens_total=47.0,
        prefix_cache_hits_tokens_total=21.0,
    ),
    "llamacpp_old.txt": EngineMetrics(
        engine="llamacpp", scraped_at_s=5.0, running=2, waiting=0, kv_usage_frac=0.37
    ),
    "tgi.txt": EngineMetrics(engine="tgi", scraped_at_s=5.0, running=5, waiting=3),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_converts_to_expected_metrics_when_detected(name: str) -> None:
    result = convert_text(fixture(name), "auto", 5.0)
    assert result.problem is None
    assert result.metrics is not None
    assert asdict(result.metrics) == pytest.approx(asdict(EXPECTED[name]))
    assert result.malformed_lines == 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_converts_identically_when_configured(name: str) -> None:
    expected = EXPECTED[name]
    metrics = convert_text(fixture(name), expected.engine, 5.0).metrics
    assert metrics is not None
    assert asdict(metrics) == pytest.approx(asdict(expected))


@pytest.mark.parametrize(
    ("configured", "body", "actual"),
    [
        ("vllm", "sglang.txt", "sglang"),
        ("sglang", "vllm_v1.txt", "vllm"),
        ("llamacpp", "tgi.txt", "tgi"),
        ("tgi", "llamacpp.txt", "llamacpp"),
    ],
)
def test_another_engines_metrics_than_configured_is_wrong_engine(
    configured: str, body: str, actual: str
) -> None:
    result = convert_text(fixture(body), configured, 1.0)
    assert result.metrics is None
    assert result.problem is ScrapeProblem.WRONG_ENGINE
    assert result.engine == actual
    assert configured in result.detail and actual in result.detail


def test_auto_with_two_engines_in_one_body_is_ambiguous() -> None:
    result = convert_text(fixture("vllm_v1.txt") + fixture("sglang.txt"), "auto", 1.0)
    assert result.metrics is None
    assert result.problem is ScrapeProblem.AMBIGUOUS_ENGINE


@pytest.mark.parametrize(
    "body",
    [
        "",
        "<html><body>404 Not Found</body></html>",
        '{"object": "error", "message": "not found"}',
        "# HELP process_cpu_seconds_total x\nprocess_cpu_seconds_total 12.5\n",
        "\x00\x01\x02 binary \xff garbage",
    ],
)
def test_body_without_engine_metrics_is_reported_not_raised(body: str) -> None:
    for metrics_format in ("auto", "vllm"):
        result = convert_text(body, metrics_format, 1.0)
        assert result.metrics is None
        assert result.problem is ScrapeProblem.NO_ENGINE_METRICS


def test_malformed_lines_are_skipped_and_counted_while_good_lines_still_count() -> None:
    body = (
        'vllm:num_requests_running{engine="0"} 4\n'
        'vllm:num_requests_waiting{engine="0" 3\n'  # unclosed label block
        'vllm:kv_cache_usage_perc{engine="0"} lots\n'  # not a number
    )
    result = convert_text(body, "vllm", 1.0)
    assert result.metrics is not None
    assert result.metrics.running == 4
    assert result.metrics.waiting is None
    assert result.metrics.kv_usage_frac is None
    assert result.malformed_lines == 2
    assert result.first_malformed is not None and "num_requests_waiting" in result.first_malformed


def test_only_malformed_engine_lines_is_no_engine_metrics() -> None:
    body = "vllm:num_requests_running{engine=0} 4\nvllm:num_requests_waiting\n"
    result = convert_text(body, "auto", 1.0)
    assert result.problem is ScrapeProblem.NO_ENGINE_METRICS
    assert result.malformed_lines == 2
    assert "malformed" in result.detail


def test_out_of_range_and_non_finite_values_never_reach_the_snapshot() -> None:
    body = (
        "vllm:num_requests_running -1\n"
        "vllm:num_requests_waiting NaN\n"
        "vllm:kv_cache_usage_perc 1.7\n"
        "vllm:prefix_cache_queries_total +Inf\n"
    )
    metrics = convert_text(body, "vllm", 1.0).metrics
    assert metrics is not None
    assert metrics.running is None
    assert metrics.waiting is None
    assert metrics.kv_usage_frac == 1.0
    assert metrics.prefix_cache_queries_tokens_total is None


def sglang_line(name: str, value: float, tp: int, dp: int | None = None) -> str:
    dp_label = f',dp_rank="{dp}"' if dp is not None else ""
    return f'sglang:{name}{{model_name="m",tp_rank="{tp}",pp_rank="0"{dp_label}}} {value}\n'


def test_sglang_tensor_parallel_ranks_are_read_once_not_summed() -> None:
    body = "".join(
        sglang_line("num_running_reqs", 4, tp) + sglang_line("num_queue_reqs", 2, tp) for tp in (0, 1, 2, 3)
    )
    metrics = convert_text(body, "sglang", 1.0).metrics
    assert metrics is not None
    assert (metrics.running, metrics.waiting) == (4, 2)


def test_sglang_data_parallel_ranks_are_summed_and_usage_weighted_by_capacity() -> None:
    body = ""
    for dp, (running, usage, capacity) in enumerate([(3, 0.5, 1000), (1, 0.1, 3000)]):
        for tp in (0, 1):
            body += sglang_line("num_running_reqs", running, tp, dp)
            body += sglang_line("token_usage", usage, tp, dp)
            body += sglang_line("max_total_num_tokens", capacity, tp, dp)
    metrics = convert_text(body, "sglang", 1.0).metrics
    assert metrics is not None
    assert metrics.running == 4
    assert metrics.kv_capacity_tokens == 4000
    assert metrics.kv_usage_frac == pytest.approx((0.5 * 1000 + 0.1 * 3000) / 4000)


def test_sglang_prompt_counter_without_cached_series_means_zero_hits() -> None:
    body = 'sglang:num_running_reqs{tp_rank="0"} 1\nsglang:prompt_tokens_total{model_name="m"} 500\n'
    metrics = convert_text(body, "sglang", 1.0).metrics
    assert metrics is not None
    assert metrics.prefix_cache_queries_tokens_total == 500.0
    assert metrics.prefix_cache_hits_tokens_total == 0.0


def test_vllm_cache_config_without_profiled_blocks_gives_no_capacity() -> None:
    body = (
        'vllm:num_requests_running{engine="0"} 1\n'
        'vllm:kv_cache_usage_perc{engine="0"} 0.2\n'
        'vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="None"} 1.0\n'
    )
    metrics = convert_text(body, "vllm", 1.0).metrics
    assert metrics is not None
    assert metrics.kv_capacity_tokens is None
    assert metrics.kv_usage_frac == 0.2
