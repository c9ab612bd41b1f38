"""``round_robin`` picker: each request goes to the next candidate in turn, ignoring scores.

Ranking: candidates ordered by id; the one after the previous pick comes
first, then the others in ring order, so retries walk the ring. One cursor
per model (the only mutable state a picker may hold). No parameters.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from core.types import BackendId
from policies.context import RouteContext
from policies.params import RoundRobinPickerParams
from policies.registry import BuildContext, register_plugin

TYPE = "round_robin"


class RoundRobinPicker:
    __slots__ = ("_cursor_by_model", "name")
    returns_permutation = True  # policies.base: a permutation of by_score by construction

    def __init__(self) -> None:
        self.name = TYPE
        self._cursor_by_model: dict[str, int] = {}

    def pick(
        self,
        ctx: RouteContext,
        by_score: Sequence[BackendId],
        totals: Mapping[BackendId, float],
        rng: random.Random,
    ) -> tuple[BackendId, ...]:
        model = ctx.features.model
        ring = sorted(by_score)
        cursor = self._cursor_by_model.get(model, 0) % len(ring)
        self._cursor_by_model[model] = cursor + 1
        return tuple(ring[cursor:] + ring[:cursor])


@register_plugin("picker", TYPE, RoundRobinPickerParams, "next candidate in turn")
def _build(params: RoundRobinPickerParams, ctx: BuildContext) -> RoundRobinPicker:
    return RoundRobinPicker()
