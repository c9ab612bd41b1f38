"""Admit, queue or shed one request: a pure function of an ``AdmissionView``.

The rule, in order (formulas.md §5; Google SRE "Handling Overload"):

1. **Tenant budget.** A tenant over its token-rate budget or concurrency cap
   is refused (429 ``tenant_budget`` / ``tenant_concurrency``), with
   Retry-After = time until its bucket holds enough tokens.
2. **Below capacity, admit.** If some healthy backend serving the model has a
   free concurrency slot and KV headroom for the request (prompt not cached +
   p90 predicted output, over the watermark), the request goes now. Nothing
   is shed below capacity.
3. **At capacity, predict the wait.** wait = (requests queued at this class
   or better + 1) / the rate at which the queue drains (Little's law): the
   larger of the fleet's completions/s and first bytes/s, since completions
   lag admissions by a whole E2E; predicted TTFT if queued = wait + the best
   backend's predicted TTFT. While neither rate is known (cold start)
   nothing is rejected as infeasible.
4. **Early rejection.** If that misses the route's TTFT SLO with margin
   (``> (1 - margin) x SLO``), refuse now (429 ``slo_infeasible``) instead
   of timing out later; a client is better served by an honest "not now".
5. **Queue** until the class deadline if the waiting room can take it (it may
   evict a less important class to make room); else 429 ``queue_full``.

Retry-After for a capacity refusal is ``capacity_retry_after_s``: the time at
which the capacity left to the request's class (after the classes above it)
covers the work ahead of it and the returns already promised
(``state.retry_ledger``), so a client that honours it is served when it
comes back, not refused again by the next wave of more important arrivals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.types import AdmissionDecision, Admit, Queue, Shed, ShedReason


@dataclass(frozen=True, slots=True)
class AdmissionView:
    """Everything the admission rule reads, frozen at decision time."""

    now_s: float
    has_free_slot: bool
    kv_headroom_ok: bool
    queued_ahead_requests: int
    queue_can_accept: bool
    service_rate_rps: float  # how fast the queue drains: max(completions/s, first bytes/s) of the fleet
    # The Retry-After a capacity refusal promises (``state.retry_ledger``: when the capacity left to
    # this class covers the work ahead), already within the bounds.
    capacity_retry_after_s: float
    best_predicted_ttft_ms: float | None
    slo_ttft_ms: float | None
    slo_margin_frac: float
    queue_deadline_ms: float
    shed_infeasible: bool
    tenant_reason: ShedReason | None
    tenant_retry_after_s: float
    retry_after_min_s: float
    retry_after_max_s: float

    def clamp_retry_after(self, seconds: float) -> float:
        if math.isnan(seconds):
            seconds = self.retry_after_max_s
        return min(self.retry_after_max_s, max(self.retry_after_min_s, seconds))

    def predicted_wait_s(self) -> float | None:
        """Time until this request would reach a backend if queued now; None while the rate is unknown."""
        if self.service_rate_rps <= 0:
            return None
        return (self.queued_ahead_requests + 1) / self.service_rate_rps


def decide(view: AdmissionView) -> AdmissionDecision:
    if view.tenant_reason is not None:
        return Shed(view.tenant_reason, view.clamp_retry_after(view.tenant_retry_after_s))
    if view.has_free_slot and view.kv_headroom_ok:
        return Admit()
    wait_s = view.predicted_wait_s()
    retry_after_s = view.clamp_retry_after(view.capacity_retry_after_s)
    if view.shed_infeasible and view.slo_ttft_ms is not None and wait_s is not None:
        budget_ms = (1.0 - view.slo_margin_frac) * view.slo_ttft_ms
        ttft_if_queued_ms = wait_s * 1000.0 + (view.best_predicted_ttft_ms or 0.0)
        if ttft_if_queued_ms > budget_ms:
            return Shed(ShedReason.SLO_INFEASIBLE, retry_after_s)
    if view.queue_deadline_ms <= 0 or not view.queue_can_accept:
        return Shed(ShedReason.QUEUE_FULL, retry_after_s)
    return Queue(deadline_s=view.now_s + view.queue_deadline_ms / 1000.0)
