"""What the virtual-time fleet reports per request, client-side, in seconds of simulated time.

Definitions match the real client's (vLLM/AIPerf, formulas.md section 8): ``ttft_s`` from the moment
the client sent the request to its first token; ``token_times_s`` the absolute time of every token
(``itl_s()`` the gaps between them); ``e2e_s`` to the last token; ``tpot_s()`` =
``(e2e - ttft) / (output_tokens - 1)``. ``sent_s`` is when the client sent it: the workload's
``arrival_s``, or later for a dependent turn (its parent's end + think time). Requests Sluice refused
carry ``status`` 429 with ``error_code`` (``overloaded``, ``queue_timeout``), the admission reason in
``shed_reason`` (what the proxy sends in ``x-sluice-shed-reason``) and ``retry_after_s``.

``to_load_record`` gives the load generator's record (``loadgen.records``), so a virtual-time run is
summarised, plotted and written by the same code as a real replay (``loadgen.results``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from loadgen.records import Outcome
from loadgen.records import RequestRecord as LoadRecord

_OUTCOME_BY_STATUS = {200: Outcome.OK, 429: Outcome.SHED, 503: Outcome.UNAVAILABLE}


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    arrival_s: float
    sent_s: float
    tenant: str
    priority: str
    route: str
    session_id: str | None
    status: int = 0
    error_code: str | None = None
    backend_id: str | None = None
    attempts: int = 0
    queue_wait_s: float = 0.0
    ttft_s: float | None = None
    e2e_s: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int | None = None
    preemptions: int = 0
    predicted_ttft_ms: float | None = None
    retry_after_s: float | None = None
    shed_reason: str | None = None
    true_output_tokens: int = 0
    source: str = ""
    trace_prompt_tokens: int | None = None
    token_times_s: Sequence[float] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.status == 200

    def itl_s(self) -> list[float]:
        t = self.token_times_s
        return [t[i] - t[i - 1] for i in range(1, len(t))]

    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.e2e_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)

    def to_load_record(self, with_itl: bool = True) -> LoadRecord:
        """The client-side record a real replay would have written for this request.

        ``scheduled_s`` is the send time (a dependent turn is scheduled when its parent ended plus
        think time, as the real client does). ``with_itl=False`` leaves the per-chunk gaps out: a
        long benchmark keeps TPOT per request but would otherwise hold every token gap in memory.
        """
        ok = self.status == 200
        e2e_ms = None if self.e2e_s is None else self.e2e_s * 1000.0
        return LoadRecord(
            request_id=self.request_id,
            scheduled_s=self.sent_s,
            true_output_tokens=self.true_output_tokens,
            source=self.source,
            tenant=self.tenant,
            priority=self.priority,
            session_id=self.session_id,
            trace_prompt_tokens=self.trace_prompt_tokens,
            outcome=_OUTCOME_BY_STATUS.get(self.status, Outcome.ERROR),
            sent_s=self.sent_s,
            end_s=None if self.e2e_s is None else self.sent_s + self.e2e_s,
            status=self.status,
            error=None if ok else self.error_code or f"http_{self.status}",
            shed_reason=self.shed_reason,
            retry_after_s=self.retry_after_s,
            attempts=self.attempts,
            backend=self.backend_id,
            ttft_ms=None if self.ttft_s is None else self.ttft_s * 1000.0,
            e2e_ms=e2e_ms,
            itl_ms=[gap * 1000.0 for gap in self.itl_s()] if with_itl else [],
            output_tokens=self.output_tokens,
            output_tokens_from_usage=True,
            prompt_tokens=self.prompt_tokens,
            cached_prompt_tokens=self.cached_tokens,
        )
