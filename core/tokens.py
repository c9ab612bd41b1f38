"""Prompt rendering, token estimation and prefix-chunk hashing shared by proxy and simulator.

Why one module: the router estimates prompt size and prefix identity from the
request text, and the simulated backends count prompt tokens and cache KV
blocks from the same text. Using the same deterministic functions on both
sides means a simulated backend's ``usage.prompt_tokens`` equals Sluice's
estimate, and a prefix the router believes is shared is shared in the
simulated KV cache.

Token estimator: ``ceil(len(text) / 4)`` characters. Calibration: on the
ShareGPT sample in ``shared/data`` the mistral-v1 SentencePiece tokenizer gives
3.85 characters per token (113,818,067 chars / 29,530,308 tokens); 4 keeps the
estimator exactly invertible (``4 * n`` ASCII characters are ``n`` tokens),
which the load generator relies on to synthesise prompt text of a given
length. Real engines differ by tokenizer; the estimate is only a routing
feature, never a billing count.

Prefix hashing: the prompt's UTF-8 bytes are cut into ``chunk_chars``-byte
chunks (default 64 bytes: 64 ASCII characters = 16 estimated tokens = one vLLM
KV block). The bytes are read as little-endian 64-bit words ``w_j``; with a
fixed odd pseudo-random multiplier ``K_j`` per word position (splitmix64 of
``j``) and ``f(x) = x ^ (x >> 29)``, hash ``k`` is ``Σ_{j < 8(k+1)} f(w_j·K_j)``
mod 2^64, the sum over every word of chunks ``0..k``. So two prompts share
their first ``k`` hashes iff they share their first ``k`` chunks (up to 64-bit
collisions; position-dependent multipliers make equal chunks at different
offsets count differently). Callers on the hot path cap the number of chunks.

Two implementations of that one definition, chosen at import (``_COMPILED``):
the compiled build (mypyc) runs one loop over the words in ``i64`` arithmetic,
which wraps mod 2^64 there (~0.6 µs of loop for a 5 kB prompt; the 80 Python
ints of the result cost more than that, ~2.3 µs in all warm against ~5.5 for
numpy); pure Python runs one vectorised numpy pass (one multiply, one
shift-xor, one running sum), as a Python loop over the words would cost
~240 µs. In the decision loop, where each request's text and numpy's large
dispatch code are cold, the loop measured ~3x cheaper than the numpy pass
(median 15 → 5 µs; docs/decision_cost_history.md, branch hash_fast). Both
give the same hashes bit for bit (``tests/unit/test_tokens_features.py``: the
definition, the two paths against each other, and hashes recorded from the
numpy-only version).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from librt.strings import BytesWriter, read_i64_le, write_i64_le
from librt.vecs import vec
from mypy_extensions import i64

from core import native

CHARS_PER_TOKEN = 4
PREFIX_CHUNK_CHARS = 64
ROLE_SEPARATOR = "\n"
MESSAGE_END = "\n\n"


def estimate_tokens(text: str) -> int:
    """Estimated token count of ``text`` (``ceil(len / 4)``); 0 for empty text."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def content_text(content: Any) -> str:
    """Text of an OpenAI message ``content``: a string, or the ``text`` of its text parts.

    Non-text parts (images, audio) contribute nothing; unknown shapes give "".
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return "".join(parts)
    return ""


def render_chat_prompt(messages: Sequence[Any]) -> str:
    """Render chat messages to the text the token estimate and prefix hashes are taken from.

    Each message becomes ``role + "\\n" + content + "\\n\\n"``, so a longer
    conversation that repeats earlier turns verbatim is a strict textual
    extension of the shorter one (multi-turn prefix reuse is visible).
    Malformed entries are skipped rather than rejected here; request
    validation is the caller's job.
    """
    pieces: list[str] = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        pieces.append(role if isinstance(role, str) else "")
        pieces.append(ROLE_SEPARATOR)
        pieces.append(content_text(message.get("content")))
        pieces.append(MESSAGE_END)
    return "".join(pieces)


def render_completion_prompt(prompt: Any) -> str:
    """Text of a completions ``prompt``: a string or the concatenation of a list of strings.

    Token-id prompts (lists of ints) are rendered as their ids joined by
    spaces, so that they still hash and size deterministically.
    """
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        if all(isinstance(p, str) for p in prompt):
            return "".join(prompt)
        if all(isinstance(p, int) for p in prompt):
            return " ".join(str(p) for p in prompt)
    return ""


_WORD_BYTES: Final = 8
_MAX_TABLE_CHUNKS: Final = 1_024  # the hot path's cap (``core.features.PREFIX_MAX_CHUNKS``)
_MAX_TABLE_WORDS: Final = _MAX_TABLE_CHUNKS * 8  # 1,024 chunks of 64 bytes


def _splitmix64(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    values = values + np.uint64(0x9E3779B97F4A7C15)
    values ^= values >> np.uint64(30)
    values *= np.uint64(0xBF58476D1CE4E5B9)
    values ^= values >> np.uint64(27)
    values *= np.uint64(0x94D049BB133111EB)
    values ^= values >> np.uint64(31)
    return values


def _multipliers(n_words: int) -> npt.NDArray[np.uint64]:
    """An odd pseudo-random 64-bit multiplier per word position (``K_j``; fixed, so hashes are stable)."""
    return _splitmix64(np.arange(n_words, dtype=np.uint64)) | np.uint64(1)


_MULTIPLIERS = _multipliers(_MAX_TABLE_WORDS)
_WORD_DTYPE = np.dtype("<u8")
_SHIFT = np.uint64(29)
# The same multipliers as signed 64-bit bit patterns in an unboxed array, for the compiled loop.
_MULTIPLIER_VEC: Final = vec[i64](_MULTIPLIERS.view(np.int64).tolist())
_LOW_35_BITS: Final = (1 << 35) - 1  # ``(x >> 29) & _LOW_35_BITS`` is the unsigned shift of an i64 ``x``
_UNPACKERS: dict[int, struct.Struct] = {}  # chunk count -> its unpacker (~200 bytes each), up to the hot cap

# Whether this module runs as the mypyc extension (``core.native`` decided it before any compiled module was
# imported): the compiled build hashes in one native loop, pure Python in numpy (module docstring).
_COMPILED = __name__ in native.STATUS.compiled


def prefix_chunk_hashes(
    text: str, chunk_chars: int = PREFIX_CHUNK_CHARS, max_chunks: int | None = None
) -> tuple[int, ...]:
    """Chained 64-bit hashes of the complete ``chunk_chars`` chunks of ``text`` (module docstring).

    A trailing partial chunk is not hashed (as a partial KV block is not
    shareable). ``max_chunks`` caps the work for very long prompts.
    ``chunk_chars`` must be a positive multiple of 8 (chunks are read as
    64-bit words).
    """
    return prefix_chunk_hashes_utf8(text.encode("utf-8", "surrogatepass"), chunk_chars, max_chunks)


def prefix_chunk_hashes_utf8(
    data: bytes, chunk_chars: int = PREFIX_CHUNK_CHARS, max_chunks: int | None = None
) -> tuple[int, ...]:
    """``prefix_chunk_hashes`` of a text already encoded (UTF-8, surrogates passed through) as ``data``.

    Its own function so that ``bench/decision_tail.py --split-hash`` times the encode and the rest of
    the hash apart, each as the data plane runs it.
    """
    if chunk_chars <= 0 or chunk_chars % _WORD_BYTES:
        raise ValueError("chunk_chars must be a positive multiple of 8")
    n_chunks = len(data) // chunk_chars
    if max_chunks is not None:
        n_chunks = min(n_chunks, max_chunks)
    if n_chunks <= 0:
        return ()
    if _COMPILED:
        return _chained_sums_loop(data, n_chunks, chunk_chars // _WORD_BYTES)
    return _chained_sums_numpy(data, n_chunks, chunk_chars // _WORD_BYTES)


def _chained_sums_numpy(data: bytes, n_chunks: int, words_per_chunk: int) -> tuple[int, ...]:
    """The hashes of ``data``'s first ``n_chunks`` chunks in one vectorised pass: what pure Python runs.

    A Python loop over the words costs ~240 us for a 5 kB prompt; numpy's seven calls cost ~5 us
    warm (but ~3x that on a cold cache: their dispatch code is large). ``data`` holds at least
    ``n_chunks * words_per_chunk`` 64-bit words.
    """
    n_words = n_chunks * words_per_chunk
    multipliers = _MULTIPLIERS[:n_words] if n_words <= _MAX_TABLE_WORDS else _multipliers(n_words)
    mixed = np.frombuffer(data, _WORD_DTYPE, n_words) * multipliers  # positional: no keyword call
    mixed ^= mixed >> _SHIFT
    hashes: list[int] = mixed.cumsum()[words_per_chunk - 1 :: words_per_chunk].tolist()
    return tuple(hashes)


def _chained_sums_loop(data: bytes, n_chunks: i64, words_per_chunk: i64) -> tuple[int, ...]:
    """``_chained_sums_numpy`` as one loop over the words: what the compiled build runs.

    Compiled, ``i64`` arithmetic is C's on ``int64_t`` built with ``-fwrapv`` (the interpreter's own
    CFLAGS, and ``sluice/native_build.py`` adds it), so ``*`` and ``+`` wrap mod 2^64 and give the
    unsigned results' bit patterns; the unsigned ``x >> 29`` is the arithmetic shift with the sign
    copies masked off. The running sums are written as little-endian words and unpacked as unsigned
    ones in one ``struct`` call (the Python ints the callers need; they cost more than the loop).
    Interpreted, ``i64`` is a plain ``int`` and nothing wraps: this function is wrong there and pure
    Python never calls it (``tests/unit/test_tokens_features.py`` checks both paths against the
    definition where each runs).
    """
    n_words = n_chunks * words_per_chunk
    multipliers = _MULTIPLIER_VEC if n_words <= len(_MULTIPLIER_VEC) else _multiplier_vec(n_words)
    sums = BytesWriter()
    total: i64 = 0
    word: i64 = 0
    for _chunk in range(n_chunks):
        for _word in range(words_per_chunk):
            x = read_i64_le(data, word * _WORD_BYTES) * multipliers[word]
            total += x ^ ((x >> 29) & _LOW_35_BITS)
            word += 1
        write_i64_le(sums, total)
    unpacked: tuple[int, ...] = _unpacker(n_chunks).unpack(sums.getvalue())
    return unpacked


def _multiplier_vec(n_words: int) -> vec[i64]:
    """``_MULTIPLIER_VEC`` extended to ``n_words`` (a prompt beyond the table, hashed without a cap)."""
    return vec[i64](_multipliers(n_words).view(np.int64).tolist())


def _unpacker(n_chunks: int) -> struct.Struct:
    """A ``struct.Struct`` reading ``n_chunks`` little-endian unsigned 64-bit ints (cached up to the cap)."""
    found = _UNPACKERS.get(n_chunks)
    if found is None:
        found = struct.Struct(f"<{n_chunks}Q")
        if n_chunks <= _MAX_TABLE_CHUNKS:
            _UNPACKERS[n_chunks] = found
    return found


def common_prefix_length(a: Sequence[int], b: Iterable[int]) -> int:
    """Number of leading equal elements of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
