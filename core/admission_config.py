"""Configuration of admission control: tenants, the waiting room, adaptive concurrency limits.

Part of the one Sluice config schema (``core.config`` embeds these models);
kept in its own module because it is the largest section.

Semantics worth knowing before editing a config:

* Priority classes are listed most important first in ``priority_classes``;
  overload sheds from the end of that list. A request names its class with the
  ``x-sluice-priority`` header (or gets its API key's or route's default); an
  unknown class name falls back to the route's default class, and a tenant's
  ``max_priority`` clamps what it may claim.
* A tenant budget is a token bucket over *predicted* work: prompt tokens plus
  the predicted (p50) output length, never ``max_tokens`` (an absurd cap costs
  nothing extra). The charge is reconciled with the real output length when
  the request ends. ``tokens_per_s: 0`` or ``max_concurrency: 0`` block a tenant.
* The waiting room holds requests while every backend is at its concurrency
  limit; each class has a longest wait (``queue_deadline_ms``), after which the
  request gets 429 ``queue_timeout``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantBudgetConfig(_Strict):
    tokens_per_s: float | None = Field(None, ge=0, description="refill rate; None = unlimited, 0 = blocked")
    burst_tokens: float | None = Field(None, ge=0, description="bucket size; default 10 s of refill")
    max_concurrency: int | None = Field(None, ge=0, description="in flight + queued; 0 = blocked")
    max_priority: str | None = Field(None, description="most important class the tenant may claim")

    @property
    def bucket_tokens(self) -> float | None:
        if self.tokens_per_s is None:
            return None
        if self.burst_tokens is not None:
            return self.burst_tokens
        return self.tokens_per_s * 10.0


class ApiKeyConfig(_Strict):
    """What an ``Authorization: Bearer <key>`` maps to."""

    tenant: str = Field(min_length=1)
    priority: str | None = None


class TenantsConfig(_Strict):
    default: TenantBudgetConfig = Field(
        default_factory=TenantBudgetConfig, description="applies to each unlisted tenant separately"
    )
    budgets: dict[str, TenantBudgetConfig] = Field(default_factory=dict)
    api_keys: dict[str, ApiKeyConfig] = Field(default_factory=dict)
    max_tracked: int = Field(10_000, ge=1, description="tenants kept in memory (least recently seen dropped)")


class ConcurrencyLimitConfig(_Strict):
    """Per-backend adaptive in-flight limit (Netflix Gradient2 or Vegas, fed with TTFT).

    ``fixed`` uses each backend's ``max_concurrency`` (or ``initial``);
    ``none`` disables the limit (the waiting room then never holds anything).
    """

    algorithm: Literal["gradient2", "vegas", "fixed", "none"] = "gradient2"
    initial: int = Field(32, ge=1)
    min: int = Field(4, ge=1)
    max: int = Field(512, ge=1)
    smoothing: float = Field(0.2, gt=0, le=1)
    rtt_tolerance: float = Field(1.5, ge=1)
    long_window: int = Field(600, ge=1, description="samples in the long-term TTFT average")
    queue_size: int = Field(4, ge=0, description="Gradient2 headroom added every update")
    ttft_target_ms: float | None = Field(
        None,
        gt=0,
        description="the backend's TTFT share of the SLO: the prefill cap keeps each backend's prompts "
        "awaiting their first byte at first-byte rate x this; default: a quarter of the smallest route TTFT "
        "SLO (no target when no route has one)",
    )
    stream_target_factor: float | None = Field(
        None,
        ge=1,
        description="the stream limit steers each backend's TTFT to this many ttft_target_ms (a TTFT at or "
        "below it never shrinks a limit); default: 2 when every route bounds prompts by the fleet prefill "
        "budget (prefill_budget: fleet, the default), else 1",
    )

    @model_validator(mode="after")
    def _bounds(self) -> ConcurrencyLimitConfig:
        if self.algorithm in ("gradient2", "vegas") and not self.min <= self.initial <= self.max:
            raise ValueError("need min <= initial <= max")
        return self


class WaitingRoomConfig(_Strict):
    max_requests: int = Field(1024, ge=0, description="all classes together; 0 = never queue")
    lifo_below_top_class: bool = Field(
        True,
        description="serve every class below the most important newest first (adaptive LIFO); the "
        "most important class stays FIFO, where a long wait is the exception. Pairs with a route's "
        "prefill_budget: fleet (docs/admission.md, 'Overload benchmark'); false: FIFO everywhere",
    )


class AdmissionConfig(_Strict):
    """Fleet-wide admission settings."""

    enabled: bool = True
    concurrency: ConcurrencyLimitConfig = Field(default_factory=ConcurrencyLimitConfig)
    waiting_room: WaitingRoomConfig = Field(default_factory=WaitingRoomConfig)
    kv_watermark_frac: float = Field(0.01, ge=0, lt=1, description="KV share kept free (memory admission)")
    retry_after_min_s: float = Field(1.0, ge=0)
    retry_after_max_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _retry_bounds(self) -> AdmissionConfig:
        if self.retry_after_min_s > self.retry_after_max_s:
            raise ValueError("retry_after_min_s must not exceed retry_after_max_s")
        return self


class RouteAdmissionConfig(_Strict):
    """Per-route admission: SLO feasibility margin and how long each class may wait."""

    slo_margin_frac: float = Field(
        0.1, ge=0, lt=1, description="admit/queue only if predicted TTFT <= (1 - margin) x SLO"
    )
    queue_deadline_ms: dict[str, float] = Field(
        default_factory=dict, description="per class; default: the route's TTFT SLO, else 30 s"
    )
    shed_infeasible: bool = Field(True, description="refuse now what cannot meet the TTFT SLO")
    class_reserve_frac: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="share of each backend's concurrency limit each class leaves to the classes above it "
        "(standard may fill 90 %, sheddable 80 %)",
    )
    min_prefill_cap: float = Field(
        4.0, ge=1, description="fewest requests a backend may hold before their first byte (cap floor)"
    )
    prefill_budget: Literal["backend", "fleet"] = Field(
        "fleet",
        description="how the prefill cap admits: 'backend' = some backend is under its cap (its free stream "
        "slots count); 'fleet' = while the waiting room stands (held requests for > 2 TTFT targets: "
        "overload), at most the sum of every backend's room under its cap, a backend over its cap counting "
        "against the fleet (protects a policy that does not route by load), else as 'backend'",
    )

    @model_validator(mode="after")
    def _positive(self) -> RouteAdmissionConfig:
        for name, value in self.queue_deadline_ms.items():
            if value < 0:
                raise ValueError(f"queue_deadline_ms[{name!r}] must be >= 0")
        return self


DEFAULT_QUEUE_DEADLINE_MS = 30_000.0
