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
KV block) and each
chunk's hash chains the previous one (CRC-32 and Adler-32 of the whole prefix
so far, continued incrementally, packed into 64 bits). Two prompts share their
first ``k`` hashes iff they share their first ``k`` chunks. Both checksums run
in C, so hashing a 40k-character prompt costs well under a millisecond; callers
on the hot path cap the number of chunks.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CHARS_PER_TOKEN = 4
PREFIX_CHUNK_CHARS = 64
_ROLE_SEPARATOR = "\n"
_MESSAGE_END = "\n\n"


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
        pieces.append(_ROLE_SEPARATOR)
        pieces.append(content_text(message.get("content")))
        pieces.append(_MESSAGE_END)
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


def prefix_chunk_hashes(
    text: str, chunk_chars: int = PREFIX_CHUNK_CHARS, max_chunks: int | None = None
) -> tuple[int, ...]:
    """Chained 64-bit hashes of the complete ``chunk_chars`` chunks of ``text``.

    A trailing partial chunk is not hashed (as a partial KV block is not
    shareable). ``max_chunks`` caps the work for very long prompts.
    """
    if chunk_chars <= 0:
        raise ValueError("chunk_chars must be positive")
    data = text.encode("utf-8", "surrogatepass")
    n_chunks = len(data) // chunk_chars
    if max_chunks is not None:
        n_chunks = min(n_chunks, max_chunks)
    crc = 0
    adler = 1
    out: list[int] = []
    view = memoryview(data)
    for i in range(n_chunks):
        chunk = view[i * chunk_chars : (i + 1) * chunk_chars]
        crc = zlib.crc32(chunk, crc)
        adler = zlib.adler32(chunk, adler)
        out.append((crc << 32) | adler)
    return tuple(out)


def common_prefix_length(a: Sequence[int], b: Iterable[int]) -> int:
    """Number of leading equal elements of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
