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
from core.config import LoadedConfig, PolicyConfig
from core.protocols import RoutingPolicy
from core.types import (
    AdmissionDecision,
    Admit,
    BackendId,
    FleetSnapshot,
    Outcome,
    RequestFeatures,
    RoutingDecision,
    RoutingRequest,
)
from policies import build_policy


class DecisionEngine:
    """Admission (admit-all until the admission policies land) and per-route routing."""

    def __init__(
        self,
        policies_by_route: Mapping[str, RoutingPolicy],
        default_policy: RoutingPolicy,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self._policies_by_route = dict(policies_by_route)
        self._default_policy = default_policy
        self._clock = clock
        self._rng = rng

    @classmethod
    def from_config(cls, loaded: LoadedConfig, clock: Clock, rng: random.Random) -> DecisionEngine:
        """Build every route's policy, validating its params (``ConfigError`` with file and line)."""
        policies = {
            route.name: build_policy(route.policy, loaded.source, ("routes", i, "policy"))
            for i, route in enumerate(loaded.config.routes)
        }
        return cls(policies, build_policy(PolicyConfig()), clock, rng)

    def policy_for(self, route: str) -> RoutingPolicy:
        return self._policies_by_route.get(route, self._default_policy)

    def admit(self, features: RequestFeatures, snapshot: FleetSnapshot) -> AdmissionDecision:
        return Admit()

    def route(self, features: RequestFeatures, snapshot: FleetSnapshot) -> RoutingDecision:
        policy = self.policy_for(features.route)
        return policy.route(RoutingRequest(features=features), snapshot, self._clock.now_s(), self._rng)

    def on_routed(self, features: RequestFeatures, decision: RoutingDecision, backend_id: BackendId) -> None:
        return None

    def observe(self, outcome: Outcome) -> None:
        return None
