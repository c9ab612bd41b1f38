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
from typing import Final

from librt.vecs import append, vec
from mypy_extensions import i64

from core import native
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
# Compiled, the key scan makes a row's token keys without token strings (``length_features``);
# interpreted, the regex makes the tokens (C speed) and ``str`` hashes make the keys (``token_key``).
_COMPILED: Final = __name__ in native.STATUS.compiled

# ``token_key`` when compiled: two 32-bit multiply-xor lanes over the token's code points (FNV-1a's
# step, two different odd multipliers), the second lane finished by a 32-bit mixer (its bits index
# the table, so they must be well spread). Every product stays below 2**63 in either build (a lane
# is < 2**32, a multiplier < 2**31): nothing wraps, so interpreted code gives the same keys.
_MASK32: Final = 0xFFFFFFFF
_BASIS_A: Final = 0x811C9DC5
_PRIME_A: Final = 0x01000193
_BASIS_B: Final = 0x2545F491
_PRIME_B: Final = 0x5BD1E995
_MIX: Final = 0x045D9F3B


class LengthFeatureRow:
    """One request's sparse features: the 64-bit keys of the two token slices, plus categorical keys.

    ``keys`` holds the head slice's token keys (``token_key``), then the tail's; ``n_head`` says
    where the head ends. The table lookups read only these (``predictors.online_features``). The
    token *strings* (``head``, ``tail``) are what training, the refit's reservoir and the offline
    model's dicts read; a row made by ``length_features`` in the compiled build has none: they are
    made from the request's text the first time they are read (``split_text``, the same tokens the
    key scan saw), which the request path never does. Why: making a ``str`` per token and hashing
    it (SipHash) was most of the length features' cost on a long message, and the strings were
    read only after the decision, by the refit (docs/decision_cost_history.md, branch
    length_fast).

    ``LengthFeatureRow(head, tail, categorical)`` makes a row from token lists (keys computed from
    them; ``keyed=False``: none, for the offline model's dicts alone, ``length_token_features``); a
    native class with an explicit ``__init__`` (a ``NamedTuple``'s ``__new__`` stays interpreted in
    the compiled build). Equal rows have equal tokens and categorical keys; pickled as its token
    lists.
    """

    __slots__ = ("_from_text", "_head", "_tail", "_text", "categorical", "keys", "n_head", "n_tail")

    def __init__(
        self,
        head: list[str] | None,
        tail: list[str] | None,
        categorical: tuple[str, ...],
        text: str = "",
        keys: vec[i64] | None = None,
        n_head: i64 = 0,
        *,
        keyed: bool = True,
        from_text: bool = False,
    ) -> None:
        """From token lists (``head`` and ``tail``; ``from_text``: they are ``split_text(text)``), or,
        with both None, from a key scan of ``text`` (``keys``, ``n_head``: ``length_features`` only)."""
        self.categorical = categorical
        self._text = text
        self._head: list[str] | None = head
        self._tail: list[str] | None = tail
        if head is None or tail is None:
            if keys is None or head is not None or tail is not None:
                raise ValueError("a row needs both token lists, or the keys of its text")
            self._from_text = True
            self.keys: vec[i64] = keys
            self.n_head: i64 = n_head
            self.n_tail: i64 = len(keys) - n_head
            return
        self._from_text = from_text
        self.n_head = len(head)
        self.n_tail = len(tail)
        if not keyed:
            self.keys = vec[i64]()
        elif _COMPILED:
            made = vec[i64](capacity=len(head) + len(tail))
            for token in head:
                made = append(made, _code_point_key(token))
            for token in tail:
                made = append(made, _code_point_key(token))
            self.keys = made
        else:  # ``_str_key`` written out: the interpreted request path builds every row here
            self.keys = vec[i64]([hash(t) ^ ((len(t) & 0xFFFFF) << 43) or 1 for t in head + tail])

    @property
    def keyed(self) -> bool:
        """Whether ``keys`` holds every token's key (not a ``keyed=False`` row with tokens)."""
        return len(self.keys) == self.n_head + self.n_tail

    def slices(self) -> tuple[str, str]:
        """Two texts whose tokens are this row's (``row_of_slices``): the message's own head and tail
        slices for a row of a request's text (no tokenizing: what the refit's reservoir stores per
        outcome), the tokens joined by spaces otherwise (checked: a row whose tokens no text gives
        raises)."""
        text = self._text
        if self._from_text:
            if len(text) <= HEAD_CHARS:
                return text, ""
            return text[:HEAD_CHARS], text[max(HEAD_CHARS, len(text) - TAIL_CHARS) :]
        head, tail = self.head, self.tail
        joined = (" ".join(head), " ".join(tail))
        again = row_of_slices(joined[0], joined[1], ())
        if again.head != head or again.tail != tail:
            raise ValueError("these tokens are not the tokens of any text")
        return joined

    @property
    def head(self) -> list[str]:
        """The head slice's tokens (made from the text on first read for a scanned row)."""
        head = self._head
        if head is None:
            head, self._tail = split_text(self._text)
            self._head = head
        return head

    @property
    def tail(self) -> list[str]:
        """The tail slice's tokens (made from the text on first read for a scanned row)."""
        tail = self._tail
        if tail is None:
            self._head, tail = split_text(self._text)
            self._tail = tail
        return tail

    @property
    def text_value(self) -> float:
        """What one occurrence of a unigram or bigram adds to its feature (length normalisation)."""
        n_head = self.n_head
        n_tail = self.n_tail
        # tokens + adjacent pairs within each slice (max(n - 1, 0) as comparisons: read per request)
        n_terms = (2 * n_head - 1 if n_head else 0) + (2 * n_tail - 1 if n_tail else 0)
        return 1.0 / math.sqrt(n_terms) if n_terms else 0.0

    def unigrams(self) -> list[str]:
        """Every token occurrence of both slices."""
        return self.head + self.tail

    def bigrams(self) -> list[tuple[str, str]]:
        """Every adjacent pair within each slice (none across the gap between them)."""
        return [*pairwise(self.head), *pairwise(self.tail)]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LengthFeatureRow):
            return NotImplemented
        return self.head == other.head and self.tail == other.tail and self.categorical == other.categorical

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, LengthFeatureRow):
            return NotImplemented
        return not self == other

    __hash__ = None  # type: ignore[assignment]  # equal by its (mutable) token lists, as the NamedTuple was

    def __repr__(self) -> str:
        return f"LengthFeatureRow(head={self.head!r}, tail={self.tail!r}, categorical={self.categorical!r})"

    def __reduce__(self) -> tuple[type[LengthFeatureRow], tuple[list[str], list[str], tuple[str, ...]]]:
        return (LengthFeatureRow, (self.head, self.tail, self.categorical))


# Memo sizes: past them a memo is emptied and refilled (clients choose the model names it holds).
_MEMO_MAX: Final = 4096
_MODEL_NAMES: Final[dict[str, str]] = {}


def normalise_model(model: str) -> str:
    """Last path part, lower case.

    ``"meta-llama/Meta-Llama-3-8B-Instruct"`` -> ``"meta-llama-3-8b-instruct"``. Memoised in a
    plain dict, not ``lru_cache``: a hit of ``lru_cache`` also moves its entry to the front of
    its linked list (writes to three list nodes), cold cache lines the request path paid for twice
    per request (``length_features`` and ``predict_length``; docs/decision_cost_history.md, branch
    length_cold).
    """
    name = _MODEL_NAMES.get(model)
    if name is None:
        name = model.rsplit("/", 1)[-1].strip().lower()
        if len(_MODEL_NAMES) >= _MEMO_MAX:
            _MODEL_NAMES.clear()
        _MODEL_NAMES[model] = name
    return name


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

    Equal to ``TOKEN_RE.findall(slice)[:HEAD_TOKENS]`` (``[-TAIL_TOKENS:]``): compiled by one scan
    that stops at the head's cap (``_capped_tokens``), interpreted by the regex itself (the
    interpreted scan was ~3x slower than the regex engine); ``tests/unit/test_length_model.py``
    checks the equivalence.
    """
    if not _COMPILED:
        head = TOKEN_RE.findall(text[:HEAD_CHARS].lower())[:HEAD_TOKENS]
        if len(text) <= HEAD_CHARS:
            return head, []
        tail_start = max(HEAD_CHARS, len(text) - TAIL_CHARS)
        return head, TOKEN_RE.findall(text[tail_start:].lower())[-TAIL_TOKENS:]
    head = _capped_tokens(text[:HEAD_CHARS].lower(), HEAD_TOKENS, from_end=False)
    if len(text) <= HEAD_CHARS:
        return head, []
    tail_start = max(HEAD_CHARS, len(text) - TAIL_CHARS)
    return head, _capped_tokens(text[tail_start:].lower(), TAIL_TOKENS, from_end=True)


def token_key(token: str) -> i64:
    """The 64-bit key of a token in the length model's tables (``predictors.online_features``): never 0.

    Compiled: ``_code_point_key``, what ``length_features``' scan computes from the text without
    making the token. Interpreted: ``_str_key`` (a Python loop over code points would cost more than
    the whole lookup). Each process binds its table with the same function it scans with, and no
    key is saved or compared across processes, so the two builds give the same predictions.
    """
    return _code_point_key(token) if _COMPILED else _str_key(token)


def _finish_key(a: i64, b: i64, n: i64) -> i64:
    """The key of a token of ``n`` code points from its two lanes (``_code_point_key``): never 0.

    Lane ``b`` goes through a 32-bit mixer (two multiply-xorshift rounds) into bits 0-31, where the
    table's slot index and the pair key's low bits come from; lane ``a`` into bits 31-62; the
    length into bits 43-62. Keys are compared, not tokens: two distinct tokens share weights only
    if both lanes and the length agree (~2**-63 for a random pair).
    """
    b ^= b >> 16
    b = (b * _MIX) & _MASK32
    b ^= b >> 16
    b = (b * _MIX) & _MASK32
    b ^= b >> 16
    key = (a << 31) ^ b ^ ((n & 0xFFFFF) << 43)
    return key if key != 0 else 1


def _code_point_key(token: str) -> i64:
    """``token_key`` of the compiled build: the lanes of ``_finish_key`` over ``ord`` of each character."""
    a: i64 = _BASIS_A
    b: i64 = _BASIS_B
    n: i64 = len(token)
    for i in range(n):
        c: i64 = ord(token[i])
        a = ((a ^ c) * _PRIME_A) & _MASK32
        b = ((b ^ c) * _PRIME_B) & _MASK32
    return _finish_key(a, b, n)


def _str_key(token: str) -> i64:
    """``token_key`` of the interpreted build: the ``str`` hash (SipHash, cached in the string) with
    the length mixed in.

    Why the length: CPython hashes a string's internal buffer, whose width follows its widest
    character, so ``"te"`` (two 1-byte characters, bytes 74 65) and ``"\u6574"`` (one 2-byte
    character, the same two bytes) hash alike. Equal buffers of different widths always have
    different lengths, so ``(hash, length)`` leaves only random collisions of 64-bit hashes. The
    length goes to bits 43-62. ``hash`` varies per process, which is fine (``token_key``).
    """
    key: i64 = hash(token)
    n: i64 = len(token)
    key ^= (n & 0xFFFFF) << 43
    return key if key != 0 else 1


def _scan_keys(
    keys: vec[i64], piece: str, begin: i64, end: i64, fold: bool, cap: i64, from_end: bool
) -> vec[i64]:
    """``keys`` followed by ``[token_key(t) for t in _capped_tokens(piece[begin:end], cap, from_end=...)]``,
    without the tokens.

    The same rule as ``_capped_tokens`` (a run of ``[a-z0-9']`` is one token, any other
    non-whitespace character one), but each token's key is accumulated from its code points as the
    scan passes them (``_code_point_key``'s lanes), so no substring and no string hash is made.
    ``fold``: ``piece`` is ASCII text not yet lowered; A-Z are lowered here (all ``str.lower`` does
    to ASCII), which spares the slice and its lowered copy. The head's scan stops at its cap;
    ``from_end`` keeps the last ``cap`` keys in a ring of ``cap`` items after ``keys``' own, put in
    order at the end (``_rotate``). Appending to the caller's ``keys`` (made with room for both
    slices) makes a row's keys one allocation, where a vec per slice, the tail's growth past its
    cap, the slice of its last keys and the head's growth to take them were up to five: cold
    allocator lines in the decision's p99 band (docs/decision_cost_history.md, branch length_cold).
    """
    base: i64 = len(keys)
    n_keys: i64 = 0
    a: i64 = 0
    b: i64 = 0
    n: i64 = 0  # code points in the current [a-z0-9']+ run, 0 outside one
    i = begin
    while i < end:
        c: i64 = ord(piece[i])
        i += 1
        if fold and 65 <= c <= 90:
            c += 32
        if 97 <= c <= 122 or 48 <= c <= 57 or c == 39:
            if n == 0:
                a = _BASIS_A
                b = _BASIS_B
            a = ((a ^ c) * _PRIME_A) & _MASK32
            b = ((b ^ c) * _PRIME_B) & _MASK32
            n += 1
            continue
        if n:
            if n_keys < cap:
                keys = append(keys, _finish_key(a, b, n))
            else:  # ``from_end`` (the head returned at its cap): the ring's oldest key is replaced
                keys[base + n_keys % cap] = _finish_key(a, b, n)
            n_keys += 1
            n = 0
            if not from_end and n_keys >= cap:
                return keys
        if c < 128:
            if c == 32 or 9 <= c <= 13 or 28 <= c <= 31:
                continue
        elif _is_wide_space(c):
            continue
        a = ((_BASIS_A ^ c) * _PRIME_A) & _MASK32
        b = ((_BASIS_B ^ c) * _PRIME_B) & _MASK32
        if n_keys < cap:
            keys = append(keys, _finish_key(a, b, 1))
        else:
            keys[base + n_keys % cap] = _finish_key(a, b, 1)
        n_keys += 1
        if not from_end and n_keys >= cap:
            return keys
    if n:
        if n_keys < cap:
            keys = append(keys, _finish_key(a, b, n))
        else:
            keys[base + n_keys % cap] = _finish_key(a, b, n)
        n_keys += 1
    if n_keys > cap:
        _rotate(keys, base, base + n_keys % cap, base + cap)
    return keys


def _is_wide_space(c: i64) -> bool:
    """``chr(c).isspace()`` for a code point ``c >= 128``: the 19 whitespace code points above ASCII.

    Why not ``piece[i].isspace()``: indexing a ``str`` at a character above U+00FF makes a new
    one-character string (only Latin-1 ones are cached), so the scan of a CJK head allocated and
    freed a string per character (~5 us of a CJK message's ~8). The set is Unicode's White_Space
    property as ``str.isspace`` has it (Python 3.11's Unicode 14; ``tests/unit/test_token_keys.py``
    checks the scan against the tokens on every whitespace code point and every character below
    U+3100).
    """
    if c < 0x1680:
        return c == 0x85 or c == 0xA0
    if c < 0x2000:
        return c == 0x1680
    if c <= 0x200A:
        return True
    return c == 0x2028 or c == 0x2029 or c == 0x202F or c == 0x205F or c == 0x3000


def _rotate(keys: vec[i64], begin: i64, middle: i64, end: i64) -> None:
    """Rotate ``keys[begin:end]`` in place so that ``keys[middle]`` comes first (three reversals)."""
    _reverse(keys, begin, middle)
    _reverse(keys, middle, end)
    _reverse(keys, begin, end)


def _reverse(keys: vec[i64], begin: i64, end: i64) -> None:
    """Reverse ``keys[begin:end]`` in place."""
    end -= 1
    while begin < end:
        first = keys[begin]
        keys[begin] = keys[end]
        keys[end] = first
        begin += 1
        end -= 1


def _scanned_row(text: str, categorical: tuple[str, ...]) -> LengthFeatureRow:
    """``LengthFeatureRow(*split_text(text), categorical)`` from the key scan (``_scan_keys``): the
    same keys, no token strings (the row makes them from ``text`` if they are ever read).

    ASCII text (most requests) is scanned in place, lowered per character; other text is sliced
    and lowered first, as ``split_text`` does (``str.lower`` of non-ASCII text is not per
    character: "\u0130" lowers to two).
    """
    n_text: i64 = len(text)
    head_end: i64 = n_text if n_text < HEAD_CHARS else HEAD_CHARS
    tail_start: i64 = n_text - TAIL_CHARS if n_text - TAIL_CHARS > HEAD_CHARS else HEAD_CHARS
    keys = vec[i64](capacity=HEAD_TOKENS + TAIL_TOKENS)  # both slices' keys, no growth
    if text.isascii():
        keys = _scan_keys(keys, text, 0, head_end, True, HEAD_TOKENS, False)
        n_head: i64 = len(keys)
        if n_text > HEAD_CHARS:
            keys = _scan_keys(keys, text, tail_start, n_text, True, TAIL_TOKENS, True)
    else:
        head = text[:HEAD_CHARS].lower()
        keys = _scan_keys(keys, head, 0, len(head), False, HEAD_TOKENS, False)
        n_head = len(keys)
        if n_text > HEAD_CHARS:
            tail = text[tail_start:].lower()
            keys = _scan_keys(keys, tail, 0, len(tail), False, TAIL_TOKENS, True)
    return LengthFeatureRow(None, None, categorical, text, keys, n_head)


def _capped_tokens(piece: str, cap: int, *, from_end: bool) -> list[str]:
    """``TOKEN_RE.findall(piece)[:cap]`` (``[-cap:]`` ``from_end``), in one compiled scan (``cap >= 1``).

    Why not the regex: the tokenizer was the length prediction's largest part on a long message
    (the regex engine's ~95 ns per token: ~6 us warm for the two slices of a long message, about
    twice that cold in the decision loop), and the length prediction is what the decision cost's
    p99 requests pay most for (docs/decision_cost_history.md, branch decide_tail). The rule is
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


def count_char(text: str, char: str) -> int:
    """``text.count(char)``, by memchr scans (``str.find``) while the occurrences are few.

    ``str.count`` of one character is a plain loop (~0.5 ns a character: ~0.5 us over a long
    message's newlines count, half of the categorical features); most messages have a few newlines,
    which ``find`` reaches at memchr speed. After 16 it counts the rest with ``str.count``.
    """
    n = 0
    i = text.find(char)
    while i >= 0:
        n += 1
        if n == 16:
            return n + text.count(char, i + 1)
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


# ``categorical_keys``' memo: normalised model -> the bins packed in one int (``_pack_bins``) -> keys.
_KEYS_BY_MODEL: Final[dict[str, dict[int, tuple[str, ...]]]] = {}
# The endpoints other than chat, numbered from 1 in the bins' packed int (chat: 0).
_ENDPOINT_CODES: Final[dict[str, int]] = {
    e.value: i + 1 for i, e in enumerate(e for e in Endpoint if e is not Endpoint.CHAT)
}


def categorical_keys(features: RequestFeatures, model: str) -> tuple[str, ...]:
    """The categorical keys of a request: its bins here, the key strings from ``_format_keys``.

    The key tuple of one combination of bins is made once and kept (requests share few
    combinations: 138 over the speed bench's 4,000 prompts): looked up by the model, then by the
    bins packed into one int. Why not ``lru_cache`` on ``_format_keys`` (as before): its hit builds
    a ten-item key tuple, hashes it, compares it item by item with the stored one and relinks the
    entry at the front of its list, ~2 us on a cold cache against ~0.5 warm, in the decision's p99
    band (docs/decision_cost_history.md, branch length_cold); an int key is hashed and compared in place.
    """
    text = features.last_user_text
    other = earlier_message_chars(features)
    endpoint = features.endpoint
    prompt_bin = log2_bin(features.prompt_tokens)
    text_bin = log2_bin(len(text))
    turns = min(features.n_user_turns, MAX_TURNS)
    other_bin15 = log15_bin(other)
    other_bin = log2_bin(other)
    questions = count_capped(text, "?", 3)
    newline_bin = log2_bin(count_char(text, "\n"))
    code = has_code_fence(text)
    endpoint_value = None if endpoint is Endpoint.CHAT else endpoint.value
    if not _COMPILED:  # interpreted, ``lru_cache`` (C) is cheaper than the packing's Python code
        return _format_keys_cached(
            model,
            prompt_bin,
            text_bin,
            turns,
            other_bin15,
            other_bin,
            questions,
            newline_bin,
            code,
            endpoint_value,
        )
    packed = _pack_bins(
        prompt_bin,
        text_bin,
        turns,
        other_bin15,
        other_bin,
        questions,
        newline_bin,
        code,
        0 if endpoint_value is None else _ENDPOINT_CODES.get(endpoint_value, -1),
    )
    by_bins = _KEYS_BY_MODEL.get(model)
    if by_bins is None:
        if len(_KEYS_BY_MODEL) >= _MEMO_MAX:
            _KEYS_BY_MODEL.clear()
        by_bins = _KEYS_BY_MODEL[model] = {}
    elif packed >= 0:
        keys = by_bins.get(packed)
        if keys is not None:
            return keys
    bins = (prompt_bin, text_bin, turns, other_bin15, other_bin, questions, newline_bin)
    keys = _format_keys(model, *bins, code, endpoint_value)
    if packed >= 0:
        if len(by_bins) >= _MEMO_MAX:
            by_bins.clear()
        by_bins[packed] = keys
    return keys


def _pack_bins(
    prompt_bin: int,
    text_bin: int,
    turns: int,
    other_bin15: int,
    other_bin: int,
    questions: int,
    newline_bin: int,
    code: bool,
    endpoint_code: int,
) -> int:
    """The bins of ``categorical_keys`` as one int, distinct for distinct bins; -1 (not memoised) if
    one is outside the range its bits hold (log2 bins <= 29 and log1.5 bins <= 51 by ``_BIN_CAP``,
    so only a negative turn count or an unknown endpoint can be)."""
    if (
        not (0 <= prompt_bin < 64 and 0 <= text_bin < 64 and 0 <= turns < 64 and 0 <= other_bin15 < 64)
        or not (0 <= other_bin < 64 and 0 <= questions < 64 and 0 <= newline_bin < 64)
        or not 0 <= endpoint_code < 64
    ):
        return -1
    packed = ((prompt_bin << 6 | text_bin) << 6 | turns) << 6 | other_bin15
    packed = (((packed << 6 | other_bin) << 6 | questions) << 6 | newline_bin) << 6 | endpoint_code
    return packed << 1 | (1 if code else 0)


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
    """The key strings of one combination of bins: a pure function of its arguments, memoised by
    ``categorical_keys`` (formatting ten strings was half the cost of the categorical features); a
    new key must be derived from arguments here, never from the request, or the memo would serve a
    stale one."""
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


_format_keys_cached: Final = lru_cache(maxsize=_MEMO_MAX)(_format_keys)  # the interpreted build's memo


def length_features(features: RequestFeatures) -> LengthFeatureRow:
    """The output-length model's features of one request (pure, cheap, bounded).

    Compiled: the token keys from the key scan, no token strings (``_scanned_row``); interpreted:
    the tokens from the regex and their keys (``LengthFeatureRow``). Equal rows either way.
    """
    categorical = categorical_keys(features, normalise_model(features.model))
    if _COMPILED:
        return _scanned_row(features.last_user_text, categorical)
    text = features.last_user_text
    head, tail = split_text(text)
    return LengthFeatureRow(head, tail, categorical, text, from_text=True)


def length_token_features(features: RequestFeatures) -> LengthFeatureRow:
    """``length_features`` with token strings and no keys: for ``OutputLengthModel.location_scale``
    alone (its dicts are keyed by the strings), so the keys are not made for nothing."""
    text = features.last_user_text
    head, tail = split_text(text)
    categorical = categorical_keys(features, normalise_model(features.model))
    return LengthFeatureRow(head, tail, categorical, text, keyed=False, from_text=True)


def row_of_slices(head_text: str, tail_text: str, categorical: tuple[str, ...]) -> LengthFeatureRow:
    """The row whose head is the first ``HEAD_TOKENS`` tokens of ``head_text`` and whose tail is the
    last ``TAIL_TOKENS`` of ``tail_text`` (both lowered first): the inverse of ``LengthFeatureRow.slices``."""
    head_piece, tail_piece = head_text.lower(), tail_text.lower()
    if _COMPILED:
        head = _capped_tokens(head_piece, HEAD_TOKENS, from_end=False)
        tail = _capped_tokens(tail_piece, TAIL_TOKENS, from_end=True)
    else:
        head = TOKEN_RE.findall(head_piece)[:HEAD_TOKENS]
        tail = TOKEN_RE.findall(tail_piece)[-TAIL_TOKENS:]
    return LengthFeatureRow(head, tail, categorical)


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
