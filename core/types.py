"""Immutable value types shared by every layer of Sluice.

These are contracts, not logic. The data plane (``router/``) builds a
``RequestFeatures`` once per request from the parsed body and a
``FleetSnapshot`` once per decision; everything downstream (predictors,
policies, the virtual-time simulator) sees only these frozen objects, never
HTTP. Keeping them small and frozen is what lets a decision be replayed in a
unit test with an injected clock and RNG.

Units are in the names: ``_ms``, ``_s``, ``_tokens``, ``_frac`` (0..1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from core.enums import Endpoint, Health
from core.fast_init import fast_frozen_init
from core.views import BackendView, FleetSnapshot, RequestFeatures, RoutingDecision

BackendId = str

# BackendView, FleetSnapshot, RequestFeatures and RoutingDecision are compiled in core/views.py (it says
# why); the enums live in core/enums.py.
__all__ = [
    "AdmissionDecision",
    "Admit",
    "BackendCostEstimate",
    "BackendId",
    "BackendView",
    "Endpoint",
    "EngineMetrics",
    "EnqueueResult",
    "FleetSnapshot",
    "Health",
    "Outcome",
    "OutputLengthEstimate",
    "Predictions",
    "Queue",
    "RequestFeatures",
    "RoutingDecision",
    "RoutingRequest",
    "SLOTargets",
    "Shed",
    "ShedReason",
]

_EMPTY_INT_MAP: Mapping[str, int] = MappingProxyType({})
_EMPTY_FLOAT_MAP: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """One scrape of a backend engine's own metrics, normalised across engines.

    Produced by the per-engine adapters (vLLM ``vllm:*``, SGLang ``sglang:*``,
    llama.cpp ``llamacpp:*``, TGI ``tgi_*``). A field an engine does not
    export is ``None``. Prefix-cache counters are cumulative token counts as
    the engine reports them; the collector turns deltas into a hit rate.
    ``prefix_hit_rate_frac`` is the engine's own recent hit rate for engines
    that export only a gauge (SGLang ``cache_hit_rate``); counters win when both
    exist (``state.engine_metrics.hit_rate``).
    """

    engine: str
    scraped_at_s: float
    running: int | None = None
    waiting: int | None = None
    kv_usage_frac: float | None = None
    kv_capacity_tokens: int | None = None
    prefix_cache_queries_tokens_total: float | None = None
    prefix_cache_hits_tokens_total: float | None = None
    preemptions_total: float | None = None
    prefix_hit_rate_frac: float | None = None


@dataclass(frozen=True, slots=True)
class OutputLengthEstimate:
    """Predicted output length quantiles in tokens; ``source`` says where it came from."""

    p50_tokens: float
    p90_tokens: float
    source: str = "prior"


@fast_frozen_init  # built per request: core.fast_init says why
@dataclass(frozen=True, slots=True)
class BackendCostEstimate:
    """Predicted cost of running one request on one backend."""

    backend_id: BackendId
    queue_wait_ms: float
    prefill_ms: float
    ttft_ms: float
    tpot_ms: float
    e2e_ms: float
    cached_prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Predictions:
    output_length: OutputLengthEstimate
    per_backend: Mapping[BackendId, BackendCostEstimate] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class SLOTargets:
    """A route's latency objectives (``None`` = no objective), copied from its ``slo`` config."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None


_NO_SLO = SLOTargets()


@fast_frozen_init  # built per request: core.fast_init says why
@dataclass(frozen=True, slots=True)
class RoutingRequest:
    """Input of a routing policy: the request, its prefix matches, predictions and SLOs.

    ``prefix_matched_tokens[b]`` is the estimated number of prompt tokens
    already cached on backend ``b`` (from the prefix index); absent means 0.
    ``prefix_indexed_tokens[b]`` is how many tokens of prefixes the index
    currently holds for backend ``b`` for this model (the size of its
    approximate cache tree); absent means 0. ``slo`` is the route's objectives.
    """

    features: RequestFeatures
    prefix_matched_tokens: Mapping[BackendId, int] = field(default_factory=lambda: _EMPTY_INT_MAP)
    predictions: Predictions | None = None
    prefix_indexed_tokens: Mapping[BackendId, int] = field(default_factory=lambda: _EMPTY_INT_MAP)
    slo: SLOTargets = _NO_SLO


class ShedReason(StrEnum):
    """Why a request was refused; a low-cardinality metric label."""

    SLO_INFEASIBLE = "slo_infeasible"
    QUEUE_FULL = "queue_full"
    QUEUE_TIMEOUT = "queue_timeout"
    TENANT_BUDGET = "tenant_budget"
    TENANT_CONCURRENCY = "tenant_concurrency"
    KV_HEADROOM = "kv_headroom"
    OVERLOAD = "overload"


@dataclass(frozen=True, slots=True)
class Admit:
    pass


@dataclass(frozen=True, slots=True)
class Queue:
    """Wait in the proxy's waiting room until capacity frees or ``deadline_s`` passes."""

    deadline_s: float


@dataclass(frozen=True, slots=True)
class Shed:
    reason: ShedReason
    retry_after_s: float


AdmissionDecision = Admit | Queue | Shed


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """Answer to putting a ``Queue``-decided request in the waiting room.

    ``shed`` set: the request got no place (answer 429). ``evicted``: ids of
    less important queued requests pushed out to make room (shed them too).
    """

    shed: Shed | None
    evicted: tuple[str, ...] = ()
    evicted_retry_after_s: float = 0.0


@fast_frozen_init  # built per request: core.fast_init says why
@dataclass(frozen=True, slots=True)
class Outcome:
    """What actually happened to one request; feeds online learning and metrics.

    ``output_tokens`` comes from the final ``usage`` when the backend sent one,
    else from the count of content chunks. ``ttft_ms`` is ``None`` when no first
    byte arrived (error, cancellation before first byte). ``ttft_ms`` runs from
    the request's arrival at Sluice (what the client waited, waiting room
    included); ``backend_ttft_ms`` from the dispatch of the attempt that
    answered (the backend's own latency, what concurrency limits, latency
    models and per-backend EWMAs must learn from: a queue in Sluice is not
    the backend's congestion). ``None`` when unknown.
    """

    request_id: str
    backend_id: BackendId | None
    route: str
    model: str
    tenant: str
    status_code: int
    prompt_tokens: int
    output_tokens: int
    cached_prompt_tokens: int | None
    ttft_ms: float | None
    e2e_ms: float
    cancelled: bool = False
    error_code: str | None = None
    finished_at_s: float = 0.0
    predicted_output_tokens: float | None = None
    extra_scores: Mapping[str, float] = field(default_factory=lambda: _EMPTY_FLOAT_MAP)
    backend_ttft_ms: float | None = None

    @property
    def ttft_at_backend_ms(self) -> float | None:
        """The backend's own TTFT when known, else the client-side one (no waiting room involved)."""
        return self.backend_ttft_ms if self.backend_ttft_ms is not None else self.ttft_ms
