"""Evaluation entry point for the per-backend TTFT/TPOT model on observed requests (e.g. from the simulator).

``evaluate_latency(samples)`` replays ``LatencySample``s in the order given
(completion order, as the proxy would learn them) through a fresh
``LatencyModel``: each request is predicted from its dispatch-time view, then
the model learns its outcome. Errors are measured before learning
(prequential), after skipping the first ``warmup`` samples of each backend.

Reported per backend and pooled: MAPE of TTFT, TPOT (``(E2E - TTFT) / (out - 1)``),
and E2E with the *true* output length (so E2E judges the cost model, not the
length model), plus median absolute percentage errors and counts. Target
(issue 5): MAPE <= 20% on the simulated heterogeneous fleet under the Azure
conversation trace.

How to collect samples: wrap the decision engine in ``SampleRecorder`` (it is
itself a ``core.protocols.Decider``) and hand the wrapper to the virtual-time
fleet or the proxy; it keeps the chosen backend's ``BackendView`` from the
snapshot used for routing and emits a ``LatencySample`` when the outcome
arrives. ``bench/latency_sim_eval.py`` does this on the simulated
heterogeneous fleet under the Azure conversation trace.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.protocols import Decider
from core.types import (
    AdmissionDecision,
    BackendId,
    BackendView,
    FleetSnapshot,
    Outcome,
    RequestFeatures,
    RoutingDecision,
)
from predictors.facade import observed_tpot_ms
from predictors.latency import LatencyModel, LatencyPriors


@dataclass(frozen=True, slots=True)
class LatencySample:
    """One finished request: the backend as seen at dispatch, the request, its prefix match, the outcome."""

    view: BackendView
    features: RequestFeatures
    prefix_matched_tokens: int
    outcome: Outcome


class SampleRecorder:
    """A ``Decider`` that delegates everything and records a ``LatencySample`` per finished request.

    Pending state (snapshots between ``route`` and ``on_routed``, views between
    ``on_routed`` and ``observe``) is capped at ``max_pending`` entries each,
    oldest dropped, so a request that never reports an outcome cannot leak.
    """

    def __init__(self, inner: Decider, max_pending: int = 100_000) -> None:
        self.inner = inner
        self.samples: list[LatencySample] = []
        self._max_pending = max_pending
        self._snapshots: OrderedDict[str, FleetSnapshot] = OrderedDict()
        self._dispatched: OrderedDict[str, tuple[RequestFeatures, BackendView]] = OrderedDict()

    def admit(self, features: RequestFeatures, snapshot: FleetSnapshot) -> AdmissionDecision:
        return self.inner.admit(features, snapshot)

    def route(self, features: RequestFeatures, snapshot: FleetSnapshot) -> RoutingDecision:
        self._snapshots[features.request_id] = snapshot
        if len(self._snapshots) > self._max_pending:
            self._snapshots.popitem(last=False)
        return self.inner.route(features, snapshot)

    def on_routed(self, features: RequestFeatures, decision: RoutingDecision, backend_id: BackendId) -> None:
        snapshot = self._snapshots.get(features.request_id)
        view = next((b for b in snapshot.backends if b.backend_id == backend_id), None) if snapshot else None
        if view is not None:
            self._dispatched[features.request_id] = (features, view)
            self._dispatched.move_to_end(features.request_id)
            if len(self._dispatched) > self._max_pending:
                self._dispatched.popitem(last=False)
        self.inner.on_routed(features, decision, backend_id)

    def observe(self, outcome: Outcome) -> None:
        self._snapshots.pop(outcome.request_id, None)
        dispatched = self._dispatched.pop(outcome.request_id, None)
        if dispatched is not None and dispatched[1].backend_id == outcome.backend_id:
            self.samples.append(LatencySample(dispatched[1], dispatched[0], 0, outcome))
        self.inner.observe(outcome)


def _ape(predicted: float, observed: float) -> float:
    return abs(predicted - observed) / observed


def _stats(errors: list[float]) -> dict[str, Any]:
    if not errors:
        return {"n": 0, "mape": None, "median_ape": None, "p90_ape": None}
    arr = np.asarray(errors)
    return {
        "n": len(errors),
        "mape": round(float(arr.mean()), 4),
        "median_ape": round(float(np.median(arr)), 4),
        "p90_ape": round(float(np.quantile(arr, 0.9)), 4),
    }


def evaluate_latency(
    samples: Iterable[LatencySample], priors: LatencyPriors | None = None, warmup: int = 50
) -> dict[str, Any]:
    """Prequential MAPE of TTFT/TPOT/E2E per backend and pooled (see the module docstring)."""
    model = LatencyModel(priors)
    seen: dict[str, int] = defaultdict(int)
    errors: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for sample in samples:
        outcome = sample.outcome
        if outcome.status_code != 200 or outcome.cancelled or outcome.ttft_ms is None:
            continue
        backend = sample.view.backend_id
        # The view's backend is authoritative: a retried request is learned where it ran.
        cached = outcome.cached_prompt_tokens
        matched = cached if cached is not None else sample.prefix_matched_tokens
        tpot = observed_tpot_ms(outcome)
        if seen[backend] >= warmup:
            est = model.estimate(sample.view, sample.features.prompt_tokens, matched, 1.0)
            per = errors[backend]
            if outcome.ttft_ms > 0:
                per["ttft"].append(_ape(est.ttft_ms, outcome.ttft_ms))
            if tpot is not None and tpot > 0:
                per["tpot"].append(_ape(est.tpot_ms, tpot))
            if outcome.e2e_ms > 0:
                e2e = est.ttft_ms + max(outcome.output_tokens - 1, 0) * est.tpot_ms
                per["e2e"].append(_ape(e2e, outcome.e2e_ms))
        seen[backend] += 1
        model.observe(sample.view, sample.features, matched, outcome.ttft_ms, tpot)
    pooled: dict[str, list[float]] = defaultdict(list)
    per_backend: dict[str, Any] = {}
    for backend in sorted(errors):
        per_backend[backend] = {name: _stats(values) for name, values in sorted(errors[backend].items())}
        for name, values in errors[backend].items():
            pooled[name].extend(values)
    return {
        "warmup_per_backend": warmup,
        "pooled": {name: _stats(pooled[name]) for name in ("ttft", "tpot", "e2e")},
        "per_backend": per_backend,
        "coefficients": {b: dict(zip(("ttft", "tpot"), model.coefficients(b), strict=True)) for b in seen},
    }
