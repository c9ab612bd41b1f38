"""Validation of OpenAI chat/completions requests as a simulated vLLM server sees them.

Prompt size and identity come from ``core``: the prompt is rendered with ``core.features.prompt_text``
(the exact function the router uses), counted with ``core.tokens.estimate_tokens`` (``ceil(chars/4)``)
and hashed with ``core.tokens.prefix_chunk_hashes`` (64-character chunks = 16 tokens = one KV block).
So ``usage.prompt_tokens`` equals the router's estimate and a prefix the router believes is cached
is the prefix the simulated cache holds. A real vLLM counts with its tokenizer and chat template;
the simulator trades that for agreement with the router (documented in docs/simulator.md).

Errors follow vLLM's: 400 for a body that is not JSON or not an object, for bad field types, for
``stream_options`` without ``stream``, and for context overflow with vLLM's message
("This model's maximum context length is ..."); 404 for an unknown model. ``n > 1``, which vLLM
supports, is refused with a clear 400 because the simulator generates one choice.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from core.errors import (
    ContextLengthExceeded,
    InvalidParameter,
    InvalidRequest,
    MalformedJSON,
    MissingParameter,
    UnknownModel,
)
from core.features import prompt_text
from core.headers import SIM_OUTPUT_TOKENS
from core.tokens import estimate_tokens, prefix_chunk_hashes
from core.types import Endpoint
from loadgen.sim import output_length
from loadgen.sim.profile import OutputLengthSpec


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    endpoint: Endpoint
    model: str
    prompt_tokens: int
    prompt_hashes: tuple[int, ...]
    max_tokens: int | None
    stream: bool
    include_usage: bool
    output_tokens: int
    finish_reason: str


def _positive_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidParameter(f"'{key}' must be an integer", param=key)
    if value < 1:
        raise InvalidParameter(f"'{key}' must be at least 1, got {value}", param=key)
    return value


def _check_prompt(endpoint: Endpoint, body: Mapping[str, Any]) -> None:
    if endpoint is Endpoint.CHAT:
        messages = body.get("messages")
        if messages is None:
            raise MissingParameter("'messages' is a required property", param="messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidParameter("'messages' must be a non-empty array", param="messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InvalidParameter(
                    f"messages[{i}] must be an object with a string 'role'", param="messages"
                )
        return
    prompt = body.get("prompt")
    if prompt is None:
        raise MissingParameter("'prompt' is a required property", param="prompt")
    ok = isinstance(prompt, str) or (
        isinstance(prompt, list)
        and bool(prompt)
        and (all(isinstance(p, str) for p in prompt) or all(isinstance(p, int) for p in prompt))
    )
    if not ok:
        raise InvalidParameter(
            "'prompt' must be a string, an array of strings or of token ids", param="prompt"
        )


def _stream_flags(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidParameter("'stream' must be a boolean", param="stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise InvalidParameter(
            "Stream options can only be defined when `stream=True`.", param="stream_options"
        )
    if not isinstance(options, dict):
        raise InvalidParameter("'stream_options' must be an object", param="stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise InvalidParameter("'stream_options.include_usage' must be a boolean", param="stream_options")
    return stream, include


def _check_context(prompt_tokens: int, max_tokens: int | None, max_model_len: int) -> None:
    if max_tokens is None and prompt_tokens >= max_model_len:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens} tokens in the messages, Please reduce the length of the messages.",
            param="messages",
        )
    if max_tokens is not None and prompt_tokens + max_tokens > max_model_len:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
            "completion). Please reduce the length of the messages or completion.",
            param="messages",
        )


def decode_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"The request body could not be parsed as JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    return body


def parse_request(
    endpoint: Endpoint,
    raw_body: bytes,
    headers: Mapping[str, str],
    *,
    served_models: tuple[str, ...],
    max_model_len: int,
    rng: random.Random,
    output_spec: OutputLengthSpec,
) -> ParsedRequest:
    """Validate one HTTP request; raises a ``core.errors.SluiceError`` rendered as vLLM would answer."""
    return parse_body(
        endpoint,
        decode_body(raw_body),
        headers,
        served_models=served_models,
        max_model_len=max_model_len,
        rng=rng,
        output_spec=output_spec,
    )


def parse_body(
    endpoint: Endpoint,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    served_models: tuple[str, ...],
    max_model_len: int,
    rng: random.Random,
    output_spec: OutputLengthSpec,
) -> ParsedRequest:
    """Validate an already decoded body (the virtual-time fleet skips the JSON round trip)."""
    model = body.get("model", served_models[0])
    if not isinstance(model, str):
        raise InvalidParameter("'model' must be a string", param="model")
    if model not in served_models:
        raise UnknownModel(f"The model `{model}` does not exist.", param="model")
    _check_prompt(endpoint, body)
    if body.get("n", 1) not in (1, None):
        raise InvalidParameter("n > 1 is not supported by the simulator", param="n")
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    stream, include_usage = _stream_flags(body)
    text = prompt_text(endpoint, body)
    prompt_tokens = max(1, estimate_tokens(text))  # an empty prompt still holds a BOS token
    _check_context(prompt_tokens, max_tokens, max_model_len)
    header_tokens = output_length.parse_header(headers.get(SIM_OUTPUT_TOKENS))
    out_tokens, finish = output_length.resolve(
        header_tokens, max_tokens, prompt_tokens, max_model_len, rng, output_spec
    )
    return ParsedRequest(
        endpoint=endpoint,
        model=model,
        prompt_tokens=prompt_tokens,
        prompt_hashes=prefix_chunk_hashes(text),
        max_tokens=max_tokens,
        stream=stream,
        include_usage=include_usage,
        output_tokens=out_tokens,
        finish_reason=finish,
    )
