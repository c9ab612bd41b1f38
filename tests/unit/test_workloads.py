"""Workloads parsed from the real traces (small slices): lengths, scaling, limits, seeds, mixes, bodies."""

from __future__ import annotations

import itertools
import statistics

import pytest

from core import headers
from core.features import prompt_text
from core.tokens import estimate_tokens
from core.types import Endpoint
from loadgen.workload import WorkloadRequest
from loadgen.workloads import build_workload, registered
from tests.loadgen_support import needs_data

ALL = sorted(registered())


def take(
    name: str, n: int = 60, params: dict[str, str] | None = None, **options: object
) -> list[WorkloadRequest]:
    return list(itertools.islice(build_workload(name, {"max_requests": n, **options}, params).requests(), n))


@needs_data
@pytest.mark.parametrize("name", ALL)
def test_every_workload_yields_sorted_requests_with_ground_truth(name: str) -> None:
    reqs = take(name)
    assert len(reqs) == 60
    assert [r.arrival_s for r in reqs] == sorted(r.arrival_s for r in reqs)
    assert len({r.request_id for r in reqs}) == len(reqs)
    for r in reqs:
        assert r.true_output_tokens >= 1
        assert r.http_headers()[headers.SIM_OUTPUT_TOKENS] == str(r.true_output_tokens)
        assert r.body["stream"] is True and r.body["model"] == "llama-3.1-8b"
        assert "max_tokens" not in r.body
        assert r.source == name


@needs_data
def test_azure_replays_the_first_rows_exactly() -> None:
    reqs = take("azure_code", 3, endpoint="completions")
    # First rows of AzureLLMInferenceTrace_code.csv: 18:17:03.97996 4808/10, 18:17:04.03196 3180/8.
    assert [(r.trace_prompt_tokens, r.true_output_tokens) for r in reqs[:2]] == [(4808, 10), (3180, 8)]
    assert reqs[0].arrival_s == 0.0
    assert reqs[1].arrival_s == pytest.approx(0.052, abs=1e-6)
    for r in reqs:
        assert estimate_tokens(r.body["prompt"]) == r.trace_prompt_tokens


@needs_data
@pytest.mark.parametrize("name", ["azure_conv", "mooncake_conversation", "servegen", "arxiv", "poisson"])
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_synthesised_prompts_estimate_to_the_trace_length(name: str, endpoint: str) -> None:
    for r in take(name, 40, endpoint=endpoint):
        assert estimate_tokens(prompt_text(r.endpoint, r.body)) == r.trace_prompt_tokens
        assert r.endpoint is (Endpoint.CHAT if endpoint == "chat" else Endpoint.COMPLETIONS)


@needs_data
def test_unique_prompts_do_not_share_prefixes() -> None:
    reqs = take("azure_conv", 50)
    heads = {r.body["messages"][0]["content"][:64] for r in reqs}
    assert len(heads) == 50


@needs_data
def test_time_scale_compresses_and_duration_limits() -> None:
    base = take("azure_conv", 200)
    fast = take("azure_conv", 200, time_scale=0.5)
    assert [r.request_id for r in fast] == [r.request_id for r in base]
    for a, b in zip(base, fast, strict=True):
        assert b.arrival_s == pytest.approx(a.arrival_s * 0.5)
    limited = list(build_workload("azure_conv", {"duration_s": 10.0}).requests())
    assert limited and max(r.arrival_s for r in limited) <= 10.0
    assert len(limited) == sum(1 for r in base if r.arrival_s <= 10.0)


@needs_data
def test_start_offset_skips_the_head_of_the_trace() -> None:
    full = take("azure_conv", 300)
    later = take("azure_conv", 10, start_s=30.0)
    skipped = [r for r in full if r.arrival_s >= 30.0]
    assert [r.request_id for r in later] == [r.request_id for r in skipped[:10]]
    assert later[0].arrival_s == pytest.approx(skipped[0].arrival_s - 30.0)


@needs_data
def test_rate_scale_thins_and_superposes_fixed_traces() -> None:
    n_base = len(list(build_workload("azure_code", {"duration_s": 300.0}).requests()))
    half = list(build_workload("azure_code", {"duration_s": 300.0, "rate_scale": 0.5}).requests())
    double = list(build_workload("azure_code", {"duration_s": 300.0, "rate_scale": 2.0}).requests())
    assert 0.4 * n_base < len(half) < 0.6 * n_base
    assert len(double) == 2 * n_base
    copies = [r for r in double if r.request_id.endswith("-c1")]
    originals = {r.request_id: r for r in double if not r.request_id.endswith("-c1")}
    twin = originals[copies[0].request_id.removesuffix("-c1")]
    assert twin.arrival_s == copies[0].arrival_s
    assert twin.body["messages"][0]["content"] != copies[0].body["messages"][0]["content"]


def test_rate_scale_multiplies_generator_rates() -> None:
    slow = list(build_workload("poisson", {"seed": 3}, {"rate_rps": "5", "span_s": "200"}).requests())
    fast = list(
        build_workload(
            "poisson", {"seed": 3, "rate_scale": 2.0}, {"rate_rps": "5", "span_s": "200"}
        ).requests()
    )
    assert 900 < len(slow) < 1100
    assert 1.8 < len(fast) / len(slow) < 2.2


@needs_data
@pytest.mark.parametrize(
    "name", ["mooncake_conversation", "sharegpt", "servegen", "gamma", "shared_prefix", "arxiv"]
)
def test_same_seed_same_workload_other_seed_differs(name: str) -> None:
    def fingerprint(seed: int) -> list[tuple[str, float, int, str]]:
        reqs = take(name, 50, seed=seed)
        return [(r.request_id, round(r.arrival_s, 9), r.true_output_tokens, r.tenant) for r in reqs]

    assert fingerprint(1) == fingerprint(1)
    assert fingerprint(1) != fingerprint(2)


def test_priority_and_tenant_mixes_follow_weights_and_seed() -> None:
    opts = {"priority_mix": {"critical": 1, "sheddable": 3}, "tenant_mix": {"a": 1, "b": 1}, "seed": 5}
    reqs = list(build_workload("poisson", opts, {"rate_rps": "50", "span_s": "40"}).requests())
    share = sum(r.priority == "critical" for r in reqs) / len(reqs)
    assert 0.2 < share < 0.3
    assert {r.tenant for r in reqs} == {"a", "b"}
    again = list(build_workload("poisson", opts, {"rate_rps": "50", "span_s": "40"}).requests())
    assert [(r.priority, r.tenant) for r in again] == [(r.priority, r.tenant) for r in reqs]


def test_max_tokens_modes_and_ignore_eos() -> None:
    true_mode = take("poisson", 5, max_tokens="true", ignore_eos=True)
    assert all(r.body["max_tokens"] == r.true_output_tokens and r.body["ignore_eos"] for r in true_mode)
    capped = take("poisson", 5, max_tokens=64)
    assert all(r.body["max_tokens"] == 64 for r in capped)


def test_step_overload_rates_per_level() -> None:
    params = {"capacity_rps": "20", "levels": "0.5,1,3", "step_s": "60"}
    reqs = list(build_workload("step", {"seed": 1}, params).requests())
    counts = [sum(1 for r in reqs if k * 60 <= r.arrival_s < (k + 1) * 60) for k in range(3)]
    for count, level in zip(counts, (0.5, 1.0, 3.0), strict=True):
        assert count == pytest.approx(level * 20 * 60, rel=0.15)


def test_spike_is_spike_factor_times_base() -> None:
    reqs = list(build_workload("spike", {"seed": 2}, {"base_rps": "10"}).requests())
    before = sum(1 for r in reqs if r.arrival_s < 60) / 60
    during = sum(1 for r in reqs if 60 <= r.arrival_s < 90) / 30
    after = sum(1 for r in reqs if r.arrival_s >= 90) / 60
    assert during / before == pytest.approx(10, rel=0.2)
    assert after == pytest.approx(before, rel=0.25)


def test_gamma_burstiness_sets_gap_cv() -> None:
    reqs = list(
        build_workload(
            "gamma", {"seed": 4}, {"rate_rps": "20", "span_s": "300", "burstiness": "0.25"}
        ).requests()
    )
    gaps = [b.arrival_s - a.arrival_s for a, b in itertools.pairwise(reqs)]
    cv = statistics.pstdev(gaps) / statistics.fmean(gaps)
    assert cv == pytest.approx(2.0, rel=0.2)  # 1/sqrt(k)
    assert len(reqs) / 300 == pytest.approx(20, rel=0.15)


def test_shared_prefix_groups_share_exactly_their_system_prompt() -> None:
    params = {"groups": "3", "per_group": "4", "system_tokens": "512", "question_tokens": "32"}
    reqs = list(build_workload("shared_prefix", {}, params).requests())
    assert len(reqs) == 12
    by_group: dict[str, set[str]] = {}
    for r in reqs:
        system, _question = r.body["messages"]
        by_group.setdefault(r.request_id.split("-")[1], set()).add(system["content"])
        assert estimate_tokens(prompt_text(r.endpoint, r.body)) == 512 + 32
    assert all(len(texts) == 1 for texts in by_group.values())
    assert len({next(iter(t)) for t in by_group.values()}) == 3
