"""Reading and validating a client request, before any decision is made.

Order, cheapest refusal first: declared ``Content-Length`` over
``limits.max_body_bytes`` → 413 without reading the body; a non-JSON
``Content-Type`` → 415 (an absent one is accepted, as OpenAI servers do); the
body read with the size limit enforced as bytes arrive (413 for chunked
uploads that grow too big) and, when the body is not already buffered, under
``limits.body_read_timeout_s`` (408 for stalled or trickling clients); orjson
parse → 400 ``invalid_json``; a JSON object with a string ``model`` → else
400; a configured model → else 404 ``model_not_found``.

Caller-chosen identity comes from headers: ``x-request-id`` (kept when it is
1-128 visible ASCII characters, else a new id); the tenant from the API key
(``tenants.api_keys``, ``Authorization: Bearer <key>``) or else
``x-sluice-tenant`` (default ``default``) — a mapped key wins so a client
cannot spend another tenant's budget; the class from ``x-sluice-priority``,
else the key's default, else the route's; an unknown class name falls back
to that default (never an error) and a tenant's ``max_priority`` lowers the
claim; the session key from ``x-session-id`` or the body's ``user``.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import StreamReader

from core import headers
from core.config import SluiceConfig
from core.errors import (
    BodyReadTimeout,
    BodyTooLarge,
    InvalidParameter,
    InvalidRequest,
    MalformedJSON,
    MissingParameter,
    UnknownModel,
    UnsupportedMediaType,
)

MAX_ID_CHARS = 128
_VISIBLE_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_MESSAGE_VALUE_CHARS = 100


def _shown(value: str) -> str:
    """A client-supplied value, shortened for an error message."""
    return value if len(value) <= _MESSAGE_VALUE_CHARS else value[:_MESSAGE_VALUE_CHARS] + "..."


def check_declared_length(content_length: int | None, max_bytes: int) -> None:
    if content_length is not None and content_length > max_bytes:
        raise BodyTooLarge(f"request body is {content_length} bytes; the limit is {max_bytes} bytes")


def check_content_type(content_type: str | None) -> None:
    if content_type is None:
        return
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime != "application/json" and not mime.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {_shown(content_type)!r}")


async def read_body(content: StreamReader, max_bytes: int, timeout_s: float) -> bytes:
    if content.is_eof():  # small bodies arrive with the headers: no timer needed
        return _collect_buffered(content, max_bytes)
    try:
        async with asyncio.timeout(timeout_s):
            return await _collect(content, max_bytes)
    except TimeoutError:
        raise BodyReadTimeout(f"request body not received within {timeout_s:g} s") from None


def _too_large(max_bytes: int) -> BodyTooLarge:
    return BodyTooLarge(f"request body exceeds the limit of {max_bytes} bytes")


def _collect_buffered(content: StreamReader, max_bytes: int) -> bytes:
    body = content.read_nowait(-1)
    if len(body) > max_bytes:
        raise _too_large(max_bytes)
    return body


async def _collect(content: StreamReader, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise MalformedJSON("request body is empty; expected a JSON object")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {type(parsed).__name__}")
    return parsed


def requested_model(body: Mapping[str, Any], known_models: frozenset[str]) -> str:
    model = body.get("model")
    if model is None:
        raise MissingParameter("you must provide a model parameter", param="model")
    if not isinstance(model, str):
        raise InvalidParameter("model must be a string", param="model")
    if model not in known_models:
        raise UnknownModel(
            f"The model `{_shown(model)}` does not exist or no configured backend serves it", param="model"
        )
    return model


def valid_request_id(value: str | None) -> str | None:
    """The client's ``x-request-id`` when usable as ours (1-128 visible ASCII characters)."""
    if value is not None and _VISIBLE_ID.match(value):
        return value
    return None


def tenant_from(value: str | None) -> str:
    if value is None or value == "":
        return "default"
    if len(value) > MAX_ID_CHARS:
        raise InvalidParameter(f"{headers.TENANT} is longer than {MAX_ID_CHARS} characters")
    return value


def priority_from(value: str | None, default: str, classes: tuple[str, ...]) -> str:
    """The claimed class when it is a configured one, else ``default`` (unknown names are not errors)."""
    if value is None or value not in classes:
        return default
    return value


def api_key_of(authorization: str | None) -> str | None:
    if authorization is None or not authorization.startswith("Bearer "):
        return None
    return authorization[7:].strip() or None


def identity_from(
    req_headers: Mapping[str, str], route_priority: str, config: SluiceConfig
) -> tuple[str, str]:
    """(tenant, effective priority class) of a request; see the module docstring for the rules."""
    tenants = config.tenants
    key = None
    if tenants.api_keys:
        key = tenants.api_keys.get(api_key_of(req_headers.get("Authorization")) or "")
    tenant = key.tenant if key is not None else tenant_from(req_headers.get(headers.TENANT))
    default = key.priority if key is not None and key.priority is not None else route_priority
    classes = config.priority_classes
    priority = priority_from(req_headers.get(headers.PRIORITY), default, classes)
    ceiling = tenants.budgets.get(tenant, tenants.default).max_priority
    if ceiling is not None and classes.index(priority) < classes.index(ceiling):
        priority = ceiling
    return tenant, priority


def session_key_from(header_value: str | None, body: Mapping[str, Any]) -> str | None:
    if header_value:
        return header_value[:MAX_ID_CHARS]
    user = body.get("user")
    return user[:MAX_ID_CHARS] if isinstance(user, str) and user else None


class RequestIds:
    """Unique ids without a syscall per request: a random per-process prefix and a counter."""

    __slots__ = ("_n", "_prefix")

    def __init__(self) -> None:
        self._prefix = "sl-" + os.urandom(6).hex() + "-"
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return self._prefix + format(self._n, "x")
