"""``round_robin``: each request goes to the next backend serving its model, in turn.

Ranking: the candidate after the previous pick comes first, then the others
in ring order, so retries walk the ring. Candidates are the selectable
backends serving the request's model, ordered by id; one cursor per model.
No parameters. Scores every candidate equally by construction.
"""

from __future__ import annotations

import random

from core.types import FleetSnapshot, RoutingDecision, RoutingRequest
from policies.registry import PolicyParams, register

NAME = "round_robin"


class RoundRobinParams(PolicyParams):
    pass


class RoundRobinPolicy:
    """Picker state is the per-model cursor; nothing else is remembered."""

    __slots__ = ("_cursor_by_model",)

    def __init__(self) -> None:
        self._cursor_by_model: dict[str, int] = {}

    @property
    def name(self) -> str:
        return NAME

    def route(
        self, request: RoutingRequest, snapshot: FleetSnapshot, now_s: float, rng: random.Random
    ) -> RoutingDecision:
        model = request.features.model
        candidates = sorted(b.backend_id for b in snapshot.serving(model))
        if not candidates:
            return RoutingDecision(ranked=(), policy=NAME, reason=f"no healthy backend serves {model!r}")
        cursor = self._cursor_by_model.get(model, 0) % len(candidates)
        self._cursor_by_model[model] = cursor + 1
        return RoutingDecision(ranked=tuple(candidates[cursor:] + candidates[:cursor]), policy=NAME)


@register(NAME, RoundRobinParams, "next backend in turn")
def _build(params: RoundRobinParams) -> RoundRobinPolicy:
    return RoundRobinPolicy()
