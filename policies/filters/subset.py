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

from collections.abc import Mapping, Sequence

from core.types import BackendId, BackendView
from policies.context import RouteContext
from policies.params import SubsetParams
from policies.registry import BuildContext, register_plugin
from policies.sampling import sample, sample_consuming

TYPE = "subset"


class SubsetFilter:
    consumes = ("prefix_matched_tokens",)
    keeps_order = True  # policies.base: the kept backends are read back in snapshot order
    reason = "not sampled"

    def __init__(self, params: SubsetParams) -> None:
        self.name = TYPE
        self._size = params.size
        self._keep = min(params.keep_prefix_matches, params.size)
        # Row of each backend id in the candidates last seen: a memo, checked at every use (the row must
        # hold that id) and rebuilt when it misses, so it never changes an answer. Why: the candidates are
        # a new tuple per snapshot but almost always the same backends in the same order, and finding the
        # few deepest prefix holders' rows by it beats a prefix-match lookup per candidate (64 per request).
        self._row_of: dict[BackendId, int] = {}

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
            rows = self._deepest_rows(matched, candidates)
            if rows:
                holder_rows = rows if len(rows) <= self._keep else sample(rng, rows, self._keep)
                holder_rows.sort()  # their order does not matter: every row is read back in order below
                rest = _rows(n)
                for i in reversed(holder_rows):  # the others, in order, without a rescan
                    del rest[i]
                chosen = holder_rows + sample_consuming(rng, rest, size - len(holder_rows))
        if chosen is None:
            chosen = sample_consuming(rng, _rows(n), size)
        chosen.sort()
        if isinstance(candidates, tuple):  # the snapshot's own tuple: compiled tuple reads
            return [candidates[i] for i in chosen]
        return [candidates[i] for i in chosen]

    def _deepest_rows(self, matched: Mapping[BackendId, int], candidates: Sequence[BackendView]) -> list[int]:
        """Rows (ascending) of the candidates holding the deepest prefix match of all ``matched`` backends.

        The deepest depth is taken over every matched backend, candidate or not (a deepest holder that
        is not a candidate leaves no row), as a scan of the candidates comparing depths would give."""
        deepest = -1
        first = True
        holders: list[BackendId] = []  # those at the deepest depth so far, in one pass (max() as a loop)
        # The prefix index's answer is a dict: iterated as one when compiled (no item tuples); any other
        # mapping is copied first, in its own order.
        by_id: dict[BackendId, int] = matched if isinstance(matched, dict) else dict(matched)
        for backend_id, depth in by_id.items():
            if first or depth > deepest:
                deepest, first = depth, False
                holders = [backend_id]
            elif depth == deepest:
                holders.append(backend_id)
        n = len(candidates)
        if deepest == 0:  # then a candidate absent from ``matched`` (depth 0) holds the deepest match too
            return [i for i in range(n) if matched.get(candidates[i].backend_id, 0) == 0]
        row_of = self._row_of
        rows: list[int] = []
        rebuilt = False
        for backend_id in holders:
            row = row_of.get(backend_id)
            if row is None or row >= n or candidates[row].backend_id != backend_id:
                if not rebuilt:  # the memo is of other candidates: rebuild it once, then trust it
                    row_of = self._row_of = {candidates[i].backend_id: i for i in range(n)}
                    rebuilt = True
                row = row_of.get(backend_id)
                if row is None:
                    continue  # not a candidate
            rows.append(row)
        rows.sort()
        return rows


_ROWS = list(range(256))


def _rows(n: int) -> list[int]:
    """``list(range(n))``: a slice of a prebuilt list for the usual fleet sizes (one copy, no range)."""
    return _ROWS[:n] if n <= len(_ROWS) else list(range(n))


@register_plugin("filter", TYPE, SubsetParams, "deepest prefix holders plus a random sample")
def _build(params: SubsetParams, ctx: BuildContext) -> SubsetFilter:
    return SubsetFilter(params)
