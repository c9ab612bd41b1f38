"""OpenAI response bodies and SSE events in vLLM's shapes, pre-encoded so a token costs a concatenation.

Streaming (vLLM's order): at the first token a role event (chat only:
``delta: {"role": "assistant", "content": ""}``), then one event per token (or per flush when
coalescing: several tokens' text in one event), the last one carrying ``finish_reason``; then, with
``stream_options.include_usage``, an event with ``"choices": []`` and ``usage``; then
``data: [DONE]``. ``usage.prompt_tokens_details.cached_tokens`` is the prefix-cache hit of the
request's first scheduling, as vLLM reports it.

Generated text: every token is a 4-character word from a fixed list, so ``ceil(len(text) / 4)`` of
the output equals its token count (the same estimator as the prompt side).
"""

from __future__ import annotations

from typing import Any

import orjson

from core.types import Endpoint

WORDS = (" the", " sim", " GPU", " KV ", " and", " of ", " to ", " is ", " a  ", " in ")
_DONE = b"data: [DONE]\n\n"


def token_text(index: int, count: int) -> str:
    """Text of ``count`` tokens starting at output position ``index``."""
    return "".join(WORDS[(index + i) % len(WORDS)] for i in range(count))


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": {"cached_tokens": max(0, cached_tokens)},
    }


class StreamEncoder:
    """The SSE events of one streaming response."""

    __slots__ = ("_created", "_endpoint", "_framed", "_head", "_id", "_model_json", "_tail")

    def __init__(self, endpoint: Endpoint, request_id: str, model: str, created_s: int) -> None:
        self._endpoint = endpoint
        self._id = request_id
        self._created = created_s
        self._framed: list[bytes] | None = None
        self._model_json = orjson.dumps(model).decode()
        ident = orjson.dumps(request_id).decode()
        if endpoint is Endpoint.CHAT:
            self._head = (
                f'data: {{"id":{ident},"object":"chat.completion.chunk","created":{created_s},'
                f'"model":{self._model_json},"choices":[{{"index":0,"delta":{{"content":'
            ).encode()
            self._tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        else:
            self._head = (
                f'data: {{"id":{ident},"object":"text_completion","created":{created_s},'
                f'"model":{self._model_json},"choices":[{{"index":0,"text":'
            ).encode()
            self._tail = b',"logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'

    def framed_tokens(self, index: int, count: int) -> bytes:
        """``count`` one-token events, each already framed as an HTTP/1.1 chunk (the per-token hot path).

        The ten possible events of a stream are encoded once; a token then costs a list lookup.
        """
        framed = self._framed
        if framed is None:
            framed = self._framed = []
            for i in range(len(WORDS)):
                event = self.tokens(i, 1)
                framed.append(b"%x\r\n%b\r\n" % (len(event), event))
        n = len(framed)
        if count == 1:
            return framed[index % n]
        return b"".join(framed[(index + i) % n] for i in range(count))

    def role(self) -> bytes:
        """The chat role event vLLM sends before the first token (empty for completions)."""
        if self._endpoint is not Endpoint.CHAT:
            return b""
        return self._head.replace(b'"delta":{"content":', b'"delta":{"role":"assistant","content":') + (
            b'""' + self._tail
        )

    def tokens(self, index: int, count: int) -> bytes:
        """One event carrying ``count`` tokens' text."""
        return self._head + orjson.dumps(token_text(index, count)) + self._tail

    def each_token(self, index: int, count: int) -> bytes:
        """``count`` events of one token each (a late event loop catching up keeps one event per token)."""
        if count == 1:
            return self.tokens(index, 1)
        return b"".join(self.tokens(index + i, 1) for i in range(count))

    def last(self, index: int, count: int, finish_reason: str, per_token: bool = False) -> bytes:
        """The final event (with ``finish_reason``); with ``per_token``, one event per earlier token first."""
        if per_token and count > 1:
            return self.each_token(index, count - 1) + self.last(index + count - 1, 1, finish_reason)
        text = orjson.dumps(token_text(index, count))
        reason = orjson.dumps(finish_reason)
        if self._endpoint is Endpoint.CHAT:
            tail = b'},"logprobs":null,"finish_reason":' + reason + b',"stop_reason":null}]}\n\n'
        else:
            tail = b',"logprobs":null,"finish_reason":' + reason + b',"stop_reason":null}]}\n\n'
        return self._head + text + tail

    def usage_event(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> bytes:
        obj = "chat.completion.chunk" if self._endpoint is Endpoint.CHAT else "text_completion"
        body = {
            "id": self._id,
            "object": obj,
            "created": self._created,
            "model": orjson.loads(self._model_json),
            "choices": [],
            "usage": usage(prompt_tokens, completion_tokens, cached_tokens),
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    @staticmethod
    def done() -> bytes:
        return _DONE


def unary_body(
    endpoint: Endpoint,
    request_id: str,
    model: str,
    created_s: int,
    completion_tokens: int,
    finish_reason: str,
    prompt_tokens: int,
    cached_tokens: int,
) -> bytes:
    """A complete non-streaming ``chat.completion`` or ``text_completion`` body."""
    text = token_text(0, completion_tokens)
    choice: dict[str, Any]
    if endpoint is Endpoint.CHAT:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "tool_calls": []},
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
        }
        obj = "chat.completion"
    else:
        choice = {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": finish_reason,
            "stop_reason": None,
        }
        obj = "text_completion"
    return orjson.dumps(
        {
            "id": request_id,
            "object": obj,
            "created": created_s,
            "model": model,
            "choices": [choice],
            "usage": usage(prompt_tokens, completion_tokens, cached_tokens),
        }
    )


def models_body(models: tuple[str, ...], max_model_len: int, created_s: int) -> bytes:
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {
                    "id": m,
                    "object": "model",
                    "created": created_s,
                    "owned_by": "vllm",
                    "root": m,
                    "parent": None,
                    "max_model_len": max_model_len,
                }
                for m in models
            ],
        }
    )
