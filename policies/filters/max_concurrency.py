"""``max_concurrency`` filter: drop backends at their configured ``max_concurrency``.

Rule: remove ``b`` iff ``b.max_concurrency`` is set and
``in_flight_requests >= max_concurrency``. This one CAN empty the set: when
every backend is full the decision is an empty ranking with this filter named
in the reason, which the data plane turns into a 503 (or the admission layer
queues the request first). Parameter ``fail_open`` (default false): keep every
candidate instead when all are full. Removes nothing for backends without a
``max_concurrency``.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.types import BackendView
from policies.context import RouteContext
from policies.params import MaxConcurrencyParams
from policies.registry import BuildContext, register_plugin

TYPE = "max_concurrency"


class MaxConcurrencyFilter:
    keeps_order = True  # policies.base: what it keeps is an in-order subset of its input
    consumes = ("in_flight_requests", "max_concurrency")
    reason = "every backend is at its max_concurrency"

    def __init__(self, params: MaxConcurrencyParams) -> None:
        self.name = TYPE
        self._fail_open = params.fail_open

    def filter(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Sequence[BackendView]:
        kept = [
            v for v in candidates if v.max_concurrency is None or v.in_flight_requests < v.max_concurrency
        ]
        if not kept and self._fail_open:
            return candidates
        return kept


@register_plugin("filter", TYPE, MaxConcurrencyParams, "drop backends at their max_concurrency")
def _build(params: MaxConcurrencyParams, ctx: BuildContext) -> MaxConcurrencyFilter:
    return MaxConcurrencyFilter(params)
