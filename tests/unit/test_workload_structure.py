"""Structure the traces must keep: Mooncake prefix sharing, ShareGPT growing history, ServeGen tenants."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from core.tokens import CHARS_PER_TOKEN, estimate_tokens, render_chat_prompt
from loadgen.workloads import build_workload
from loadgen.workloads.mooncake import BLOCK_TOKENS, FILES, read_rows
from loadgen.workloads.servegen import WINDOW_S, ArrivalWindow, LengthSummary, read_arrivals, window_times
from tests.loadgen_support import DATA_DIR, needs_data

BLOCK_CHARS = BLOCK_TOKENS * CHARS_PER_TOKEN


def _block_hit_ratio(sequences: list[tuple[int, ...]]) -> float:
    """README's rule: each request hits the longest prefix of its blocks seen before (unbounded cache)."""
    seen: set[tuple[int, ...]] = set()
    hits = total = 0
    for seq in sequences:
        total += len(seq)
        k = 0
        while k < len(seq) and seq[: k + 1] in seen:
            k += 1
        hits += k
        seen.update(seq[: i + 1] for i in range(len(seq)))
    return hits / total


@needs_data
@pytest.mark.parametrize(("kind", "readme_ratio"), [("conversation", 0.366), ("synthetic", 0.640)])
def test_mooncake_hash_ids_reproduce_the_readme_hit_ratio(kind: str, readme_ratio: float) -> None:
    rows = read_rows(DATA_DIR / FILES[kind])
    assert _block_hit_ratio([r.hash_ids for r in rows]) == pytest.approx(readme_ratio, abs=0.002)


@needs_data
def test_mooncake_text_shares_exactly_the_blocks_the_ids_share() -> None:
    reqs = list(
        build_workload("mooncake_conversation", {"max_requests": 400, "endpoint": "completions"}).requests()
    )
    rows = {f"mooncake-conversation-{r.index:06d}": r for r in read_rows(DATA_DIR / FILES["conversation"])}
    text_blocks = []
    for req in reqs:
        text = req.body["prompt"]
        blocks = tuple(text[i : i + BLOCK_CHARS] for i in range(0, len(text), BLOCK_CHARS))
        text_blocks.append(blocks)
        assert len(blocks) == len(rows[req.request_id].hash_ids)
    id_ratio = _block_hit_ratio([rows[r.request_id].hash_ids for r in reqs])
    # Text blocks keyed by content: a hit needs the same text at the same position after the same prefix.
    text_ids = {b: i for i, b in enumerate({b for blocks in text_blocks for b in blocks})}
    text_ratio = _block_hit_ratio([tuple(text_ids[b] for b in blocks) for blocks in text_blocks])
    # Equal up to partial last blocks: ids count them as hits, text only if the cut matches.
    assert text_ratio == pytest.approx(id_ratio, abs=0.02)
    assert id_ratio > 0.1


@needs_data
def test_mooncake_equal_leading_ids_give_equal_leading_text() -> None:
    reqs = list(build_workload("mooncake_conversation", {"max_requests": 300}).requests())
    rows = {f"mooncake-conversation-{r.index:06d}": r for r in read_rows(DATA_DIR / FILES["conversation"])}
    texts = {r.request_id: r.body["messages"][0]["content"] for r in reqs}
    multi_block_pairs = 0
    for a, b in itertools.combinations(reqs, 2):
        ids_a, ids_b = rows[a.request_id].hash_ids, rows[b.request_id].hash_ids
        ta, tb = texts[a.request_id], texts[b.request_id]
        for k in range(min(len(ids_a), len(ids_b))):
            block_a, block_b = (
                ta[k * BLOCK_CHARS : (k + 1) * BLOCK_CHARS],
                tb[k * BLOCK_CHARS : (k + 1) * BLOCK_CHARS],
            )
            if ids_a[k] != ids_b[k]:
                assert block_a[:64] != block_b[:64]  # different ids differ from their first characters
                break
            # Equal ids: equal text, except that a request's last block is cut to its length.
            shorter = min(len(block_a), len(block_b))
            assert block_a[:shorter] == block_b[:shorter]
            multi_block_pairs += k == 1
    assert multi_block_pairs > 0


@needs_data
def test_mooncake_buckets_are_spread_within_three_seconds() -> None:
    rows = read_rows(DATA_DIR / FILES["conversation"])[:500]
    trace_t = {f"mooncake-conversation-{r.index:06d}": r.t_s for r in rows}
    reqs = list(build_workload("mooncake_conversation", {"max_requests": 300}).requests())
    offsets = [r.arrival_s - trace_t[r.request_id] for r in reqs]
    assert all(0.0 <= off < 3.0 for off in offsets)
    assert len({round(r.arrival_s, 6) for r in reqs}) == len(reqs)
    unspread = list(
        build_workload("mooncake_conversation", {"max_requests": 50}, {"bucket_spread_s": "0"}).requests()
    )
    assert all(r.arrival_s == trace_t[r.request_id] for r in unspread)


@needs_data
def test_sharegpt_history_grows_with_real_replies() -> None:
    reqs = list(build_workload("sharegpt", {"max_requests": 400}, {"think_time_mean_s": "4"}).requests())
    by_id = {r.request_id: r for r in reqs}
    followers = [r for r in reqs if r.after_request_id is not None and r.after_request_id in by_id]
    assert len(followers) > 50
    for turn in followers:
        parent = by_id[turn.after_request_id]
        prev, cur = parent.body["messages"], turn.body["messages"]
        assert turn.session_id == parent.session_id
        assert cur[: len(prev)] == prev
        reply, question = cur[len(prev)], cur[len(prev) + 1]
        assert (reply["role"], question["role"]) == ("assistant", "user")
        assert len(cur) == len(prev) + 2
        assert turn.arrival_s == pytest.approx(parent.arrival_s + turn.think_time_s)
        assert render_chat_prompt(cur).startswith(render_chat_prompt(prev))
        assert estimate_tokens(render_chat_prompt(cur)) > estimate_tokens(render_chat_prompt(prev))
    assert [r.arrival_s for r in reqs] == sorted(r.arrival_s for r in reqs)
    first_turns = [r for r in reqs if r.after_request_id is None]
    assert all(r.body["messages"][-1]["role"] == "user" for r in reqs)
    assert len({r.session_id for r in first_turns}) == len(first_turns)


@needs_data
def test_sharegpt_output_length_is_the_real_reply_length() -> None:
    import gzip

    import orjson

    with gzip.open(DATA_DIR / "sharegpt/sharegpt_v3_first17671.jsonl.gz") as handle:
        first = orjson.loads(handle.readline())
    reqs = list(build_workload("sharegpt", {"max_requests": 3}, {"session_rate_rps": "0.001"}).requests())
    own = [r for r in reqs if r.session_id == f"sharegpt-{first['id']}"]
    assistants = [m["n_tokens"] for m in first["messages"] if m["role"] == "assistant"]
    assert [r.true_output_tokens for r in own] == assistants[: len(own)]
    assert own[0].body["messages"][0]["content"] == first["messages"][0]["text"]


@needs_data
def test_servegen_tenants_are_clients_and_rates_follow_the_windows() -> None:
    windows = read_arrivals(DATA_DIR / "servegen/client_arrival_windows.csv.gz", "deepseek-r1", 0.0, 1200.0)
    expected = sum(w.rate_rps * WINDOW_S for w in windows)
    params = {"model": "deepseek-r1", "span_s": "1200"}
    reqs = list(build_workload("servegen", {"seed": 3}, params).requests())
    assert len(reqs) == pytest.approx(expected, rel=0.05)
    tenants = Counter(r.tenant for r in reqs)
    assert len(tenants) > 10
    assert all(t.startswith("client-") for t in tenants)
    totals: Counter[str] = Counter()
    for w in windows:
        totals[w.client_id] += w.rate_rps
    top2 = list(build_workload("servegen", {"seed": 3}, {**params, "clients": "top:2"}).requests())
    assert {r.tenant for r in top2} == {f"client-{c}" for c, _ in totals.most_common(2)}


def test_servegen_window_rescaling_keeps_count_and_window() -> None:
    import random

    window = ArrivalWindow("7", 1200.0, 0.5, "Weibull", 0.4)
    times = window_times(random.Random(1), window, 300)
    assert len(times) == 300
    assert all(1200.0 <= t < 1200.0 + WINDOW_S for t in times)
    assert times == sorted(times)


def test_length_summary_matches_published_quantiles() -> None:
    import random

    summary = LengthSummary(mean=150.0, p50=73.0, p90=196.0, p99=1857.0, max=2576.0)
    rng = random.Random(0)
    draws = sorted(summary.sample(rng) for _ in range(20_000))
    assert draws[len(draws) // 2] == pytest.approx(73, rel=0.05)
    assert draws[int(len(draws) * 0.9)] == pytest.approx(196, rel=0.05)
    assert max(draws) <= 2576
    # Where the quantiles leave room, p0 is chosen so the mean is the published one.
    roomy = LengthSummary(mean=300.0, p50=250.0, p90=500.0, p99=900.0, max=1200.0)
    draws = [roomy.sample(rng) for _ in range(40_000)]
    assert sum(draws) / len(draws) == pytest.approx(300, rel=0.03)
