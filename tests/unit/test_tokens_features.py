"""Token estimation, prompt rendering, prefix hashing and feature extraction."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core import tokens
from core.features import LAST_USER_TEXT_MAX_CHARS, build_features
from core.tokens import (
    PREFIX_CHUNK_CHARS,
    common_prefix_length,
    estimate_tokens,
    prefix_chunk_hashes,
    prefix_chunk_hashes_utf8,
    render_chat_prompt,
)
from core.types import Endpoint


def test_estimate_is_invertible_for_ascii() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd" * 100) == 100
    assert estimate_tokens("abcde") == 2


@given(st.text(max_size=500), st.text(max_size=500), st.text(min_size=1, max_size=300))
def test_shared_prefix_gives_shared_hashes(common: str, tail_a: str, tail_b: str) -> None:
    a = prefix_chunk_hashes(common + tail_a)
    b = prefix_chunk_hashes(common + tail_b)
    shared_chunks = len(common.encode("utf-8", "surrogatepass")) // PREFIX_CHUNK_CHARS
    assert common_prefix_length(a, b) >= shared_chunks


def test_different_first_chunk_shares_nothing_and_cap_applies() -> None:
    a = prefix_chunk_hashes("x" * 640)
    b = prefix_chunk_hashes("y" + "x" * 639)
    assert len(a) == 10
    assert common_prefix_length(a, b) == 0
    assert len(prefix_chunk_hashes("x" * 6400, max_chunks=5)) == 5


_U64 = (1 << 64) - 1


def _splitmix64_odd(j: int) -> int:
    z = (j + 0x9E3779B97F4A7C15) & _U64
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & _U64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & _U64
    z ^= z >> 31
    return z | 1


def _reference_hashes(
    text: str, chunk_chars: int = PREFIX_CHUNK_CHARS, max_chunks: int | None = None
) -> tuple[int, ...]:
    """The definition in ``core.tokens``' docstring, word by word in Python ints mod 2^64."""
    data = text.encode("utf-8", "surrogatepass")
    n_chunks = len(data) // chunk_chars
    if max_chunks is not None:
        n_chunks = min(n_chunks, max_chunks)
    words_per_chunk = chunk_chars // 8
    total = 0
    out: list[int] = []
    for j in range(max(n_chunks, 0) * words_per_chunk):
        x = (int.from_bytes(data[8 * j : 8 * j + 8], "little") * _splitmix64_odd(j)) & _U64
        total = (total + (x ^ (x >> 29))) & _U64
        if (j + 1) % words_per_chunk == 0:
            out.append(total)
    return tuple(out)


_CHUNK_SIZES = st.sampled_from([8, 16, 24, 64, 128])
_CAPS = st.one_of(st.none(), st.integers(min_value=-1, max_value=40))


@given(st.text(max_size=1_500), _CHUNK_SIZES, _CAPS)
def test_hashes_follow_the_definition(text: str, chunk_chars: int, max_chunks: int | None) -> None:
    """Whichever implementation this build runs (compiled: the loop; pure Python: numpy)."""
    expected = _reference_hashes(text, chunk_chars, max_chunks)
    assert prefix_chunk_hashes(text, chunk_chars, max_chunks) == expected
    encoded = text.encode("utf-8", "surrogatepass")
    assert prefix_chunk_hashes_utf8(encoded, chunk_chars, max_chunks) == expected
    assert all(type(h) is int and 0 <= h <= _U64 for h in expected)


@pytest.mark.parametrize("chunk_chars", [0, -8, 12])
def test_chunk_sizes_that_are_not_whole_words_are_rejected(chunk_chars: int) -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        prefix_chunk_hashes("x" * 100, chunk_chars)
    with pytest.raises(ValueError, match="multiple of 8"):
        prefix_chunk_hashes_utf8(b"x" * 100, chunk_chars)


@pytest.mark.skipif(
    not tokens._COMPILED, reason="the loop wraps mod 2^64 only when compiled (pure Python: numpy)"
)
@given(st.binary(max_size=3_000), _CHUNK_SIZES)
@example((-113).to_bytes(8, "little", signed=True) * 16, 64)  # read_i64_le's error sentinel as a word
@example(b"\xff" * 1_024, 8)
def test_compiled_loop_equals_numpy_pass(data: bytes, chunk_chars: int) -> None:
    n_chunks = len(data) // chunk_chars
    if n_chunks == 0:
        return
    words_per_chunk = chunk_chars // 8
    loop = tokens._chained_sums_loop(data, n_chunks, words_per_chunk)
    assert loop == tokens._chained_sums_numpy(data, n_chunks, words_per_chunk)
    assert loop == tokens._chained_sums_numpy(data[: n_chunks * chunk_chars], n_chunks, words_per_chunk)


def test_hashes_beyond_the_multiplier_table_and_at_the_cap() -> None:
    """Prompts beyond the multiplier table (the simulator hashes uncapped) extend it: same multipliers."""
    rng = random.Random(7)
    text = "".join(rng.choice("ab c\u00e9\u4e2d") for _ in range(50_000))  # ~75 kB: > 1,024 chunks
    data = text.encode("utf-8")
    n_chunks = len(data) // PREFIX_CHUNK_CHARS
    assert n_chunks > tokens._MAX_TABLE_CHUNKS
    full = prefix_chunk_hashes(text)
    assert full == _reference_hashes(text)
    assert prefix_chunk_hashes(text, PREFIX_CHUNK_CHARS, 1_024) == full[:1_024]
    assert tokens._chained_sums_numpy(data, n_chunks, 8) == full


def _golden_cases() -> list[tuple[str, int, int | None]]:
    """Texts, chunk sizes and caps at every boundary of the hash (fixed seed: the recorded digest's input)."""
    rng = random.Random(20261129)
    alphabet = "abcdefgh ij\n.,0123456789\u00e9\u07f7\u4e2d\U0001f600\u00ff\U0010ffff"
    cases: list[tuple[str, int, int | None]] = []
    for chunk_chars in (8, 16, 64, 128):
        for n_bytes in (
            0,
            7,
            8,
            9,
            chunk_chars - 1,
            chunk_chars,
            chunk_chars + 1,
            5 * chunk_chars + 3,
            3_000,
        ):
            cases.append(("".join(rng.choice("abcdefgh ij") for _ in range(n_bytes)), chunk_chars, None))
            cases.append(("".join(rng.choice(alphabet) for _ in range(n_bytes)), chunk_chars, None))
        for cap in (0, 1, 3, 1_024):
            cases.append(("".join(rng.choice(alphabet) for _ in range(2_000)), chunk_chars, cap))
    cases.append(("x\ud800y" * 300, 64, None))  # a lone surrogate: encoded with surrogatepass
    cases.append(("".join(rng.choice("abcdefgh ij") for _ in range(70_000)), 64, None))  # beyond the table
    cases.append(("".join(rng.choice("abcdefgh ij") for _ in range(70_000)), 64, 1_024))  # the hot path's cap
    return cases


def test_hashes_are_the_recorded_ones() -> None:
    """The same hashes as the numpy-only ``prefix_chunk_hashes`` of git b698553 (recorded there, both builds).

    The simulator's KV cache and the prefix index of a running proxy key on these values: a change of
    definition must be deliberate (and re-recorded), never a side effect of a faster implementation.
    """
    outputs = [prefix_chunk_hashes(text, chunk, cap) for text, chunk, cap in _golden_cases()]
    assert sum(map(len, outputs)) == 4_292
    assert outputs[20][:3] == (794121861065243657, 18378608365600372137, 9924915881428976207)
    digest = hashlib.sha256(repr(outputs).encode()).hexdigest()
    assert digest == "ec14e8e96fb625204db2fe1fad3dc2b43995d763e5d7f5bb16cb08befa06f9b9"


def test_multi_turn_history_is_a_textual_extension() -> None:
    turn1 = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi " * 50}]
    turn2 = [*turn1, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]
    assert render_chat_prompt(turn2).startswith(render_chat_prompt(turn1))


def test_chat_features_with_parts_and_unknown_fields() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url"}]},
            {"role": "assistant", "content": None},
            {"role": "user", "content": "x" * 5000},
        ],
        "max_completion_tokens": 64,
        "stream": True,
        "weird": {"kept": True},
    }
    f = build_features(
        request_id="r1",
        endpoint=Endpoint.CHAT,
        body=body,
        route="default",
        tenant="t",
        priority="standard",
        arrival_s=1.0,
    )
    assert f.model == "m" and f.stream and f.max_tokens == 64
    assert f.n_messages == 4 and f.n_user_turns == 2
    assert len(f.last_user_text) == LAST_USER_TEXT_MAX_CHARS
    assert f.prompt_tokens == estimate_tokens(render_chat_prompt(body["messages"]))


def test_completion_and_embedding_features() -> None:
    f = build_features(
        request_id="r",
        endpoint=Endpoint.COMPLETIONS,
        body={"model": "m", "prompt": ["ab", "cd"]},
        route="d",
        tenant="t",
        priority="p",
        arrival_s=0.0,
    )
    assert f.prompt_chars == 4 and f.max_tokens is None and not f.stream
    e = build_features(
        request_id="r",
        endpoint=Endpoint.EMBEDDINGS,
        body={"model": "m", "input": [1, 2, 3]},
        route="d",
        tenant="t",
        priority="p",
        arrival_s=0.0,
    )
    assert e.prompt_chars == len("1 2 3")


_MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", 3]),
            "content": st.one_of(
                st.text(max_size=80),
                st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)})),
                st.none(),
            ),
        }
    ),
    st.text(max_size=5),  # malformed entries are skipped when rendering, but counted as messages
)


@given(st.lists(_MESSAGE, max_size=8))
def test_chat_features_equal_the_rendered_prompt_and_its_user_turns(messages: list[object]) -> None:
    f = build_features(
        request_id="r",
        endpoint=Endpoint.CHAT,
        body={"model": "m", "messages": messages},
        route="default",
        tenant="t",
        priority="standard",
        arrival_s=0.0,
    )
    text = render_chat_prompt(messages)
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    assert f.prompt_chars == len(text)
    assert f.prompt_tokens == estimate_tokens(text)
    assert f.prefix_hashes == prefix_chunk_hashes(text)[: len(f.prefix_hashes)]
    assert f.n_messages == len(messages)
    assert f.n_user_turns == len(users)
    expected_last = render_chat_prompt([users[-1]]).removeprefix("user\n")[:-2] if users else ""
    assert (
        f.last_user_text == expected_last[:LAST_USER_TEXT_MAX_CHARS]
        or len(expected_last) > LAST_USER_TEXT_MAX_CHARS
    )
