"""``session_affinity``: requests with the same session key go to the same backend (rendezvous hashing).

Rule (highest random weight, Thaler & Ravishankar 1998): for session key
``k`` (``x-session-id`` or the body's ``user``; ``RequestFeatures.session_key``)
every candidate backend ``b`` gets the weight ``BLAKE2b-64(k + "\\0" + b)``;
candidates are ranked by descending weight. The first is the session's
backend, the rest are its retry order. Stateless and the same in every
proxy replica; removing a backend moves only the sessions it owned.

Requests without a session key fall back to round robin (one cursor per
model, as ``round_robin``). Candidates are the selectable backends serving
the request's model. No parameters. Load is ignored by design: this is the
baseline for "a conversation stays where its KV cache is"; the cache-aware
and predictive policies weigh affinity against load.
"""

from __future__ import annotations

import hashlib
import random

from core.types import FleetSnapshot, RoutingDecision, RoutingRequest
from policies.baselines.round_robin import RoundRobinPolicy
from policies.registry import PolicyParams, register

NAME = "session_affinity"


class SessionAffinityParams(PolicyParams):
    pass


def weight(session_key: str, backend_id: str) -> int:
    digest = hashlib.blake2b(f"{session_key}\0{backend_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class SessionAffinityPolicy:
    """Picker state is only the round-robin fallback's cursor."""

    __slots__ = ("_fallback",)

    def __init__(self) -> None:
        self._fallback = RoundRobinPolicy()

    @property
    def name(self) -> str:
        return NAME

    def route(
        self, request: RoutingRequest, snapshot: FleetSnapshot, now_s: float, rng: random.Random
    ) -> RoutingDecision:
        key = request.features.session_key
        if key is None:
            fallback = self._fallback.route(request, snapshot, now_s, rng)
            return RoutingDecision(ranked=fallback.ranked, policy=NAME, reason=fallback.reason)
        model = request.features.model
        candidates = [b.backend_id for b in snapshot.serving(model)]
        if not candidates:
            return RoutingDecision(ranked=(), policy=NAME, reason=f"no healthy backend serves {model!r}")
        ranked = sorted(candidates, key=lambda backend_id: weight(key, backend_id), reverse=True)
        return RoutingDecision(ranked=tuple(ranked), policy=NAME)


@register(NAME, SessionAffinityParams, "same session key, same backend (rendezvous hashing)")
def _build(params: SessionAffinityParams) -> SessionAffinityPolicy:
    return SessionAffinityPolicy()
