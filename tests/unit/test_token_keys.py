"""Token keys: the compiled key scan, the keys made from token strings and the predictions they give.

``length_features`` (compiled) makes a row's 64-bit token keys straight from the text's code points
(``features._scanned_row``) and no token strings; the online feature table is bound with the same
key function from the model's token strings (``features.token_key``). So the scan must give exactly
the keys of the tokens ``split_text`` gives, the bundled model's terms must not share keys, and the
table's scores must equal the offline model's string-keyed dicts. Runs in both builds (the scan is
interpreted in the pure-Python one, where ``length_features`` uses the regex and ``str`` hashes).
"""

from __future__ import annotations

import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import PredictorsConfig
from predictors import Predictor
from predictors.features import (
    HEAD_CHARS,
    HEAD_TOKENS,
    TAIL_CHARS,
    LengthFeatureRow,
    _code_point_key,
    _is_wide_space,
    _scanned_row,
    _str_key,
    categorical_keys,
    count_char,
    length_features,
    length_token_features,
    normalise_model,
    split_text,
    token_key,
)
from predictors.online_features import OnlineFeatureWeights, _pair_key
from predictors.persistence import load_default_model
from predictors.refit import compact_entry, entry_row
from predictors.training_data import TrainingDataError, load_samples
from tests.unit.length_fixtures import chat_features

_ALPHABET = [chr(c) for c in range(128)] + [*"\x85\xa0\u2028\u3000éÉ中ж🤖İKΣς\u6574"]


def _scan_equals_tokens(text: str) -> None:
    head, tail = split_text(text)
    row = _scanned_row(text, ())
    assert list(row.keys) == [_code_point_key(t) for t in head + tail], repr(text)
    assert row.n_head == len(head)
    assert row.head == head and row.tail == tail  # made from the text on first read


def test_key_scan_equals_the_tokens_keys_on_every_character() -> None:
    """Every character below U+3100 and every whitespace code point, alone and inside words, in
    the head and (past ``HEAD_CHARS``) in the tail; ASCII text is lowered in place, the rest sliced."""
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    filler = "x " * (HEAD_CHARS // 2)
    for char in [chr(c) for c in range(0x3100) if not 0xD800 <= c <= 0xDFFF] + spaces:
        for text in (char, f"Ab{char}c'D", char * 3, f"{char} 9"):
            _scan_equals_tokens(text)
            _scan_equals_tokens(filler + text)


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet=st.sampled_from(_ALPHABET), max_size=HEAD_CHARS + 2 * TAIL_CHARS + 40))
def test_key_scan_equals_the_tokens_keys_on_any_text(text: str) -> None:
    _scan_equals_tokens(text)


def test_wide_space_set_is_str_isspace() -> None:
    """The scan's whitespace test above ASCII is ``str.isspace`` on every code point (a Python whose
    Unicode adds a whitespace character fails here)."""
    assert [c for c in range(128, 0x110000) if _is_wide_space(c)] == [
        c for c in range(128, 0x110000) if chr(c).isspace()
    ]


def test_long_and_capped_slices() -> None:
    words = " ".join(f"Word{i}" for i in range(400))
    for text in (words, "中" * 500, "a," * 300, "x" * 5_000, "end'" * 70):
        _scan_equals_tokens(text)


def test_length_features_equal_the_row_of_the_token_strings() -> None:
    """The request path's row (keys only, compiled) is the row of ``split_text``'s tokens: equal, the
    same keys, pickled and printed as its tokens."""
    for text in ("Write a detailed essay about Rivers, please!", "", "中文 text " * 40, "x" * 300):
        features = chat_features(text, "Org/Model-X")
        row = length_features(features)
        head, tail = split_text(text)
        plain = LengthFeatureRow(head, tail, categorical_keys(features, normalise_model(features.model)))
        assert list(row.keys) == list(plain.keys) == [token_key(t) for t in head + tail]
        assert row.n_head == plain.n_head and row.text_value == plain.text_value
        assert row == plain
        copy = pickle.loads(pickle.dumps(row))
        assert copy == row and list(copy.keys) == list(row.keys)
        assert repr(row) == repr(plain)
    assert length_features(chat_features("a b")) != length_features(chat_features("a c"))


def test_a_row_needs_tokens_or_keys() -> None:
    with pytest.raises(ValueError, match="token lists"):
        LengthFeatureRow(None, None, ())
    with pytest.raises(ValueError, match="token lists"):
        LengthFeatureRow(["a"], None, ())


def test_keys_are_never_zero_and_both_key_functions_separate_equal_str_hashes() -> None:
    """``"te"`` and ``"\\u6574"`` have equal ``str`` hashes (the same bytes inside CPython)."""
    for fn in (_code_point_key, _str_key):
        assert fn("te") != fn("\u6574") and fn("\x00\x01") != fn("\u0100")
        assert all(fn(chr(c)) != 0 for c in range(0x3100))


def test_bundled_vocabulary_keys_are_distinct() -> None:
    """No two terms of the bundled model share a key (they would share weights), with either key
    function: the tokens, and the pairs of every first token."""
    model = load_default_model()
    tokens = set(model.unigrams) | set(model.bigrams) | {b for inner in model.bigrams.values() for b in inner}
    for fn in (_code_point_key, _str_key):
        keys = {fn(t) for t in tokens}
        assert len(keys) == len(tokens)
        pairs = {_pair_key(fn(a), fn(b)) for a, inner in model.bigrams.items() for b in inner}
        assert len(pairs) == sum(len(inner) for inner in model.bigrams.values())


def test_real_prompt_tokens_keys_are_distinct() -> None:
    """Every distinct token of the real prompts' slices (~5x10^4): no code-point key collision."""
    try:
        samples = load_samples(["sharegpt", "alpaca_eval", "hh_rlhf"])
    except TrainingDataError:
        pytest.skip("shared data not available")
    tokens: set[str] = set()
    for sample in samples:
        head, tail = split_text(sample.features.last_user_text)
        tokens.update(head)
        tokens.update(tail)
    assert len({_code_point_key(t) for t in tokens}) == len(tokens)


def _prompts() -> list[str]:
    try:
        samples = load_samples(["sharegpt", "alpaca_eval"])
        rng = random.Random(3)
        return [s.features.last_user_text for s in rng.sample(samples, 1_500)]
    except TrainingDataError:
        rng = random.Random(3)
        words = ["Write", "a", "story", "about", "rivers", ",", "中文", "why?", "`code`", "don't", "Σίσυφος"]
        return [" ".join(rng.choices(words, k=rng.randint(0, 200))) for _ in range(1_500)]


def test_table_scores_of_keyed_rows_equal_the_models_string_dicts() -> None:
    """The bundled model bound into the key table scores every request's keyed row exactly as
    ``OutputLengthModel.location_scale`` scores its token strings: the predictions do not change."""
    model = load_default_model()
    weights = OnlineFeatureWeights()
    weights.bind(model)
    for text in _prompts():
        features = chat_features(text, "meta-llama/Meta-Llama-3-8B-Instruct")
        row = length_features(features)
        head, tail = split_text(text)
        strings = LengthFeatureRow(list(head), list(tail), row.categorical)
        assert weights.location_scale_score(row)[:2] == model.location_scale(strings)


def test_predictor_learns_the_same_from_keyed_and_string_rows() -> None:
    """Two predictors, one learning from keyed rows (the request path), one from rows rebuilt from
    token strings: every prediction and every learned step bit-equal."""
    rng = random.Random(9)
    keyed, plain = Predictor.from_config(PredictorsConfig()), Predictor.from_config(PredictorsConfig())
    for i, text in enumerate(_prompts()[:600]):
        features = chat_features(text, "m", tenant=f"t{i % 3}")
        assert keyed.predict_length(features) == plain.predict_length(features)
        kept = plain._rows[features.request_id]
        plain._rows[features.request_id] = LengthFeatureRow(*split_text(text), kept.categorical)
        tokens = rng.randint(1, 900)
        keyed.observe_length(features, tokens)
        plain.observe_length(features, tokens)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(_ALPHABET), max_size=HEAD_CHARS + 2 * TAIL_CHARS + 40))
def test_the_refits_entry_keeps_the_row(text: str) -> None:
    """The refit's reservoir stores a request's two slices as text (``compact_entry``, no tokenizing
    on the loop); the worker's row (``entry_row``) has the request's tokens."""
    features = chat_features(text)
    row = length_features(features)
    again = entry_row(compact_entry(row, 3, 2.0))
    assert again == row and list(again.keys) == list(row.keys)
    plain = LengthFeatureRow(*split_text(text), row.categorical)  # a row of tokens: joined by spaces
    assert entry_row(compact_entry(plain, 3, 2.0)) == row


def test_rows_whose_tokens_no_text_gives_are_refused_by_the_entry() -> None:
    with pytest.raises(ValueError, match="not the tokens"):
        compact_entry(LengthFeatureRow(["a b"], [], ()), 1, 1.0)
    with pytest.raises(ValueError, match="not the tokens"):
        compact_entry(LengthFeatureRow([f"w{i}" for i in range(HEAD_TOKENS + 1)], [], ()), 1, 1.0)


def test_rows_without_keys_serve_the_model_dicts_only() -> None:
    """``length_token_features``: the same row for the offline model, no keys; the table refuses it."""
    features = chat_features("Write a detailed essay about rivers, please!")
    tokens_only = length_token_features(features)
    assert tokens_only == length_features(features) and not tokens_only.keyed
    assert length_features(features).keyed
    assert tokens_only.text_value == length_features(features).text_value
    model = load_default_model()
    assert model.location_scale(tokens_only) == model.location_scale(length_features(features))
    weights = OnlineFeatureWeights()
    with pytest.raises(ValueError, match="without token keys"):
        weights.location_scale_score(tokens_only)
    with pytest.raises(ValueError, match="without token keys"):
        weights.learn(tokens_only, 1.0)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from([*"a\n \r", "中"]), max_size=400))
def test_newline_count_equals_str_count(text: str) -> None:
    """The newline bin's count (``count_char``: memchr scans, then ``str.count`` past 16)."""
    for padded in (text, "\n" * 15 + text, text + "\n" * 17):
        assert count_char(padded, "\n") == padded.count("\n")
