"""``oracle``: the benchmark-only clairvoyant router, an upper reference for Sluice's policies.

Knows what no router can: each request's true output length (the workload's ground truth) and
every engine's exact state (queues, true remaining outputs, prefix cache, free KV blocks, step-time
coefficients, slowdown faults), read through the virtual-time fleet (``GroundTruth``). It does not
know future arrivals, so it is a greedy clairvoyant, not a proven optimum: each request goes where
its own predicted cost is lowest given everything already in the fleet (``oracle_cost``).

Rule: candidates are the selectable backends serving the model (Sluice's own health view, like every
policy). Each gets the exact-state estimate of TTFT, TPOT and E2E; backends predicted to meet the
SLO (``slo_ttft_ms``, ``slo_tpot_ms``; unset = no bound) come first, ordered by the ``objective``
(``e2e`` default, or ``ttft``), ties by backend id. A request that can meet its SLO nowhere is lost
for goodput whatever happens; ``when_infeasible: sacrifice`` (default) sends it where the predicted
TTFT is already the worst, so the other backends keep meeting the SLO for the requests that still
can (without it, an overload spreads until every backend misses); ``least_late`` sends it where its
own objective is best. The decision carries the true length as ``predicted_output_tokens``, so the
proxy's in-flight decode accounting is exact.

A backend counts as meeting the SLO when its estimate is within ``(1 - slo_margin_frac)`` of each
bound (default 0.1): requests arriving later still slow the decode of those already there.

Parameters: ``objective`` (``e2e`` | ``ttft``), ``slo_ttft_ms``, ``slo_tpot_ms``,
``slo_margin_frac``, ``when_infeasible`` (``sacrifice`` | ``least_late``).

It exists only here, never in ``policies.registry``: a ``sluice serve`` config naming it fails at
start-up with "unknown policy". ``sluice bench`` selects it by name (``loadgen.bench.policies``) and
wraps the configured decider with ``OracleDecider``, so admission stays exactly Sluice's.
"""

from __future__ import annotations

import math
import random
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from core.clock import Clock
from core.protocols import Decider
from core.types import (
    AdmissionDecision,
    BackendId,
    EnqueueResult,
    FleetSnapshot,
    Outcome,
    Queue,
    RequestFeatures,
    RoutingDecision,
    RoutingRequest,
)
from loadgen.sim.engine import SimEngine
from loadgen.sim.oracle_cost import CostEstimate, EngineSummary, estimate, summarise

NAME = "oracle"


class OracleParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: Literal["e2e", "ttft"] = "e2e"
    slo_ttft_ms: float | None = Field(None, gt=0)
    slo_tpot_ms: float | None = Field(None, gt=0)
    when_infeasible: Literal["sacrifice", "least_late"] = "sacrifice"
    slo_margin_frac: float = Field(0.1, ge=0, lt=1)


class GroundTruth(Protocol):
    """What the virtual-time fleet exposes to an oracle (``loadgen.sim.virtual.VirtualFleet``)."""

    def true_output_tokens(self, request_id: str) -> int | None: ...

    def engine(self, backend_id: str) -> SimEngine: ...


class OraclePolicy:
    """A ``RoutingPolicy`` over the fleet's ground truth; stateless between requests."""

    __slots__ = ("_lookups", "_params", "_summaries", "_truth")

    def __init__(self, truth: GroundTruth, params: OracleParams) -> None:
        self._truth = truth
        self._params = params
        self._summaries: dict[BackendId, EngineSummary] = {}
        self._lookups: dict[BackendId, dict[int, int]] = {}  # waiting requests' cache lookups

    def _cost(
        self, backend: BackendId, features: RequestFeatures, output_tokens: int, now_s: float
    ) -> CostEstimate:
        engine = self._truth.engine(backend)
        summary = self._summaries.get(backend)
        if summary is None or summary.version != engine.version:
            summary = self._summaries[backend] = summarise(engine, self._lookups.setdefault(backend, {}))
        return estimate(engine, summary, now_s, features.prefix_hashes, features.prompt_tokens, output_tokens)

    @property
    def name(self) -> str:
        return NAME

    def _meets_slo(self, cost: CostEstimate) -> bool:
        p = self._params
        keep = 1.0 - p.slo_margin_frac
        if p.slo_ttft_ms is not None and cost.ttft_s * 1000.0 > keep * p.slo_ttft_ms:
            return False
        return not (p.slo_tpot_ms is not None and cost.tpot_s * 1000.0 > keep * p.slo_tpot_ms)

    def route(
        self, request: RoutingRequest, snapshot: FleetSnapshot, now_s: float, rng: random.Random
    ) -> RoutingDecision:
        features = request.features
        candidates = sorted(b.backend_id for b in snapshot.serving(features.model))
        if not candidates:
            return RoutingDecision(
                ranked=(), policy=NAME, reason=f"no healthy backend serves {features.model!r}"
            )
        true_tokens = self._truth.true_output_tokens(features.request_id) or 1
        if features.max_tokens is not None:
            true_tokens = min(true_tokens, features.max_tokens)
        output_tokens = max(1, true_tokens)
        costs = {b: self._cost(b, features, output_tokens, now_s) for b in candidates}
        by_ttft = self._params.objective == "ttft"
        feasible = {b for b in candidates if self._meets_slo(costs[b])}
        sacrifice = not feasible and self._params.when_infeasible == "sacrifice"

        def key(b: BackendId) -> tuple[bool, float, BackendId]:
            cost = costs[b]
            if sacrifice:
                return (False, -cost.ttft_s, b)
            return (b not in feasible, cost.ttft_s if by_ttft else cost.e2e_s, b)

        ranked = tuple(sorted(candidates, key=key))
        best = costs[ranked[0]]
        finite = [c.e2e_s for c in costs.values() if math.isfinite(c.e2e_s)]
        worst = max(finite, default=0.0)
        scores = {
            b: (1.0 - c.e2e_s / worst if worst > 0 and math.isfinite(c.e2e_s) else 0.0)
            for b, c in costs.items()
        }
        return RoutingDecision(
            ranked=ranked,
            policy=NAME,
            scores={"exact_e2e": scores},
            predicted_ttft_ms=best.ttft_s * 1000.0 if math.isfinite(best.ttft_s) else None,
            predicted_e2e_ms=best.e2e_s * 1000.0 if math.isfinite(best.e2e_s) else None,
            predicted_output_tokens=float(output_tokens),
        )


class OracleDecider:
    """Sluice's configured decider with its routing replaced by the oracle; admission untouched."""

    def __init__(self, inner: Decider, oracle: OraclePolicy, clock: Clock, rng: random.Random) -> None:
        self._inner = inner
        self._oracle = oracle
        self._clock = clock
        self._rng = rng

    def admit(self, features: RequestFeatures, snapshot: FleetSnapshot) -> AdmissionDecision:
        return self._inner.admit(features, snapshot)

    def enqueue(self, features: RequestFeatures, decision: Queue) -> EnqueueResult:
        return self._inner.enqueue(features, decision)

    def pop_dispatchable(self, snapshot: FleetSnapshot) -> str | None:
        return self._inner.pop_dispatchable(snapshot)

    def leave_queue(self, request_id: str) -> bool:
        return self._inner.leave_queue(request_id)

    def retry_after_s(self, features: RequestFeatures) -> float:
        return self._inner.retry_after_s(features)

    def route(self, features: RequestFeatures, snapshot: FleetSnapshot) -> RoutingDecision:
        request = RoutingRequest(features=features)
        return self._oracle.route(request, snapshot, self._clock.now_s(), self._rng)

    def on_routed(self, features: RequestFeatures, decision: RoutingDecision, backend_id: BackendId) -> None:
        self._inner.on_routed(features, decision, backend_id)

    def observe(self, outcome: Outcome) -> None:
        self._inner.observe(outcome)
