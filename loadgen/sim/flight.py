"""One request's journey through the virtual-time fleet, and the engine listener that reports on it.

While an attempt is on a backend the flight holds the proxy's own ``InFlightGuard`` (``state.fleet``),
exactly as ``router.proxy`` holds one per attempt: the guard carries the in-flight counts, the
awaiting-first-byte count, the predicted decode tokens and the attempt's circuit-breaker verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from core.types import Outcome, RequestFeatures, RoutingDecision
from loadgen.sim.records import RequestRecord
from loadgen.sim.request import SimRequest
from loadgen.workload import WorkloadRequest
from state.inflight import InFlightGuard


class EventSink(Protocol):
    def on_engine_event(self, kind: int, flight: Flight, t: float) -> None: ...


class Flight:
    """Mutable state of a request between its arrival and its outcome."""

    FIRST_TOKEN = 1
    FINISHED = 2
    DROPPED = 3

    __slots__ = (
        "attempt",
        "backend_id",
        "decision",
        "dispatched_s",
        "done",
        "drop_after",
        "features",
        "first_byte",
        "guard",
        "last_error",
        "queued_at_s",
        "record",
        "sim",
        "sink",
        "wr",
    )

    def __init__(
        self, sink: EventSink, wr: WorkloadRequest, features: RequestFeatures, record: RequestRecord
    ) -> None:
        self.sink = sink
        self.wr = wr
        self.features = features
        self.record = record
        self.decision: RoutingDecision | None = None
        self.attempt = 0
        self.backend_id: str | None = None
        self.sim: SimRequest | None = None
        self.first_byte = False
        self.guard: InFlightGuard | None = None  # the current attempt's in-flight accounting
        self.done = False
        self.drop_after: int | None = None
        self.last_error: tuple[int, str] | None = None
        self.queued_at_s: float | None = None
        self.dispatched_s: float | None = None  # the current attempt left for its backend

    @property
    def predicted_output_tokens(self) -> float | None:
        return None if self.decision is None else self.decision.predicted_output_tokens

    # --- RequestListener -------------------------------------------------------------------------

    def on_tokens(self, request: SimRequest, times_s: Sequence[float]) -> None:
        if request.num_output == len(times_s):
            self.sink.on_engine_event(Flight.FIRST_TOKEN, self, times_s[0])
        drop = self.drop_after
        if drop is not None and request.num_output >= drop:
            self.drop_after = None
            first_new = request.num_output - len(times_s) + 1  # output position of times_s[0]
            self.sink.on_engine_event(Flight.DROPPED, self, times_s[max(0, drop - first_new)])

    def on_finished(self, request: SimRequest) -> None:
        assert request.finished_s is not None
        self.sink.on_engine_event(Flight.FINISHED, self, request.finished_s)

    # --- the end -----------------------------------------------------------------------------------

    def close(self, t: float, status: int, code: str | None, delay_s: float) -> float | None:
        """Fill the record at the request's end (client time ``t``); returns its TPOT in ms, if any."""
        self.done = True
        record = self.record
        record.status = status
        record.error_code = code
        record.backend_id = self.backend_id if self.attempt else None
        record.e2e_s = t - record.sent_s
        sim = self.sim
        if sim is None:
            return None
        record.output_tokens = sim.num_output
        record.cached_tokens = max(0, sim.cached_tokens) if sim.first_scheduled_s is not None else None
        record.preemptions = sim.num_preemptions
        record.prompt_tokens = sim.prompt_tokens
        record.token_times_s = [x + delay_s for x in sim.token_times] if delay_s else sim.token_times
        if status == 200 and record.ttft_s is not None and sim.num_output > 1:
            return (record.e2e_s - record.ttft_s) / (sim.num_output - 1) * 1000.0
        return None

    def backend_ttft_ms(self) -> float | None:
        """First token minus the answering attempt's dispatch (waiting room and earlier tries excluded)."""
        r = self.record
        if r.ttft_s is None or self.dispatched_s is None:
            return None
        return (r.sent_s + r.ttft_s - self.dispatched_s) * 1000.0

    def outcome(self, t: float) -> Outcome:
        r = self.record
        return Outcome(
            request_id=r.request_id,
            backend_id=r.backend_id,
            route=r.route,
            model=self.features.model,
            tenant=r.tenant,
            status_code=r.status,
            prompt_tokens=r.prompt_tokens,
            output_tokens=r.output_tokens,
            cached_prompt_tokens=r.cached_tokens,
            ttft_ms=None if r.ttft_s is None else r.ttft_s * 1000.0,
            backend_ttft_ms=self.backend_ttft_ms(),
            e2e_ms=(r.e2e_s or 0.0) * 1000.0,
            error_code=r.error_code,
            finished_at_s=t,
            predicted_output_tokens=self.predicted_output_tokens,
        )
