"""What the virtual-time fleet reports per request, client-side, in seconds of simulated time.

Definitions match the real client's (vLLM/AIPerf, formulas.md section 8): ``ttft_s`` from the moment
the client sent the request to its first token; ``token_times_s`` the absolute time of every token
(``itl_s()`` the gaps between them); ``e2e_s`` to the last token; ``tpot_s()`` =
``(e2e - ttft) / (output_tokens - 1)``. ``sent_s`` is when the client sent it: the workload's
``arrival_s``, or later for a dependent turn (its parent's end + think time). Requests Sluice refused
carry ``status`` 429 with ``error_code`` (``overloaded``, ``queue_timeout``, ...) and ``retry_after_s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


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
