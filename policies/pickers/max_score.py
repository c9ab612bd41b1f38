"""``max_score`` picker: the highest weighted score wins; the rest follow in score order.

Ties were already broken at random by the pipeline, so equal scores give a
uniformly random winner. No parameters.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from core.types import BackendId
from policies.context import RouteContext
from policies.params import MaxScoreParams
from policies.registry import BuildContext, register_plugin

TYPE = "max_score"


class MaxScorePicker:
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
        return tuple(by_score)


@register_plugin("picker", TYPE, MaxScoreParams, "highest score first")
def _build(params: MaxScoreParams, ctx: BuildContext) -> MaxScorePicker:
    return MaxScorePicker()
