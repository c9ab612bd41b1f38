"""A tiny byte-level BPE vocabulary for the locally built test model (GPT-2 conventions).

Why hand-rolled: the real llama.cpp server under test needs a GGUF model with a
``gpt2`` tokenizer, and no usable tiny model can be downloaded here. A naive BPE
over a few English sentences gives real multi-byte tokens (so prompts of N
characters are clearly fewer than N tokens, like a real model) in milliseconds.

Rules (the GPT-2 byte-level scheme llama.cpp's ``gpt2`` tokenizer expects):
each of the 256 bytes is a token written with GPT-2's printable byte→unicode
map (space = ``Ġ``); words are pre-split as ``' ?letters | ?digits | ?other | spaces'``;
``n_merges`` times, the most frequent adjacent pair (ties broken by the pair
itself, so the result is deterministic) is merged into a new token.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache

_WORD_RE = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+")

TRAINING_TEXT = (
    "The quick brown fox jumps over the lazy dog. A router sends each request to the server "
    "that can answer it first. When the queue is long, the proxy sheds load and tells the client "
    "to retry after a short wait. The cache keeps the prompt prefix, so the next request with the "
    "same prefix starts much faster. Tokens stream back one by one until the answer is complete. "
    "Every server reports how many requests are running and how many are waiting in its queue. "
    "In the morning the team reads the latency report and plans the work for the rest of the day. "
    "There are many small models and a few large ones; the large ones need more memory and time. "
    "Please write a short summary of the meeting, then list three questions we should answer next week. "
    "Numbers like 42, 1024 and 2048 show up in logs, traces and benchmark tables all the time. "
)


@cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


@cache
def unicode_to_byte() -> dict[str, int]:
    return {char: byte for byte, char in byte_to_unicode().items()}


def token_bytes(token: str) -> bytes:
    """The raw bytes a byte-level token stands for."""
    table = unicode_to_byte()
    return bytes(table[char] for char in token)


@dataclass(frozen=True, slots=True)
class BpeVocab:
    """Byte tokens first (ids 0..255), then one token per merge, in merge order."""

    tokens: tuple[str, ...]
    merges: tuple[str, ...]


def train_bpe(text: str = TRAINING_TEXT, n_merges: int = 250) -> BpeVocab:
    """Learn up to ``n_merges`` merges over ``text`` (fewer if pairs run out)."""
    to_unicode = byte_to_unicode()
    words = Counter(tuple(to_unicode[b] for b in word.encode("utf-8")) for word in _WORD_RE.findall(text))
    tokens = [to_unicode[b] for b in range(256)]
    merges: list[str] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for left, right in itertools.pairwise(word):
                pairs[(left, right)] += count
        if not pairs:
            break
        best = max(pairs.items(), key=lambda item: (item[1], item[0]))[0]
        merged = best[0] + best[1]
        merges.append(f"{best[0]} {best[1]}")
        tokens.append(merged)
        words = Counter({_merge_pair(word, best, merged): count for word, count in words.items()})
    return BpeVocab(tokens=tuple(tokens), merges=tuple(merges))


def _merge_pair(word: tuple[str, ...], pair: tuple[str, str], merged: str) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)
