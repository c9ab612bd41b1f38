"""Sluice's error hierarchy and the one table that maps each error to an HTTP answer.

::

    SluiceError
    ├── InvalidRequest                      400 invalid_request_error
    │   ├── MalformedJSON                   400 invalid_json
    │   ├── UnsupportedMediaType            415 unsupported_media_type
    │   ├── BodyTooLarge                    413 request_too_large
    │   ├── BodyReadTimeout                 408 request_timeout
    │   ├── MissingParameter                400 missing_required_parameter
    │   ├── InvalidParameter                400 invalid_value
    │   ├── ContextLengthExceeded           400 context_length_exceeded
    │   └── UnknownModel                    404 model_not_found
    ├── RouteNotFound                       404 not_found
    ├── MethodNotAllowed                    405 method_not_allowed
    ├── Rejected                            429 rate_limit_error (+ Retry-After)
    │   ├── Shed                            429 overloaded
    │   ├── QueueTimeout                    429 queue_timeout
    │   └── TenantBudgetExceeded            429 tenant_budget_exceeded
    ├── UpstreamError                       502 upstream_error
    │   ├── NoHealthyBackend                503 no_healthy_backend
    │   ├── BackendConnectError             502 upstream_connect_error
    │   ├── BackendBadResponse              502 upstream_bad_response
    │   ├── BackendTimeout                  504 upstream_timeout
    │   └── BackendFailedMidStream          (SSE error event) upstream_failed_mid_stream
    └── InternalError                       500 internal_error

Every error renders as the OpenAI error body
``{"error": {"message", "type", "code", "param"}}`` plus an
``x-sluice-error-code`` header carrying ``code``. ``ERROR_TABLE`` is the only
place statuses and codes are written down; the data plane and the simulated
backends both render through ``error_body``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import orjson

ERROR_CODE_HEADER = "x-sluice-error-code"
SHED_REASON_HEADER = "x-sluice-shed-reason"
RETRY_AFTER_MS_HEADER = "retry-after-ms"


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    status: int
    type: str
    code: str


class SluiceError(Exception):
    """Base of every error Sluice answers a client with."""

    spec: ClassVar[ErrorSpec] = ErrorSpec(500, "server_error", "internal_error")

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    @property
    def status(self) -> int:
        return self.spec.status

    @property
    def code(self) -> str:
        return self.spec.code

    def headers(self) -> dict[str, str]:
        """Extra response headers this error carries (always the error-code header)."""
        return {ERROR_CODE_HEADER: self.spec.code}

    def body(self) -> bytes:
        return error_body(self.message, self.spec.type, self.spec.code, self.param)


class InvalidRequest(SluiceError):
    spec = ErrorSpec(400, "invalid_request_error", "invalid_request")


class MalformedJSON(InvalidRequest):
    spec = ErrorSpec(400, "invalid_request_error", "invalid_json")


class UnsupportedMediaType(InvalidRequest):
    spec = ErrorSpec(415, "invalid_request_error", "unsupported_media_type")


class BodyTooLarge(InvalidRequest):
    spec = ErrorSpec(413, "invalid_request_error", "request_too_large")


class BodyReadTimeout(InvalidRequest):
    """The client did not finish sending its body in time (a stalled or trickling client)."""

    spec = ErrorSpec(408, "invalid_request_error", "request_timeout")


class MissingParameter(InvalidRequest):
    spec = ErrorSpec(400, "invalid_request_error", "missing_required_parameter")


class InvalidParameter(InvalidRequest):
    spec = ErrorSpec(400, "invalid_request_error", "invalid_value")


class ContextLengthExceeded(InvalidRequest):
    spec = ErrorSpec(400, "invalid_request_error", "context_length_exceeded")


class UnknownModel(InvalidRequest):
    spec = ErrorSpec(404, "invalid_request_error", "model_not_found")


class RouteNotFound(SluiceError):
    spec = ErrorSpec(404, "invalid_request_error", "not_found")


class MethodNotAllowed(SluiceError):
    spec = ErrorSpec(405, "invalid_request_error", "method_not_allowed")


class Rejected(SluiceError):
    """A request refused for capacity reasons; always carries ``Retry-After``."""

    spec = ErrorSpec(429, "rate_limit_error", "rate_limited")

    def __init__(self, message: str, *, retry_after_s: float, reason: str, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.retry_after_s = retry_after_s
        self.reason = reason

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        # Retry-After is whole seconds (RFC 9110); never 0, so clients back off.
        headers["Retry-After"] = str(max(1, int(self.retry_after_s + 0.999)))
        # The precise figure for clients that read it first (the openai client does).
        headers[RETRY_AFTER_MS_HEADER] = str(max(1, round(self.retry_after_s * 1000.0)))
        headers[SHED_REASON_HEADER] = self.reason
        return headers


class Shed(Rejected):
    spec = ErrorSpec(429, "rate_limit_error", "overloaded")


class QueueTimeout(Rejected):
    spec = ErrorSpec(429, "rate_limit_error", "queue_timeout")


class TenantBudgetExceeded(Rejected):
    spec = ErrorSpec(429, "rate_limit_error", "tenant_budget_exceeded")


class UpstreamError(SluiceError):
    spec = ErrorSpec(502, "server_error", "upstream_error")


class NoHealthyBackend(UpstreamError):
    spec = ErrorSpec(503, "server_error", "no_healthy_backend")


class BackendConnectError(UpstreamError):
    spec = ErrorSpec(502, "server_error", "upstream_connect_error")


class BackendBadResponse(UpstreamError):
    spec = ErrorSpec(502, "server_error", "upstream_bad_response")


class BackendTimeout(UpstreamError):
    spec = ErrorSpec(504, "timeout_error", "upstream_timeout")


class BackendFailedMidStream(UpstreamError):
    """The backend failed after bytes reached the client; reported as an SSE error event."""

    spec = ErrorSpec(502, "server_error", "upstream_failed_mid_stream")


class InternalError(SluiceError):
    spec = ErrorSpec(500, "server_error", "internal_error")


ERROR_TABLE: dict[type[SluiceError], ErrorSpec] = {
    cls: cls.spec
    for cls in (
        SluiceError,
        InvalidRequest,
        MalformedJSON,
        UnsupportedMediaType,
        BodyTooLarge,
        BodyReadTimeout,
        MissingParameter,
        InvalidParameter,
        ContextLengthExceeded,
        UnknownModel,
        RouteNotFound,
        MethodNotAllowed,
        Rejected,
        Shed,
        QueueTimeout,
        TenantBudgetExceeded,
        UpstreamError,
        NoHealthyBackend,
        BackendConnectError,
        BackendBadResponse,
        BackendTimeout,
        BackendFailedMidStream,
        InternalError,
    )
}


def error_body(message: str, type_: str, code: str, param: str | None = None) -> bytes:
    """The OpenAI error JSON body."""
    return orjson.dumps({"error": {"message": message, "type": type_, "code": code, "param": param}})


def sse_error_event(error: SluiceError) -> bytes:
    """An SSE ``data:`` event carrying the OpenAI error object, ending a failed stream."""
    return b"data: " + error.body() + b"\n\n"
