"""Per-request listeners that turn engine progress into HTTP responses and vLLM metrics.

``StreamResponder`` writes SSE as the engine commits steps: one event per token by default; with
coalescing, the first token goes out at once (TTFT stays exact) and later tokens are held until
the backend's next flush (``stream_coalesce_ms``), then sent as one event carrying their text, as
vLLM's ``--stream-interval`` does. The last event carries ``finish_reason``; the usage event and
``[DONE]`` follow in the same write. ``UnaryResponder`` answers a non-streaming request when it
finishes. Both record TTFT, every inter-token gap, end-to-end and queue time in the backend's
histograms, with engine times (the instants tokens were produced, not when a lagging event loop
delivered them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from loadgen.sim.http11 import HttpConnection
from loadgen.sim.metrics import BackendMetrics
from loadgen.sim.openai_api import ParsedRequest
from loadgen.sim.request import SimRequest
from loadgen.sim.responses import StreamEncoder, unary_body


class Host(Protocol):
    """What a responder needs from its backend."""

    metrics: BackendMetrics
    chunks_total: int

    def mark_dirty(self, stream: StreamResponder) -> None: ...

    def drop_connection(self, request: SimRequest, conn: HttpConnection) -> None: ...


def _record_tokens(metrics: BackendMetrics, req: SimRequest, n: int) -> None:
    times = req.token_times
    total = len(times)
    if n == 1 and total > 1:  # the common case: one more decode token
        metrics.itl.observe(times[-1] - times[-2])
        return
    first = total - n
    if first == 0:
        if req.first_token_s is not None:
            metrics.ttft.observe(req.first_token_s - req.arrival_s)
        first = 1
    itl = metrics.itl
    for i in range(first, total):
        itl.observe(times[i] - times[i - 1])


def _record_finish(metrics: BackendMetrics, req: SimRequest, reason: str) -> None:
    finished = req.finished_s if req.finished_s is not None else req.arrival_s
    metrics.e2e.observe(finished - req.arrival_s)
    if req.first_scheduled_s is not None:
        metrics.queue.observe(req.first_scheduled_s - req.arrival_s)
    metrics.prompt_tokens.observe(req.prompt_tokens)
    metrics.gen_tokens.observe(req.num_output)
    metrics.finished_by_reason[reason] = metrics.finished_by_reason.get(reason, 0) + 1


class StreamResponder:
    __slots__ = (
        "coalesce",
        "conn",
        "drop_after",
        "enc",
        "host",
        "include_usage",
        "parsed",
        "pending",
        "sent",
    )

    def __init__(
        self,
        host: Host,
        conn: HttpConnection,
        parsed: ParsedRequest,
        enc: StreamEncoder,
        *,
        coalesce: bool,
        drop_after: int | None,
    ) -> None:
        self.host = host
        self.conn = conn
        self.parsed = parsed
        self.enc = enc
        self.coalesce = coalesce
        self.drop_after = drop_after
        self.include_usage = parsed.include_usage
        self.sent = 0
        self.pending = 0

    def on_tokens(self, request: SimRequest, times_s: Sequence[float]) -> None:
        n = len(times_s)
        _record_tokens(self.host.metrics, request, n)
        if self.drop_after is not None and request.num_output >= self.drop_after:
            self.host.drop_connection(request, self.conn)
            return
        if request.num_output >= request.output_target:
            if self.sent == 0:
                self._write(self.enc.role())
            return  # on_finished sends the rest with finish_reason
        if self.sent == 0 and self.pending == 0:
            self._write(self.enc.role() + self.enc.each_token(0, n))
            self.sent = n
        elif self.coalesce:
            if self.pending == 0:
                self.host.mark_dirty(self)
            self.pending += n
        else:
            self.conn.write_framed(self.enc.framed_tokens(self.sent, n))
            self.host.chunks_total += 1
            self.sent += n

    def flush(self) -> None:
        if self.pending and self.conn.writable:
            self._write(self.enc.tokens(self.sent, self.pending))
            self.sent += self.pending
        self.pending = 0

    def _write(self, data: bytes) -> None:
        self.conn.write_chunk(data)
        self.host.chunks_total += 1

    def on_finished(self, request: SimRequest) -> None:
        remaining = request.num_output - self.sent
        data = self.enc.last(self.sent, remaining, request.finish_reason, per_token=not self.coalesce)
        if self.include_usage:
            data += self.enc.usage_event(request.prompt_tokens, request.num_output, request.cached_tokens)
        data += self.enc.done()
        self.pending = 0
        self.sent = request.num_output
        self.conn.end_stream(data)
        self.host.chunks_total += 1
        _record_finish(self.host.metrics, request, request.finish_reason)


class UnaryResponder:
    __slots__ = ("conn", "created_s", "drop_after", "host", "parsed", "response_id")

    def __init__(
        self,
        host: Host,
        conn: HttpConnection,
        parsed: ParsedRequest,
        response_id: str,
        created_s: int,
        *,
        drop_after: int | None,
    ) -> None:
        self.host = host
        self.conn = conn
        self.parsed = parsed
        self.response_id = response_id
        self.created_s = created_s
        self.drop_after = drop_after

    def on_tokens(self, request: SimRequest, times_s: Sequence[float]) -> None:
        _record_tokens(self.host.metrics, request, len(times_s))
        if self.drop_after is not None and request.num_output >= self.drop_after:
            self.host.drop_connection(request, self.conn)

    def on_finished(self, request: SimRequest) -> None:
        body = unary_body(
            self.parsed.endpoint,
            self.response_id,
            self.parsed.model,
            self.created_s,
            request.num_output,
            request.finish_reason,
            request.prompt_tokens,
            request.cached_tokens,
        )
        self.conn.respond(200, body, headers=[("x-request-id", request.request_id)])
        _record_finish(self.host.metrics, request, request.finish_reason)
