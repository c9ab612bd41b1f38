"""Fidelity of the simulated engine: step times, batching, KV pressure, prefix reuse, macro-steps."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.tokens import prefix_chunk_hashes
from loadgen.sim.engine import SimEngine
from loadgen.sim.profile import GpuProfile, load_profile
from loadgen.sim.request import SimRequest, Status

H100 = load_profile("h100-llama3.1-8b")
L4 = load_profile("l4-llama3.1-8b")


def small(profile: GpuProfile = H100, **scheduler: int) -> GpuProfile:
    """The profile with a tiny KV cache and the given scheduler limits."""
    blocks = scheduler.pop("num_blocks", 64)
    limits = {"max_model_len": 16 * blocks, **scheduler}
    return profile.with_overrides({"kv_cache": {"num_blocks": blocks}, "scheduler": limits})


def req(rid: str, text: str, out: int) -> SimRequest:
    return SimRequest(rid, (len(text) + 3) // 4, prefix_chunk_hashes(text), out)


def unique_text(tag: str, tokens: int) -> str:
    body = (tag + "-" + "x" * 64) * (tokens // 16 + 2)
    return body[: tokens * 4]


def test_step_time_follows_profile_formula() -> None:
    model = H100.step_time
    engine = SimEngine(H100)
    r = req("a", unique_text("a", 1000), 3)
    engine.add_request(r, 0.0)
    engine.advance_until(10.0)
    t = r.token_times
    assert r.first_token_s == pytest.approx((model.base_us + 1000 * model.prefill_us_per_token) * 1e-6)
    decode_s = (model.base_us + model.decode_us_per_token) * 1e-6
    assert t[1] - t[0] == pytest.approx(decode_s)
    assert t[2] - t[1] == pytest.approx(decode_s)


def test_attention_term_grows_decode_steps_with_context() -> None:
    model = L4.step_time
    engine = SimEngine(L4)
    r = req("a", unique_text("a", 2000), 4)
    engine.add_request(r, 0.0)
    engine.advance_until(100.0)
    gaps = r.itl_s()
    # step j computes the token at context 2000 + j: each gap is one context token longer
    per_ctx_us = model.decode_us_per_context_token
    fixed_us = model.base_us + model.decode_us_per_token
    expected = [(fixed_us + per_ctx_us * (2001 + j)) * 1e-6 for j in range(3)]
    assert gaps == pytest.approx(expected)
    assert gaps[2] - gaps[1] == pytest.approx(model.decode_us_per_context_token * 1e-6)


@pytest.mark.parametrize("batch", [1, 8, 64, 200])
def test_fixed_batch_decode_throughput_matches_analytic(batch: int) -> None:
    model = H100.step_time
    engine = SimEngine(H100)
    reqs = [req(f"r{i}", unique_text(f"r{i}", 200), 300) for i in range(batch)]
    for r in reqs:
        engine.add_request(r, 0.0)
    engine.advance_until(1e6)
    # the decode phase: from the last first-token to the first finish, every step holds the whole batch
    start = max(r.token_times[0] for r in reqs)
    end = min(r.token_times[-1] for r in reqs)
    tokens = sum(sum(1 for t in r.token_times if start < t <= end) for r in reqs)
    measured_tok_s = tokens / (end - start)
    analytic_tok_s = batch / ((model.base_us + model.decode_us_per_token * batch) * 1e-6)
    assert measured_tok_s == pytest.approx(analytic_tok_s, rel=0.02)


def test_chunked_prefill_respects_token_budget() -> None:
    profile = H100.with_overrides({"scheduler": {"max_num_batched_tokens": 512}})
    model = profile.step_time
    engine = SimEngine(profile)
    r = req("a", unique_text("a", 1300), 2)
    engine.add_request(r, 0.0)
    engine.advance_until(10.0)
    # 1300 tokens in chunks of 512, 512, 276; the first token comes with the last chunk
    expected = sum(model.base_us + model.prefill_us_per_token * n for n in (512, 512, 276)) * 1e-6
    assert r.first_token_s == pytest.approx(expected)
    assert engine.steps_total == 4


def test_max_num_seqs_caps_the_batch() -> None:
    engine = SimEngine(H100.with_overrides({"scheduler": {"max_num_seqs": 4}}))
    reqs = [req(f"r{i}", unique_text(f"r{i}", 100), 20) for i in range(6)]
    for r in reqs:
        engine.add_request(r, 0.0)
    engine.next_step_end_s()
    assert engine.num_running == 4
    assert engine.num_waiting == 2
    engine.advance_until(100.0)
    # the last two start only when the first four finish
    assert min(r.first_token_s or 0 for r in reqs[4:]) > max(r.finished_s or 0 for r in reqs[:4]) - 1e-12


def worst_ttft_at_concurrency(n: int) -> float:
    """Worst TTFT of ``n`` simultaneous 240-token prompts x 10 outputs on a 64-block cache."""
    engine = SimEngine(small(num_blocks=64))
    reqs = [req(f"r{i}", unique_text(f"c{i}", 240), 10) for i in range(n)]
    for r in reqs:
        engine.add_request(r, 0.0)
    engine.advance_until(1e6)
    assert all(r.status is Status.FINISHED for r in reqs)
    return max((r.first_token_s or 0) for r in reqs)


def test_ttft_knee_when_kv_blocks_run_out() -> None:
    # each request holds 15 blocks of prompt and grows to 16: four fit in 64 blocks; the fifth
    # waits in the queue until one of them finishes its whole generation
    ttft = {n: worst_ttft_at_concurrency(n) for n in range(1, 9)}
    prefill_s = 240 * H100.step_time.prefill_us_per_token * 1e-6
    decode_step_s = (H100.step_time.base_us + 4 * H100.step_time.decode_us_per_token) * 1e-6
    for n in range(2, 5):  # compute-bound: each request adds its prefill to one batched step
        assert ttft[n] - ttft[n - 1] == pytest.approx(prefill_s), ttft
    # memory-bound: the fifth is queued until a whole generation (10 tokens) frees blocks
    assert ttft[5] - ttft[4] > 9 * decode_step_s, ttft
    assert ttft[8] >= ttft[5]


def test_preemption_under_memory_pressure_recomputes_and_completes() -> None:
    engine = SimEngine(small(num_blocks=40))
    reqs = [req(f"r{i}", unique_text(f"p{i}", 160), 200) for i in range(4)]  # 10 -> 23 blocks each
    for r in reqs:
        engine.add_request(r, 0.0)
    engine.advance_until(1e6)
    stats = engine.stats()
    assert stats.preemptions_total > 0
    assert sum(r.num_preemptions for r in reqs) == stats.preemptions_total
    for r in reqs:
        assert r.status is Status.FINISHED
        assert len(r.token_times) == r.output_target == 200
        assert list(r.token_times) == sorted(r.token_times)
    engine.pool.check_invariants()
    assert engine.pool.usage_frac == 0.0


def test_prefix_hit_rate_equals_blocks_actually_reused() -> None:
    system = unique_text("system", 640)  # 40 full blocks shared
    engine = SimEngine(H100)
    reqs = [req(f"r{i}", system + unique_text(f"q{i}", 100), 5) for i in range(5)]
    for i, r in enumerate(reqs):
        engine.add_request(r, i * 1.0)  # one after the other: the prefix stays cached
    engine.advance_until(1e6)
    stats = engine.stats()
    assert [r.cached_tokens for r in reqs] == [0] + [640] * 4
    assert stats.prefix_cache_hits_tokens == 4 * 640
    assert stats.prefix_cache_queries_tokens == sum(r.prompt_tokens for r in reqs)
    # what was not reused was computed: hits + computed prefill == queried tokens
    assert (
        stats.prefill_tokens_computed_total
        == stats.prefix_cache_queries_tokens - stats.prefix_cache_hits_tokens
    )


def test_lru_eviction_drops_the_least_recently_freed_prefix() -> None:
    engine = SimEngine(small(num_blocks=30))
    a, b = unique_text("A", 320), unique_text("B", 320)  # 20 blocks each
    first = req("a1", a, 1)
    engine.add_request(first, 0.0)
    engine.advance_until(1.0)
    second = req("b1", b, 1)  # needs 21 blocks: evicts 11 of A's cached blocks (A's tail first)
    engine.add_request(second, 1.0)
    engine.advance_until(2.0)
    again = req("a2", a, 1)
    engine.add_request(again, 2.0)
    engine.advance_until(3.0)
    assert engine.pool.evictions_total > 0
    assert 0 < again.cached_tokens < 320  # the head of A survived, its tail was evicted


def test_full_prompt_hit_still_recomputes_the_last_token() -> None:
    engine = SimEngine(H100)
    text = unique_text("same", 320)  # exactly 20 blocks
    one, two = req("1", text, 2), req("2", text, 2)
    engine.add_request(one, 0.0)
    engine.advance_until(1.0)
    engine.add_request(two, 1.0)
    engine.advance_until(2.0)
    assert two.cached_tokens == 19 * 16
    prefill_s = (H100.step_time.base_us + 16 * H100.step_time.prefill_us_per_token) * 1e-6
    assert (two.first_token_s or 0) - 1.0 == pytest.approx(prefill_s)


def test_abort_frees_blocks_and_stops_tokens() -> None:
    engine = SimEngine(H100)
    r = req("a", unique_text("a", 500), 1000)
    engine.add_request(r, 0.0)
    engine.advance_until(0.5)
    produced = len(r.token_times)
    engine.abort(r, 0.5)
    engine.advance_until(10.0)
    assert r.status is Status.ABORTED
    assert len(r.token_times) == produced
    assert engine.pool.usage_frac == 0.0
    assert engine.next_step_end_s() is None


def run_workload(seed: int, macro: bool, blocks: int = 48) -> list[SimRequest]:
    rng = random.Random(seed)
    engine = SimEngine(small(num_blocks=blocks, max_num_seqs=6, max_num_batched_tokens=96), macro_steps=macro)
    reqs: list[SimRequest] = []
    t = 0.0
    shared = unique_text("shared", 128)
    for i in range(25):
        t += rng.expovariate(20.0)
        prompt = (shared if rng.random() < 0.5 else "") + unique_text(f"w{seed}-{i}", rng.randint(1, 200))
        prompt = prompt[: 4 * (16 * blocks - 1)]  # the API layer keeps prompt + output <= max_model_len
        out = min(rng.randint(1, 150), 16 * blocks - (len(prompt) + 3) // 4)
        r = req(f"r{i}", prompt, out)
        engine.add_request(r, t)
        reqs.append(r)
        if rng.random() < 0.1 and len(reqs) > 2:
            victim = reqs[rng.randrange(len(reqs))]
            engine.abort(victim, t)
    engine.advance_until(t + 1e6)
    engine.pool.check_invariants()
    assert engine.pool.usage_frac == 0.0
    return reqs


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=24, max_value=64))
def test_macro_steps_reproduce_single_steps_exactly(seed: int, blocks: int) -> None:
    macro = run_workload(seed, macro=True, blocks=blocks)
    single = run_workload(seed, macro=False, blocks=blocks)
    for a, b in zip(macro, single, strict=True):
        assert (a.request_id, a.status, a.num_preemptions, a.cached_tokens) == (
            b.request_id,
            b.status,
            b.num_preemptions,
            b.cached_tokens,
        )
        assert list(a.token_times) == pytest.approx(list(b.token_times), abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=20, max_value=80))
def test_every_request_gets_exactly_its_tokens_under_any_pressure(seed: int, blocks: int) -> None:
    for r in run_workload(seed, macro=True, blocks=blocks):
        times = list(r.token_times)
        assert times == sorted(times), r
        if r.status is Status.FINISHED:
            assert len(times) == r.output_target, r
        else:
            assert r.status is Status.ABORTED and len(times) < r.output_target, r
