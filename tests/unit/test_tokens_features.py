"""Token estimation, prompt rendering, prefix hashing and feature extraction."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from core.features import LAST_USER_TEXT_MAX_CHARS, build_features
from core.tokens import (
    PREFIX_CHUNK_CHARS,
    common_prefix_length,
    estimate_tokens,
    prefix_chunk_hashes,
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
