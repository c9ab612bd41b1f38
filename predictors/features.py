"""The one feature function of the output-length model, shared by training and serving.

``length_features(RequestFeatures) -> LengthFeatureRow`` is called by the
offline trainer (to build the design matrix) and by the serving path (to look
up weights), so the two can never disagree. It reads only the request: the
last user message, sizes, turn counts, endpoint and model. Simulator headers
never reach ``RequestFeatures``. Route and tenant are deliberately absent: the
training data has a single route and tenant, so they carry no offline signal;
the online residual correction (``predictors.online``) keys on them instead.
``max_tokens`` is not a learned feature either (no training request sets it);
it caps the predicted quantiles, as it caps the real output.

Features:

* text terms: lower-cased word and punctuation tokens (``TOKEN_RE``) of the
  first ``HEAD_CHARS`` and last ``TAIL_CHARS`` characters of the last user
  message, at most the first ``HEAD_TOKENS`` and last ``TAIL_TOKENS`` of them
  (CJK text or code yields a token per character; the cap bounds the work);
  every token (unigram) and every adjacent pair within a slice
  (bigram) counts once per occurrence, scaled by ``1/sqrt(tokens + pairs)``
  (length normalisation, as in TF-IDF). Only a bounded slice is tokenized, so
  a 1 MB prompt costs the same as a 260-character one; instructions sit at
  either end of pasted documents. Occurrence counts rather than sets keep
  the request path to one pass over the tokens (no set building).
* categorical keys (0/1 indicators): normalised model id; log-spaced bins of estimated prompt
  tokens, last-message characters, mean characters of the earlier messages
  (a proxy for how verbose the conversation has been) and newline count;
  number of user turns (capped); question marks (capped); code fence;
  endpoint; and the crosses model x message length, model x earlier-message
  length, earlier-message length x turns.

``FEATURE_VERSION`` must be bumped whenever anything here changes how a row is
built: the saved model records ``feature_spec_hash()`` and refuses to load
under a different one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from functools import lru_cache
from itertools import pairwise
from typing import NamedTuple

from core.types import Endpoint, RequestFeatures

FEATURE_VERSION = "len-v6"
HEAD_CHARS = 200
TAIL_CHARS = 60
HEAD_TOKENS = 40
TAIL_TOKENS = 12
MAX_TURNS = 12
TOKEN_PATTERN = r"[a-z0-9']+|[^\sa-z0-9]"
TOKEN_RE = re.compile(TOKEN_PATTERN)
_LOG15 = math.log(1.5)
_BIN_CAP = 1e9


class LengthFeatureRow(NamedTuple):
    """One request's sparse features: the two token slices plus categorical keys (a tuple: cheap to build)."""

    head: list[str]
    tail: list[str]
    categorical: tuple[str, ...]

    @property
    def text_value(self) -> float:
        """What one occurrence of a unigram or bigram adds to its feature (length normalisation)."""
        n_head, n_tail = len(self.head), len(self.tail)
        # tokens + adjacent pairs within each slice (max(n - 1, 0) as comparisons: read per request)
        n_terms = (2 * n_head - 1 if n_head else 0) + (2 * n_tail - 1 if n_tail else 0)
        return 1.0 / math.sqrt(n_terms) if n_terms else 0.0

    def unigrams(self) -> list[str]:
        """Every token occurrence of both slices."""
        return self.head + self.tail

    def bigrams(self) -> list[tuple[str, str]]:
        """Every adjacent pair within each slice (none across the gap between them)."""
        return [*pairwise(self.head), *pairwise(self.tail)]


@lru_cache(maxsize=4096)
def normalise_model(model: str) -> str:
    """Last path part, lower case.

    ``"meta-llama/Meta-Llama-3-8B-Instruct"`` -> ``"meta-llama-3-8b-instruct"``.
    """
    return model.rsplit("/", 1)[-1].strip().lower()


def log2_bin(value: float) -> int:
    """``floor(log2(1 + value))``, exactly (integer arithmetic); 0 for ``value <= 0``.

    Equal to the bin of ``floor(value)`` because every bin edge ``2**k - 1`` is an integer.
    """
    if value <= 0:
        return 0
    return (int(min(value, _BIN_CAP)) + 1).bit_length() - 1


def log15_bin(value: float) -> int:
    """``floor(log(1 + value) / log(1.5))``; 0 for ``value <= 0``."""
    if value <= 0:
        return 0
    return int(math.log1p(min(value, _BIN_CAP)) / _LOG15)


def earlier_message_chars(features: RequestFeatures) -> float:
    """Mean characters per message before the last user message (0 when there is none)."""
    if features.n_messages <= 1:
        return 0.0
    other_chars = max(0, features.prompt_chars - len(features.last_user_text))
    return other_chars / (features.n_messages - 1)


def split_text(text: str) -> tuple[list[str], list[str]]:
    """The first ``HEAD_TOKENS`` tokens of the head slice and the last ``TAIL_TOKENS`` of the tail slice.

    Equal to ``TOKEN_RE.findall(slice)[:HEAD_TOKENS]`` (``[-TAIL_TOKENS:]``), by one
    scan that stops at the head's cap (``_capped_tokens``);
    ``tests/unit/test_length_model.py`` checks the equivalence.
    """
    head = _capped_tokens(text[:HEAD_CHARS].lower(), HEAD_TOKENS, from_end=False)
    if len(text) <= HEAD_CHARS:
        return head, []
    tail_start = max(HEAD_CHARS, len(text) - TAIL_CHARS)
    return head, _capped_tokens(text[tail_start:].lower(), TAIL_TOKENS, from_end=True)


def _capped_tokens(piece: str, cap: int, *, from_end: bool) -> list[str]:
    """``TOKEN_RE.findall(piece)[:cap]`` (``[-cap:]`` ``from_end``), in one compiled scan (``cap >= 1``).

    Why not the regex: the tokenizer was the length prediction's largest part on a long message
    (the regex engine's ~95 ns per token: ~6 us warm for the two slices of a long message, about
    twice that cold in the decision loop), and the length prediction is what the decision cost's
    p99 requests pay most for (docs/policies.md, "Decision cost", the tail profile). The rule is
    the pattern's: a run of ``[a-z0-9']`` is one token; any other character that is not whitespace
    is a token of its own. Whitespace is what ``\\s`` matches in a str pattern, i.e.
    ``str.isspace`` (both are ``Py_UNICODE_ISSPACE``): in ASCII tab to carriage return, the four
    separators 0x1c-0x1f and space. The head stops at its cap instead of tokenizing the rest of
    the slice (a CJK head: 40 characters instead of 200). ``tests/unit/test_length_model.py``
    compares it with the regex, on every character below U+3100 among others.
    """
    tokens: list[str] = []
    start = -1  # start of the current [a-z0-9']+ run, -1 outside one
    for i in range(len(piece)):
        c = ord(piece[i])
        if 97 <= c <= 122 or 48 <= c <= 57 or c == 39:
            if start < 0:
                start = i
            continue
        if start >= 0:
            tokens.append(piece[start:i])
            start = -1
            if not from_end and len(tokens) >= cap:
                return tokens
        if c < 128:
            if c == 32 or 9 <= c <= 13 or 28 <= c <= 31:
                continue
            tokens.append(piece[i])
        else:
            char = piece[i]
            if char.isspace():
                continue
            tokens.append(char)
        if not from_end and len(tokens) >= cap:
            return tokens
    if start >= 0:
        tokens.append(piece[start:])
    if from_end:
        return tokens[-cap:] if len(tokens) > cap else tokens
    return tokens[:cap] if len(tokens) > cap else tokens


def count_capped(text: str, char: str, cap: int) -> int:
    """``min(text.count(char), cap)`` without counting past the cap.

    ``str.find`` of one character is a memchr scan, ``str.count`` a loop ~10x slower: over the
    2,000 characters ``core.features`` keeps of a long message, ~0.1 us instead of ~1 us.
    """
    n = 0
    i = text.find(char)
    while i >= 0:
        n += 1
        if n == cap:
            break
        i = text.find(char, i + 1)
    return n


def has_code_fence(text: str) -> bool:
    """``"```" in text``, found from the backticks' memchr scans (the substring search, ~2.5 us
    over 2,000 characters, was the slowest scan of a long message); after 16 lone backticks it
    searches for the fence from there."""
    i = text.find("`")
    for _ in range(16):
        if i < 0:
            return False
        if text.startswith("```", i):
            return True
        i = text.find("`", i + 1)
    return i >= 0 and text.find("```", i) >= 0


def categorical_keys(features: RequestFeatures, model: str) -> tuple[str, ...]:
    """The categorical keys of a request: its bins here, the key strings from ``_format_keys``."""
    text = features.last_user_text
    other = earlier_message_chars(features)
    endpoint = features.endpoint
    return _format_keys(
        model,
        log2_bin(features.prompt_tokens),
        log2_bin(len(text)),
        min(features.n_user_turns, MAX_TURNS),
        log15_bin(other),
        log2_bin(other),
        count_capped(text, "?", 3),
        log2_bin(text.count("\n")),
        has_code_fence(text),
        None if endpoint is Endpoint.CHAT else endpoint.value,
    )


@lru_cache(maxsize=4096)
def _format_keys(
    model: str,
    prompt_bin: int,
    text_bin: int,
    turns: int,
    other_bin15: int,
    other_bin: int,
    questions: int,
    newline_bin: int,
    code: bool,
    endpoint: str | None,
) -> tuple[str, ...]:
    """The key strings of one combination of bins: a pure function of its arguments, so memoised.

    Requests share few combinations (138 over the speed bench's 4,000 prompts) and formatting
    ten strings was half the cost of the categorical features; a new key must be derived from
    arguments here, never from the request, or the cache would serve a stale one.
    """
    keys = [
        f"m:{model}",
        f"pt:{prompt_bin}",
        f"ul:{text_bin}",
        f"nt:{turns}",
        f"oc:{other_bin15}",
        f"m_ul:{model}:{text_bin}",
        f"m_oc:{model}:{other_bin}",
        f"oc_nt:{other_bin}:{min(turns, 4)}",
        f"q:{questions}",
        f"nl:{newline_bin}",
    ]
    if code:
        keys.append("code")
    if endpoint is not None:
        keys.append(f"ep:{endpoint}")
    return tuple(keys)


def length_features(features: RequestFeatures) -> LengthFeatureRow:
    """The output-length model's features of one request (pure, cheap, bounded)."""
    head, tail = split_text(features.last_user_text)
    return LengthFeatureRow(head, tail, categorical_keys(features, normalise_model(features.model)))


def feature_spec() -> dict[str, object]:
    """Everything that defines a row, recorded in the saved model's metadata."""
    return {
        "version": FEATURE_VERSION,
        "head_chars": HEAD_CHARS,
        "tail_chars": TAIL_CHARS,
        "head_tokens": HEAD_TOKENS,
        "tail_tokens": TAIL_TOKENS,
        "max_turns": MAX_TURNS,
        "token_pattern": TOKEN_PATTERN,
        "text_value": "occurrences/sqrt(tokens + adjacent pairs)",
        "target": "log1p(output_tokens)",
    }


def feature_spec_hash() -> str:
    return hashlib.sha256(json.dumps(feature_spec(), sort_keys=True).encode()).hexdigest()[:16]
