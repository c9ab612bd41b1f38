"""Server-sent-event decoding and per-request timing, kept free of I/O so the arithmetic is testable exactly.

``SSEDecoder.feed(bytes)`` returns the payloads of complete ``data:`` lines
(``\\n`` or ``\\r\\n`` endings; comments and other fields ignored; a line split
across network reads is kept until its end arrives). OpenAI-compatible
servers put one JSON object per ``data:`` line, then ``data: [DONE]``.

``StreamTimer`` receives each payload with the time it was read and keeps the
quantities ``loadgen.records`` defines: first-content time, gaps between
content chunks, content-chunk count, ``usage`` and an in-stream error. All
payloads read in one network read share one timestamp: that is when the
bytes were available to the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

DONE = b"[DONE]"


class SSEDecoder:
    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._pending + data if self._pending else data
        lines = buffer.split(b"\n")
        self._pending = lines.pop()
        out = []
        for line in lines:
            if line.startswith(b"data:"):
                out.append(line[5:].strip())
        return out

    def flush(self) -> list[bytes]:
        """The last line if the stream ended without a newline."""
        rest, self._pending = self._pending, b""
        return [rest[5:].strip()] if rest.startswith(b"data:") else []


def chunk_text(payload: Mapping[str, Any]) -> str | None:
    """Generated text in one streamed chunk (chat delta content/reasoning or completions text)."""
    choices = payload.get("choices")
    if not choices or not isinstance(choices, list):
        return None
    choice = choices[0]
    if not isinstance(choice, Mapping):
        return None
    delta = choice.get("delta")
    if isinstance(delta, Mapping):
        for key in ("content", "reasoning_content", "reasoning"):
            value = delta.get(key)
            if isinstance(value, str) and value:
                return value
        return None
    text = choice.get("text")
    return text if isinstance(text, str) and text else None


def message_text(payload: Mapping[str, Any]) -> str | None:
    """Generated text of a non-streamed response."""
    choices = payload.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], Mapping):
        return None
    message = choices[0].get("message")
    if isinstance(message, Mapping) and isinstance(message.get("content"), str):
        return str(message["content"])
    text = choices[0].get("text")
    return text if isinstance(text, str) else None


class StreamTimer:
    """Timing of one response stream relative to ``sent_s`` (all arguments in seconds)."""

    __slots__ = (
        "cached_tokens",
        "content_chunks",
        "done",
        "end_s",
        "error",
        "first_s",
        "gaps_s",
        "last_s",
        "prompt_tokens",
        "sent_s",
        "usage_tokens",
    )

    def __init__(self, sent_s: float) -> None:
        self.sent_s = sent_s
        self.first_s: float | None = None
        self.last_s: float | None = None
        self.end_s: float | None = None
        self.gaps_s: list[float] = []
        self.content_chunks = 0
        self.usage_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.cached_tokens: int | None = None
        self.error: str | None = None
        self.done = False

    def on_payload(self, now_s: float, raw: bytes) -> None:
        if raw == DONE:
            self.done = True
            self.end_s = now_s
            return
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.error = "bad_stream_chunk"
            return
        if not isinstance(payload, dict):
            return
        self.on_json(now_s, payload)

    def on_json(self, now_s: float, payload: Mapping[str, Any]) -> None:
        error = payload.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, Mapping) else None
            self.error = str(code or "stream_error")
            return
        if chunk_text(payload) is not None:
            self.on_content(now_s)
        usage = payload.get("usage")
        if isinstance(usage, Mapping):
            self.on_usage(usage)

    def on_content(self, now_s: float) -> None:
        if self.first_s is None:
            self.first_s = now_s
        elif self.last_s is not None:
            self.gaps_s.append(now_s - self.last_s)
        self.last_s = now_s
        self.content_chunks += 1

    def on_usage(self, usage: Mapping[str, Any]) -> None:
        completion = usage.get("completion_tokens")
        if isinstance(completion, int):
            self.usage_tokens = completion
        prompt = usage.get("prompt_tokens")
        if isinstance(prompt, int):
            self.prompt_tokens = prompt
        details = usage.get("prompt_tokens_details")
        if isinstance(details, Mapping) and isinstance(details.get("cached_tokens"), int):
            self.cached_tokens = int(details["cached_tokens"])

    def finish(self, now_s: float) -> None:
        """The stream ended (``[DONE]`` already recorded its own time)."""
        if self.end_s is None:
            self.end_s = now_s

    @property
    def output_tokens(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else self.content_chunks
