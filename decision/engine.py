"""The decision engine: admission, routing and learning around one request.

The data plane and the virtual-time simulator both hold one
``DecisionEngine`` and call it in the order documented in
``core.protocols``. It owns nothing HTTP-related: it turns
``RequestFeatures`` + ``FleetSnapshot`` into decisions using the policies
configured per route, and feeds outcomes back to the learning parts.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from core.clock import Clock
from core.config import LoadedConfig, PolicyConfig, RouteConfig, SluiceConfig
from core.protocols import RoutingPolicy
from core.types import (
    AdmissionDecision,
    BackendId,
    EnqueueResult,
    FleetSnapshot,
    Outcome,
    RequestFeatures,
    RoutingDecision,
    RoutingRequest,
)
from core.types import Queue as QueueDecision
from decision.admission_control import AdmissionControl
from policies import build_policy


class DecisionEngine:
    """Admission control (``decision.admission_control``) and per-route routing."""

    def __init__(
        self,
        config: SluiceConfig,
        policies_by_route: Mapping[str, RoutingPolicy],
        default_policy: RoutingPolicy,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self._routes = {route.name: route for route in config.routes}
        self._policies_by_route = dict(policies_by_route)
        self._default_policy = default_policy
        self._clock = clock
        self._rng = rng
        self.admission = AdmissionControl(config, clock)

    @classmethod
    def from_config(cls, loaded: LoadedConfig, clock: Clock, rng: random.Random) -> DecisionEngine:
        """Build every route's policy, validating its params (``ConfigError`` with file and line)."""
        policies = {
            route.name: build_policy(route.policy, loaded.source, ("routes", i, "policy"))
            for i, route in enumerate(loaded.config.routes)
        }
        return cls(loaded.config, policies, build_policy(PolicyConfig()), clock, rng)

    def policy_for(self, route: str) -> RoutingPolicy:
        return self._policies_by_route.get(route, self._default_policy)

    def route_config(self, name: str) -> RouteConfig:
        return self._routes.get(name) or _DEFAULT_ROUTE

    def admit(self, features: RequestFeatures, snapshot: FleetSnapshot) -> AdmissionDecision:
        return self.admission.decide(features, self.route_config(features.route), snapshot, None, {})

    def enqueue(self, features: RequestFeatures, decision: QueueDecision) -> EnqueueResult:
        return self.admission.enqueue(features, self.route_config(features.route), decision)

    def pop_dispatchable(self, snapshot: FleetSnapshot) -> str | None:
        return self.admission.pop_dispatchable(snapshot)

    def leave_queue(self, request_id: str) -> bool:
        return self.admission.leave_queue(request_id)

    def retry_after_s(self, features: RequestFeatures) -> float:
        return self.admission.retry_after_for(features, self.route_config(features.route))

    def queue_depths(self) -> dict[str, int]:
        return self.admission.queue_depths()

    def concurrency_limits(self) -> dict[BackendId, int]:
        return self.admission.limits()

    def service_rate_rps(self) -> float:
        return self.admission.service_rate_rps()

    def route(self, features: RequestFeatures, snapshot: FleetSnapshot) -> RoutingDecision:
        policy = self.policy_for(features.route)
        return policy.route(RoutingRequest(features=features), snapshot, self._clock.now_s(), self._rng)

    def on_routed(self, features: RequestFeatures, decision: RoutingDecision, backend_id: BackendId) -> None:
        self.admission.on_routed(features.request_id)

    def observe(self, outcome: Outcome) -> None:
        self.admission.observe(outcome)


_DEFAULT_ROUTE = RouteConfig(name="default")
