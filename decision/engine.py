"""The decision engine: admission, routing and learning around one request.

The data plane and the virtual-time simulator both hold one
``DecisionEngine`` and call it in the order documented in
``core.protocols``. It owns nothing HTTP-related: it turns
``RequestFeatures`` + ``FleetSnapshot`` into decisions using the policies
configured per route, and feeds outcomes back to the learning parts.

What it owns besides the per-route policies:

- **admission control** (``decision.admission_control``): budgets, adaptive
  concurrency limits, the waiting room's order and Retry-After. ``admit``
  builds the request's routing inputs (prefix matches, predictions) once and
  ``route`` reuses them when the snapshot has not changed in between;

- the **prefix index** (``state.prefix_index``): ``route`` looks up each
  backend's cached-prefix tokens and passes them in the ``RoutingRequest``;
  ``on_routed`` records the prompt's chunks for the committed backend;
  ``observe`` corrects the index with the cached tokens the backend reported;
- the route's **SLO targets**, passed to policies in ``RoutingRequest.slo``;
- an optional **predictor** facade (``predictors``): ``predict`` fills
  ``RoutingRequest.predictions`` and ``observe`` gets every outcome with the
  backend's view at dispatch. Without one, policies use their fallback estimator;
- the **decision log** ring buffer behind ``/debug/decisions``.

Per request it keeps a small pending record between ``route`` and
``observe`` (bounded: the oldest are dropped if outcomes never arrive).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Protocol

from core.clock import Clock
from core.config import LoadedConfig, PolicyConfig, RouteConfig, SluiceConfig
from core.protocols import RoutingPolicy
from core.types import (
    AdmissionDecision,
    BackendId,
    BackendView,
    EnqueueResult,
    FleetSnapshot,
    Outcome,
    Predictions,
    RequestFeatures,
    RoutingDecision,
    RoutingRequest,
    Shed,
    SLOTargets,
)
from core.types import Queue as QueueDecision
from decision.admission_control import AdmissionControl
from decision.explain import DecisionLog
from policies import build_policy
from policies.estimate import expected_tokens, prior_output_length
from predictors import Predictor
from state.prefix_index import PrefixIndex, RoutedPrefix

MAX_PENDING_REQUESTS = 65_536
_NO_SLO = SLOTargets()
_NO_TOKENS: Mapping[BackendId, int] = MappingProxyType({})


class PredictorFacade(Protocol):
    """What the engine needs from ``predictors``: predictions in, outcomes back."""

    def predict(self, request: RoutingRequest, snapshot: FleetSnapshot) -> Predictions: ...

    def observe(
        self,
        outcome: Outcome,
        features: RequestFeatures,
        view_at_dispatch: BackendView | None,
        prefix_matched_tokens: int = 0,
        view_at_end: BackendView | None = None,
    ) -> None: ...


class _Pending:
    """One request's state between ``admit``/``route`` and ``observe``.

    A plain class, not a dataclass: one is built per request, and a dataclass's generated
    ``__init__`` stays interpreted code in the compiled build (docs/compiled.md).
    """

    __slots__ = ("features", "request", "request_snapshot", "routed", "snapshot", "view_at_dispatch")

    def __init__(self, features: RequestFeatures) -> None:
        self.features = features
        self.snapshot: FleetSnapshot | None = None
        self.view_at_dispatch: BackendView | None = None
        self.routed: RoutedPrefix | None = None
        self.request: RoutingRequest | None = None
        self.request_snapshot: FleetSnapshot | None = None


def slo_targets(route: RouteConfig) -> SLOTargets:
    return SLOTargets(ttft_ms=route.slo.ttft_ms, tpot_ms=route.slo.tpot_ms, e2e_ms=route.slo.e2e_ms)


class DecisionEngine:
    """Admission control, per-route routing, and the learning parts fed by outcomes."""

    def __init__(
        self,
        config: SluiceConfig,
        policies_by_route: Mapping[str, RoutingPolicy],
        default_policy: RoutingPolicy,
        clock: Clock,
        rng: random.Random,
        *,
        slo_by_route: Mapping[str, SLOTargets] | None = None,
        prefix_index: PrefixIndex | None = None,
        predictor: PredictorFacade | None = None,
        decision_log: DecisionLog | None = None,
        max_pending_requests: int = MAX_PENDING_REQUESTS,
    ) -> None:
        self._routes = {route.name: route for route in config.routes}
        self._policies_by_route = dict(policies_by_route)
        self._default_policy = default_policy
        self._clock = clock
        self._rng = rng
        self._slo_by_route = dict(slo_by_route or {})
        self.prefix_index = prefix_index
        self._predictor = predictor
        # The bundled facade, called directly (no intermediate RoutingRequest); any other facade
        # (tests, the simulator's oracle) through the protocol.
        self._native_predictor = predictor if type(predictor) is Predictor else None
        self.decisions = decision_log if decision_log is not None else DecisionLog()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._max_pending = max_pending_requests
        self.admission = AdmissionControl(config, clock)
        self._row_of: dict[BackendId, int] = {}
        # The backends of the latest snapshot routed on: a finished request's load at its end.
        self._latest_views: tuple[BackendView, ...] = ()

    @classmethod
    def from_config(
        cls,
        loaded: LoadedConfig,
        clock: Clock,
        rng: random.Random,
        predictor: PredictorFacade | None = None,
    ) -> DecisionEngine:
        """Build every route's policy, validating its params (``ConfigError`` with file and line).

        Without an explicit ``predictor`` the configured one is loaded (``predictors.enabled``);
        a bad model file raises ``predictors.ModelFileError`` naming the file.
        """
        config = loaded.config
        if predictor is None and config.predictors.enabled:
            predictor = Predictor.from_config(config.predictors)
        policies = {
            route.name: build_policy(route.policy, loaded.source, ("routes", i, "policy"))
            for i, route in enumerate(config.routes)
        }
        index_config = config.prefix_index
        index = PrefixIndex(index_config.max_entries, index_config.ttl_s, index_config.max_match_chunks)
        return cls(
            config,
            policies,
            build_policy(PolicyConfig()),
            clock,
            rng,
            slo_by_route={route.name: slo_targets(route) for route in config.routes},
            prefix_index=index,
            predictor=predictor,
        )

    def policy_for(self, route: str) -> RoutingPolicy:
        return self._policies_by_route.get(route, self._default_policy)

    def route_config(self, name: str) -> RouteConfig:
        return self._routes.get(name) or _DEFAULT_ROUTE

    def admit(self, features: RequestFeatures, snapshot: FleetSnapshot) -> AdmissionDecision:
        """Admit, queue or shed on the same predictions and prefix matches routing will use."""
        if not self.admission.enabled:
            return self.admission.decide(features, self.route_config(features.route), snapshot, None, {})
        request = self._routing_request(features, snapshot)
        pending = self._remember(features)
        pending.request, pending.request_snapshot = request, snapshot
        verdict = self.admission.decide(
            features,
            self.route_config(features.route),
            snapshot,
            request.predictions,
            request.prefix_matched_tokens,
        )
        if isinstance(verdict, Shed):
            self._pending.pop(features.request_id, None)
        return verdict

    def enqueue(self, features: RequestFeatures, decision: QueueDecision) -> EnqueueResult:
        placed = self.admission.enqueue(features, self.route_config(features.route), decision)
        for request_id in placed.evicted:
            self._pending.pop(request_id, None)
        if placed.shed is not None:
            self._pending.pop(features.request_id, None)
        return placed

    def pop_dispatchable(self, snapshot: FleetSnapshot) -> str | None:
        return self.admission.pop_dispatchable(snapshot)

    def leave_queue(self, request_id: str) -> bool:
        self._pending.pop(request_id, None)
        return self.admission.leave_queue(request_id)

    def expire(self) -> list[str]:
        """Drop queued requests whose deadline passed (virtual time; the data plane times out itself)."""
        expired = self.admission.expire()
        for request_id in expired:
            self._pending.pop(request_id, None)
        return expired

    def retry_after_s(self, features: RequestFeatures) -> float:
        return self.admission.retry_after_for(features, self.route_config(features.route))

    def queue_depths(self) -> dict[str, int]:
        return self.admission.queue_depths()

    def concurrency_limits(self) -> dict[BackendId, int]:
        return self.admission.limits()

    def service_rate_rps(self) -> float:
        return self.admission.service_rate_rps()

    def _routing_request(self, features: RequestFeatures, snapshot: FleetSnapshot) -> RoutingRequest:
        """The policy's input: prefix matches, then predictions on them (one object, built once)."""
        index = self.prefix_index
        slo = self._slo_by_route.get(features.route, _NO_SLO)
        matched: Mapping[BackendId, int]
        if index is not None and features.prefix_hashes:
            matched = index.match(features.model, features.prefix_hashes, self._clock.now_s())
            indexed = index.indexed_tokens(features.model)
        else:
            matched, indexed = _NO_TOKENS, _NO_TOKENS
        native = self._native_predictor
        if native is not None:
            predictions = native.predict_for(features, matched, snapshot)
        elif self._predictor is None:
            return RoutingRequest(features, matched, None, indexed, slo)
        else:
            # The predictor reads only the features and the prefix matches of the request it is given.
            request = RoutingRequest(features, matched, None, indexed, slo)
            predictions = self._predictor.predict(request, snapshot)
        return RoutingRequest(features, matched, predictions, indexed, slo)

    def route(self, features: RequestFeatures, snapshot: FleetSnapshot) -> RoutingDecision:
        now_s = self._clock.now_s()
        pending = self._pending.get(features.request_id)
        if pending is not None and pending.request is not None and pending.request_snapshot is snapshot:
            request = pending.request
        else:
            request = self._routing_request(features, snapshot)
        decision = self.policy_for(features.route).route(request, snapshot, now_s, self._rng)
        self._latest_views = snapshot.backends
        if decision.predicted_output_tokens is None:
            predictions = request.predictions
            length = predictions.output_length if predictions else prior_output_length(features)
            decision = replace(decision, predicted_output_tokens=expected_tokens(length))
        self.decisions.append(now_s, features, decision, request.prefix_matched_tokens)
        pending = self._remember(features)
        pending.snapshot, pending.request, pending.request_snapshot = snapshot, None, None
        return decision

    def on_routed(self, features: RequestFeatures, decision: RoutingDecision, backend_id: BackendId) -> None:
        self.admission.on_routed(features.request_id)
        pending = self._remember(features)
        if pending.snapshot is not None:
            pending.view_at_dispatch = self._view_of(pending.snapshot.backends, backend_id)
        if self.prefix_index is not None and features.prefix_hashes:
            pending.routed = self.prefix_index.record_routed(
                features.model, backend_id, features.prefix_hashes, self._clock.now_s()
            )

    def _view_of(self, views: tuple[BackendView, ...], backend_id: BackendId) -> BackendView | None:
        """``backend_id``'s view in ``views``: its row is remembered, as the fleet's order rarely changes."""
        row = self._row_of.get(backend_id)
        if row is None or row >= len(views) or views[row].backend_id != backend_id:
            self._row_of = {view.backend_id: i for i, view in enumerate(views)}
            row = self._row_of.get(backend_id)
            if row is None:
                return None
        return views[row]

    def observe(self, outcome: Outcome) -> None:
        self.admission.observe(outcome)
        pending = self._pending.pop(outcome.request_id, None)
        if pending is None:
            return
        routed = pending.routed
        if (
            self.prefix_index is not None
            and routed is not None
            and outcome.backend_id == routed.backend_id
            and outcome.status_code < 400
            and outcome.cached_prompt_tokens is not None
            and outcome.prompt_tokens > 0
        ):
            self.prefix_index.correct(routed, outcome.cached_prompt_tokens / outcome.prompt_tokens)
        if self._predictor is not None:
            view_at_end = (
                self._view_of(self._latest_views, outcome.backend_id) if outcome.backend_id else None
            )
            self._predictor.observe(
                outcome, pending.features, pending.view_at_dispatch, view_at_end=view_at_end
            )

    def _remember(self, features: RequestFeatures) -> _Pending:
        pending = self._pending.get(features.request_id)
        if pending is None:
            if len(self._pending) >= self._max_pending:
                self._pending.popitem(last=False)
            pending = self._pending[features.request_id] = _Pending(features)
        return pending


_DEFAULT_ROUTE = RouteConfig(name="default")
