"""The record of one client request as it moves through the proxy, and what happens at its end.

Handlers fill an ``Exchange`` as facts become known (route, backend, first
byte, usage...). ``finish`` runs exactly once per request in every path
(success, error answer, client cancel) from the handler's ``finally``: it
updates the metrics, the backend's EWMA latencies and, for every request that
reached the decision engine, calls ``Decider.observe(Outcome)``.

Requests refused while parsing (bad JSON, unknown model...) never reached the
decision engine, so they are counted in metrics only. A cancelled request's
``Outcome.status_code`` is 499 (nginx's "client closed request").
"""

from __future__ import annotations

import logging

from core import headers
from core.clock import Clock
from core.errors import SluiceError
from core.protocols import Decider
from core.types import Outcome, RequestFeatures
from router.metrics import CANCELLED, NONE_LABEL, SluiceMetrics, status_class
from router.sse import Usage
from state.fleet import FleetState

CLIENT_CLOSED_STATUS = 499
log = logging.getLogger("sluice.router")


class Exchange:
    __slots__ = (
        "arrival_s",
        "backend_id",
        "cancelled",
        "dispatched_s",
        "error_code",
        "features",
        "first_byte_s",
        "last_byte_s",
        "model",
        "output_tokens",
        "policy",
        "predicted_output_tokens",
        "predicted_ttft_ms",
        "request_id",
        "route",
        "status",
        "streamed",
        "usage",
    )

    def __init__(self, request_id: str, arrival_s: float) -> None:
        self.request_id = request_id
        self.arrival_s = arrival_s
        self.route = NONE_LABEL
        self.model = NONE_LABEL
        self.features: RequestFeatures | None = None
        self.backend_id: str | None = None
        self.policy: str | None = None
        self.predicted_ttft_ms: float | None = None
        self.predicted_output_tokens: float | None = None
        self.status = 0
        self.error_code: str | None = None
        self.cancelled = False
        self.streamed = False
        self.first_byte_s: float | None = None
        self.dispatched_s: float | None = None  # the current attempt left for its backend
        self.last_byte_s: float | None = None
        self.output_tokens = 0
        self.usage: Usage | None = None

    def fail(self, error: SluiceError) -> None:
        self.status = error.status
        self.error_code = error.code

    def response_headers(self) -> dict[str, str]:
        """Sluice's own headers: request id, then the backend, policy and prediction once known.

        The predicted TTFT is the decision's estimate for its first choice, so it is only sent
        when the request is served there (a retry to a fallback clears it).
        """
        out = {headers.REQUEST_ID: self.request_id}
        if self.backend_id is not None:
            out[headers.BACKEND] = self.backend_id
        if self.policy is not None:
            out[headers.POLICY] = self.policy
        if self.predicted_ttft_ms is not None:
            out[headers.PREDICTED_TTFT_MS] = f"{self.predicted_ttft_ms:.1f}"
        return out


def finish(
    exchange: Exchange, metrics: SluiceMetrics, fleet: FleetState, decider: Decider, clock: Clock
) -> None:
    now_s = clock.now_s()
    ex = exchange
    e2e_s = now_s - ex.arrival_s
    series = metrics.series(ex.route, ex.model, ex.backend_id or NONE_LABEL)
    if ex.cancelled:
        series.count(CANCELLED)
        metrics.client_disconnects.labels(_disconnect_stage(ex)).inc()
    else:
        series.count(status_class(ex.status))
    series.e2e.observe(e2e_s)
    if ex.error_code is not None:
        metrics.errors.labels(ex.error_code).inc()
    ttft_ms: float | None = None
    backend_ttft_ms: float | None = None
    if ex.first_byte_s is not None:
        ttft_ms = (ex.first_byte_s - ex.arrival_s) * 1e3
        if ex.dispatched_s is not None:
            backend_ttft_ms = (ex.first_byte_s - ex.dispatched_s) * 1e3
    if ex.output_tokens:
        series.output_tokens.inc(ex.output_tokens)
    if ex.streamed and ttft_ms is not None and not ex.cancelled and ex.backend_id is not None:
        series.ttft.observe(ttft_ms / 1e3)
        tpot_ms = _tpot_ms(ex)
        if tpot_ms is not None:
            series.itl.observe(tpot_ms / 1e3)
        if ex.error_code is None:
            fleet.observe_latency(
                ex.backend_id, ttft_ms if backend_ttft_ms is None else backend_ttft_ms, tpot_ms
            )
    if ex.features is not None:
        _observe(decider, ex, ex.features, (ttft_ms, backend_ttft_ms), e2e_s * 1e3, now_s)


def _disconnect_stage(ex: Exchange) -> str:
    if ex.features is None:
        return "request_body"
    return "before_first_byte" if ex.first_byte_s is None else "mid_stream"


def _tpot_ms(ex: Exchange) -> float | None:
    if ex.first_byte_s is None or ex.last_byte_s is None or ex.output_tokens < 2:
        return None
    return (ex.last_byte_s - ex.first_byte_s) * 1e3 / (ex.output_tokens - 1)


def _observe(
    decider: Decider,
    ex: Exchange,
    features: RequestFeatures,
    ttfts_ms: tuple[float | None, float | None],
    e2e_ms: float,
    now_s: float,
) -> None:
    """``ttfts_ms``: (from arrival, from the answering attempt's dispatch)."""
    usage = ex.usage
    prompt_tokens = features.prompt_tokens
    if usage is not None and usage.prompt_tokens is not None:
        prompt_tokens = usage.prompt_tokens
    outcome = Outcome(
        request_id=ex.request_id,
        backend_id=ex.backend_id,
        route=features.route,
        model=features.model,
        tenant=features.tenant,
        status_code=CLIENT_CLOSED_STATUS if ex.cancelled else ex.status,
        prompt_tokens=prompt_tokens,
        output_tokens=ex.output_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens if usage is not None else None,
        ttft_ms=ttfts_ms[0],
        backend_ttft_ms=ttfts_ms[1],
        e2e_ms=e2e_ms,
        cancelled=ex.cancelled,
        error_code=ex.error_code,
        finished_at_s=now_s,
        predicted_output_tokens=ex.predicted_output_tokens,
    )
    try:
        decider.observe(outcome)
    except Exception:  # a learning hook must never turn a served request into an error
        log.exception("decider.observe failed for request %s", ex.request_id)
