"""Turning a ``core.errors.SluiceError`` into an aiohttp response.

Statuses, types and codes live only in ``core.errors.ERROR_TABLE``; this
module only renders them: the OpenAI error body, ``x-sluice-error-code``,
``Retry-After`` for rejections, plus the request id and any routing headers
already known when the error happened.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from core.errors import SluiceError

JSON_CONTENT_TYPE = "application/json"


def error_response(error: SluiceError, extra_headers: Mapping[str, str] | None = None) -> web.Response:
    response_headers = error.headers()
    if extra_headers:
        response_headers.update(extra_headers)
    return web.Response(
        status=error.status,
        body=error.body(),
        content_type=JSON_CONTENT_TYPE,
        headers=response_headers,
    )
