"""``random`` picker: a uniformly random ranking, ignoring scores.

Every permutation of the candidates is equally likely (drawn from the injected
``rng``). No parameters.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from core.types import BackendId
from policies.context import RouteContext
from policies.params import RandomParams
from policies.registry import BuildContext, register_plugin

TYPE = "random"


class RandomPicker:
    returns_permutation = True  # policies.base: a permutation of by_score by construction

    def __init__(self) -> None:
        self.name = TYPE

    def pick(
        self,
        ctx: RouteContext,
        by_score: Sequence[BackendId],
        totals: Mapping[BackendId, float],
        rng: random.Random,
    ) -> tuple[BackendId, ...]:
        order = list(by_score)
        rng.shuffle(order)
        return tuple(order)


@register_plugin("picker", TYPE, RandomParams, "uniformly random order")
def _build(params: RandomParams, ctx: BuildContext) -> RandomPicker:
    return RandomPicker()
