"""Cheap facts about a relayed response, without parsing or re-encoding what is relayed.

Streams are relayed as the bytes the backend sent. To learn token counts we
only (a) count SSE event terminators in each chunk (``bytes.count`` in C, no
copy) and (b) keep references to the last ~2 KiB of chunks, and at the end parse
only the ``usage`` object found in that tail. The same tail search reads the
``usage`` of a non-streaming body.

Output tokens: the backend's final ``usage.completion_tokens`` when present
(OpenAI ``stream_options.include_usage``, vLLM, SGLang, llama.cpp); otherwise
the number of data events other than ``[DONE]``. That fallback counts a
role-only first chunk and a usage-only last chunk as tokens, so it can be high
by two; engines emit one token per event, so it is otherwise exact.

An event ends with a blank line (``\\n\\n`` or ``\\r\\n\\r\\n``). JSON payloads
cannot contain a raw newline, so a blank line inside an event is impossible;
a terminator split across two chunks is caught by checking the boundary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from core.fast_init import fast_frozen_init

TAIL_MAX_BYTES = 8192
TAIL_KEEP_BYTES = 2048
_USAGE_KEY = b'"usage"'
# One level of nesting covers ``prompt_tokens_details`` / ``completion_tokens_details``. Possessive
# quantifiers: runs of plain bytes are taken whole and never given back (the alternatives start with
# different bytes, so backtracking could never find another match): ~4.5x faster on a usage object
# than the one-byte-per-iteration form, and linear on an unterminated one.
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*(\{(?:[^{}]++|\{[^{}]*+\})*+\})')
_DONE = b"data: [DONE]"


@fast_frozen_init  # one per response
@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_prompt_tokens: int | None


def _int_or_none(value: object) -> int | None:
    return value if type(value) is int else None  # exactly int: not a bool, the one int subclass JSON gives


def find_usage(tail: bytes) -> Usage | None:
    """The last ``usage`` object in ``tail`` (a body end or the last chunks of a stream), if any.

    Returns None when the last ``"usage"`` key holds ``null`` or anything unparsable.
    """
    start = tail.rfind(_USAGE_KEY)
    if start < 0:
        return None
    match = _USAGE_OBJECT.match(tail, start)
    if match is None:
        return None
    try:
        usage = orjson.loads(match.group(1))
    except orjson.JSONDecodeError:
        return None
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = _int_or_none(details.get("cached_tokens")) if isinstance(details, dict) else None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return Usage(_int_or_none(prompt), _int_or_none(completion), cached)  # positional: ~0.15 us less


def _terminators(data: bytes) -> int:
    return data.count(b"\n\n") + data.count(b"\r\n\r\n")


def body_tail(body: bytes) -> bytes:
    return body if len(body) <= TAIL_MAX_BYTES else body[-TAIL_MAX_BYTES:]


class StreamTally:
    """Counts events and keeps the last ``TAIL_KEEP_BYTES`` or so of a stream; ``feed`` is the per-chunk cost.

    The tail is a short list of references to the last chunks (no copying
    until ``summary``), trimmed from the front once the rest is long enough.
    """

    __slots__ = ("_kept_bytes", "_recent", "events")

    def __init__(self) -> None:
        self.events = 0
        self._recent: list[bytes] = []
        self._kept_bytes = 0

    def feed(self, chunk: bytes) -> None:
        n = _terminators(chunk)
        recent = self._recent
        if chunk[:1] in (b"\n", b"\r") and recent:  # rare: a terminator may straddle the boundary
            head, start = recent[-1][-3:], chunk[:3]
            n += _terminators(head + start) - _terminators(head) - _terminators(start)
        self.events += n
        recent.append(chunk)
        self._kept_bytes += len(chunk)
        while self._kept_bytes - len(recent[0]) >= TAIL_KEEP_BYTES:
            self._kept_bytes -= len(recent.pop(0))

    def summary(self) -> tuple[Usage | None, int]:
        """(usage from the tail if sent, output tokens) once the stream has ended."""
        tail = body_tail(b"".join(self._recent))
        usage = find_usage(tail)
        if usage is not None and usage.completion_tokens is not None:
            return usage, usage.completion_tokens
        done = 1 if _DONE in tail else 0
        return usage, max(0, self.events - done)
