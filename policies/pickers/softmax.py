"""``softmax`` picker: sample the ranking with probability ∝ exp(score / temperature).

Rule: the winner is drawn with ``P(b) = exp(s_b/T) / Σ exp(s_j/T)``, then the
next from the rest, and so on (sampling without replacement, implemented with
the Gumbel-top-k trick: sort by ``s_b/T + Gumbel noise``). Over a
``dynamo_cost`` score (1 - normalised logit) this is Dynamo's
``--router-temperature`` sampling. Parameter ``temperature`` T (default 0.1);
T = 0 is the ``max_score`` ranking.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from core.types import BackendId
from policies.context import RouteContext
from policies.params import SoftmaxParams
from policies.registry import BuildContext, register_plugin

TYPE = "softmax"


class SoftmaxPicker:
    returns_permutation = True  # policies.base: a permutation of by_score by construction

    def __init__(self, params: SoftmaxParams) -> None:
        self.name = TYPE
        self._temperature = params.temperature

    def pick(
        self,
        ctx: RouteContext,
        by_score: Sequence[BackendId],
        totals: Mapping[BackendId, float],
        rng: random.Random,
    ) -> tuple[BackendId, ...]:
        if self._temperature == 0.0:
            return tuple(by_score)
        keyed: list[tuple[float, BackendId]] = []
        for backend_id in by_score:
            uniform = rng.random() or 1e-300
            gumbel = -math.log(-math.log(uniform)) if uniform < 1.0 else math.inf
            keyed.append((totals[backend_id] / self._temperature + gumbel, backend_id))
        keyed.sort(key=lambda item: item[0], reverse=True)
        return tuple(backend_id for _, backend_id in keyed)


@register_plugin("picker", TYPE, SoftmaxParams, "random order weighted by exp(score / temperature)")
def _build(params: SoftmaxParams, ctx: BuildContext) -> SoftmaxPicker:
    return SoftmaxPicker(params)
