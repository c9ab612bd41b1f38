"""Deterministic prompt text of an exact estimated token length, for traces that publish lengths only.

Sluice and the simulated backends estimate tokens as ``ceil(chars / 4)``
(``core.tokens``), so ``4 * n`` ASCII characters are exactly ``n`` tokens.
Text is cut from one fixed pseudo-English corpus (built once from a seeded
RNG over a small vocabulary, ``CORPUS_CHARS`` long, read cyclically), which
makes a slice O(length) with no per-word Python work.

Identity rules, so that prefix caching behaves as it would with real traffic:

* ``unique_text(key, n)``: starts with a tag naming ``key``, so two requests
  never share more than the first few characters (no accidental cache hits).
* ``block_text(block_id, salt)``: the text of one Mooncake 512-token block;
  equal ``(block_id, salt)`` give equal text, different ones differ in their
  first characters. Results go through a bounded LRU cache
  (``BLOCK_CACHE_SIZE`` blocks ≈ 16 MiB) because the prefix blocks that repeat
  are exactly the ones worth caching, while 12k requests × 24 blocks × 2 KiB
  would not fit.

``CHAT_FRAMING_CHARS`` is what ``core.tokens.render_chat_prompt`` adds around
one user message (``"user\\n"`` + ``"\\n\\n"``); chat workloads take it off the
content so the rendered prompt estimates to the trace's prompt length.
"""

from __future__ import annotations

import random
import zlib
from functools import lru_cache

from core.tokens import CHARS_PER_TOKEN, render_chat_prompt

CORPUS_CHARS = 1 << 18
BLOCK_CACHE_SIZE = 8192
CHAT_FRAMING_CHARS = len(render_chat_prompt([{"role": "user", "content": ""}]))

_VOCABULARY_TEXT = """
    the of and to in is that for it as with was on be by this are or from at an not have which but
    all can has one more were their will when there been also other if about into out some time only
    new would these two first may any after over most then such what where could many used through
    data model system value request server token cache queue batch memory latency prompt output
    input result function error network process thread client router engine block prefix stream
    window average number between under during without before while because however often small
    large high low long short early late fast slow simple common general local global recent public
    private question answer example problem method reason change point level rate part case group
    order report review design build test check measure compare explain describe summarize translate
    write read list code file line table chart graph note page section chapter paper study market
    customer product service price cost team project plan goal policy rule history story world city
    country water light energy power health science music language people person student teacher
    company
"""
_VOCABULARY = tuple(_VOCABULARY_TEXT.split())


def _build_corpus() -> str:
    rng = random.Random(20240514)
    words: list[str] = []
    length = 0
    while length < CORPUS_CHARS + 64:
        sentence = rng.choices(_VOCABULARY, k=rng.randint(6, 18))
        sentence[0] = sentence[0].capitalize()
        piece = " ".join(sentence) + ". "
        words.append(piece)
        length += len(piece)
    return "".join(words)[:CORPUS_CHARS]


_CORPUS = _build_corpus()
_CORPUS_TWICE = _CORPUS + _CORPUS


def _stable_offset(key: str) -> int:
    return zlib.crc32(key.encode("utf-8")) % CORPUS_CHARS


def corpus_slice(key: str, n_chars: int) -> str:
    """``n_chars`` of corpus text starting at an offset fixed by ``key``."""
    if n_chars <= 0:
        return ""
    start = _stable_offset(key)
    if n_chars <= CORPUS_CHARS:
        return _CORPUS_TWICE[start : start + n_chars]
    repeats = n_chars // CORPUS_CHARS + 2
    return (_CORPUS * repeats)[start : start + n_chars]


def fit(text: str, n_chars: int) -> str:
    """``text`` cut or padded with corpus text to exactly ``n_chars``."""
    if len(text) >= n_chars:
        return text[:n_chars]
    return text + corpus_slice(text, n_chars - len(text))


def unique_text(key: str, n_chars: int) -> str:
    """Text of exactly ``n_chars`` whose first characters name ``key`` (no shared prefix)."""
    return fit(f"[{key}] ", n_chars) if n_chars > 0 else ""


def tokens_to_chars(n_tokens: int) -> int:
    return n_tokens * CHARS_PER_TOKEN


def chat_content_chars(n_tokens: int, role: str = "user") -> int:
    """Characters of one ``role`` message whose rendered chat text estimates to exactly ``n_tokens``."""
    framing = len(render_chat_prompt([{"role": role, "content": ""}]))
    return max(1, tokens_to_chars(n_tokens) - framing)


@lru_cache(maxsize=BLOCK_CACHE_SIZE)
def block_text(block_id: int, salt: str, block_chars: int) -> str:
    """The text of one prefix block: equal ``(block_id, salt)`` ⇒ equal text."""
    return unique_text(f"block {salt}{block_id}", block_chars)
