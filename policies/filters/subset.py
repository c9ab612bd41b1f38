"""``subset`` filter: consider at most ``size`` candidates - the best prefix holders plus a random sample.

Rule: with more than ``size`` candidates, keep the backends holding the
request's deepest prefix match (at most ``keep_prefix_matches`` of them,
sampled at random when more hold it), then fill up to ``size`` with a uniform
random sample of the rest (the injected ``rng``). Otherwise keep everything.

Why: a cost model evaluated on every backend of a large fleet costs O(fleet)
per request in Python; "power of d choices" (Mitzenmacher 2001) shows a few
random candidates already give most of the benefit of looking at all of them
(d = 2 gives an exponential improvement; d = 16 is near JSQ), and the deepest
prefix holders are the only backends where a cache hit can change the answer.
The removed backends are recorded in the decision under this filter's name. Draws go
through ``policies.sampling.sample``: ``rng.sample``'s exact draws, at half its cost.
Parameters: ``size`` (default 16), ``keep_prefix_matches`` (default 4).
Removes nothing from fleets of ``size`` or fewer backends.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.types import BackendView
from policies.context import RouteContext
from policies.params import SubsetParams
from policies.registry import BuildContext, register_plugin
from policies.sampling import sample

TYPE = "subset"


class SubsetFilter:
    consumes = ("prefix_matched_tokens",)
    keeps_order = True  # policies.base: the kept backends are read back in snapshot order
    reason = "not sampled"

    def __init__(self, params: SubsetParams) -> None:
        self.name = TYPE
        self._size = params.size
        self._keep = min(params.keep_prefix_matches, params.size)

    def filter(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Sequence[BackendView]:
        size = self._size
        n = len(candidates)
        if n <= size:
            return candidates
        rng = ctx.rng
        matched = ctx.request.prefix_matched_tokens
        # Rows are drawn, then read back in snapshot order (``keeps_order``): ``sample`` draws the same
        # positions whatever the population holds, so these are the backends drawing views would give.
        chosen: list[int] | None = None
        if matched and self._keep:
            if isinstance(matched, dict):  # the prefix index's answer: compiled dict reads, max() as a loop
                deepest = -1
                first = True
                for depth in matched.values():
                    if first or depth > deepest:
                        deepest, first = depth, False
                rows = [i for i, v in enumerate(candidates) if matched.get(v.backend_id, 0) == deepest]
            else:
                deepest = max(matched.values())
                get = matched.get
                rows = [i for i, v in enumerate(candidates) if get(v.backend_id, 0) == deepest]
            if rows:
                holder_rows = rows if len(rows) <= self._keep else sample(rng, rows, self._keep)
                holder_rows.sort()  # their order does not matter: every row is read back in order below
                rest = list(range(n))
                for i in reversed(holder_rows):  # the others, in order, without a rescan
                    del rest[i]
                chosen = holder_rows + sample(rng, rest, size - len(holder_rows))
        if chosen is None:
            chosen = sample(rng, range(n), size)
        chosen.sort()
        return [candidates[i] for i in chosen]


@register_plugin("filter", TYPE, SubsetParams, "deepest prefix holders plus a random sample")
def _build(params: SubsetParams, ctx: BuildContext) -> SubsetFilter:
    return SubsetFilter(params)
