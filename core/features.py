"""Build ``RequestFeatures`` from a parsed OpenAI request body.

One pure function shared by the data plane (after it has parsed and
validated the body) and the virtual-time simulator (which builds the same
bodies from a workload), so both feed the predictors and policies identical
features. Only the request itself is read: simulator ground-truth headers
never reach this function.

Cost is bounded for huge prompts: the last user message is truncated to
``LAST_USER_TEXT_MAX_CHARS`` and prefix hashing stops after
``PREFIX_MAX_CHUNKS`` chunks (64 KiB of prompt at the default chunk size).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.tokens import (
    MESSAGE_END,
    PREFIX_CHUNK_CHARS,
    ROLE_SEPARATOR,
    content_text,
    estimate_tokens,
    prefix_chunk_hashes,
    render_chat_prompt,
    render_completion_prompt,
)
from core.types import Endpoint, RequestFeatures

LAST_USER_TEXT_MAX_CHARS = 2_000
PREFIX_MAX_CHUNKS = 1_024


def prompt_text(endpoint: Endpoint, body: Mapping[str, Any]) -> str:
    """The text whose size and prefix identity the request is judged by."""
    if endpoint is Endpoint.CHAT:
        messages = body.get("messages")
        return render_chat_prompt(messages) if isinstance(messages, list) else ""
    if endpoint is Endpoint.COMPLETIONS:
        return render_completion_prompt(body.get("prompt"))
    return render_completion_prompt(body.get("input"))


def requested_max_tokens(body: Mapping[str, Any]) -> int | None:
    """``max_completion_tokens`` (newer chat API) or ``max_tokens``; None when absent or not an int."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _clip(text: str) -> str:
    """Keep the head and the tail of long text: instructions sit at either end of pasted documents."""
    if len(text) <= LAST_USER_TEXT_MAX_CHARS:
        return text
    half = LAST_USER_TEXT_MAX_CHARS // 2
    return text[:half] + text[-half:]


def _chat_prompt_and_stats(messages: list[Any]) -> tuple[str, str, int]:
    """``render_chat_prompt(messages)`` and ``_chat_stats``' last user text and user turns, in one pass."""
    pieces: list[str] = []
    last_user = ""
    user_turns = 0
    for message in messages:
        # A parsed JSON body's messages are dicts: checked and read as dicts (compiled: no ABC instance
        # check, no generic method call); any other Mapping is read the same way through its interface.
        if isinstance(message, dict):  # noqa: SIM114  # one branch each: this one compiles to dict reads
            role = message.get("role")
            content = content_text(message.get("content"))
        elif isinstance(message, Mapping):
            role = message.get("role")
            content = content_text(message.get("content"))
        else:
            continue
        pieces.append(role if isinstance(role, str) else "")
        pieces.append(ROLE_SEPARATOR)
        pieces.append(content)
        pieces.append(MESSAGE_END)
        if role == "user":
            user_turns += 1
            last_user = content
    return "".join(pieces), last_user, user_turns


def client_retry_count(value: str | None) -> int | None:
    """The openai client's ``x-stainless-retry-count`` (a non-negative int), None if absent or garbled."""
    if value is None:
        return None
    try:
        count = int(value.strip())
    except ValueError:
        return None
    return count if count >= 0 else None


def build_features(
    *,
    request_id: str,
    endpoint: Endpoint,
    body: Mapping[str, Any],
    route: str,
    tenant: str,
    priority: str,
    arrival_s: float,
    session_key: str | None = None,
    client_retry_count: int | None = None,
) -> RequestFeatures:
    messages = body.get("messages") if endpoint is Endpoint.CHAT else None
    if isinstance(messages, list):
        text, last_user, n_user_turns = _chat_prompt_and_stats(messages)
        n_messages = len(messages)
    elif endpoint is Endpoint.CHAT:
        text, last_user, n_messages, n_user_turns = "", "", 0, 0
    else:
        text = prompt_text(endpoint, body)
        last_user, n_messages, n_user_turns = text, 1, 1
    return request_features(
        request_id,
        endpoint,
        body,
        route,
        tenant,
        priority,
        arrival_s,
        session_key,
        client_retry_count,
        text,
        prefix_chunk_hashes(text, PREFIX_CHUNK_CHARS, PREFIX_MAX_CHUNKS),
        last_user,
        n_messages,
        n_user_turns,
    )


def request_features(
    request_id: str,
    endpoint: Endpoint,
    body: Mapping[str, Any],
    route: str,
    tenant: str,
    priority: str,
    arrival_s: float,
    session_key: str | None,
    client_retry_count: int | None,
    text: str,
    prefix_hashes: tuple[int, ...],
    last_user: str,
    n_messages: int,
    n_user_turns: int,
) -> RequestFeatures:
    """``build_features``' last step, once the prompt is rendered and hashed: the ``RequestFeatures``.

    Its own function (positional arguments) so that ``bench/decision_tail.py`` times this step as the
    data plane runs it, compiled: timed there as a 17-keyword constructor call from interpreted code,
    it read ~3.7 us at the median, ~2 us of which was that call's own cost (now ~1.7 us).
    """
    model = body.get("model")
    return RequestFeatures(
        request_id=request_id,
        endpoint=endpoint,
        route=route,
        model=model if isinstance(model, str) else "",
        tenant=tenant,
        priority=priority,
        prompt_tokens=estimate_tokens(text),
        prompt_chars=len(text),
        prefix_hashes=prefix_hashes,
        last_user_text=_clip(last_user),
        n_messages=n_messages,
        n_user_turns=n_user_turns,
        max_tokens=requested_max_tokens(body),
        stream=body.get("stream") is True,
        arrival_s=arrival_s,
        session_key=session_key,
        client_retry_count=client_retry_count,
    )
