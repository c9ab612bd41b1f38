"""``slo_headroom`` filter: drop backends predicted to miss the route's SLO, when others meet it.

Rule: with the route's TTFT objective ``S_ttft`` and margin m, a backend
*meets* it iff ``TTFT̂(b) <= (1 - m)·S_ttft``; with ``check_tpot`` and a TPOT
objective, also ``TPOT̂(b) <= (1 - m)·S_tpot``. Keep the backends that meet
both; if none does, keep those that meet the TTFT objective; if none does,
``when_infeasible`` decides: ``keep`` every candidate, or ``sacrifice``: keep
only the one predicted to be slowest to a first token (the highest TTFT̂).
This filter never empties the set (refusing work is admission's job).

Why ``sacrifice``: a request predicted to miss the TTFT bound everywhere is
lost for goodput wherever it goes, but where it goes still matters to the
requests after it. Kept with the others, the cost scorer sends it to the
backend with the shortest queue - the one the next requests need - and
lengthens that queue past the bound for them too: near saturation one burst
then tips every backend over the bound and attainment collapses (issue-6
fleet, ShareGPT at 220 req/s: 0.64 with ``keep``). Sent to the backend that
is already the slowest, it costs the fleet the least; this is the oracle's
rule (``loadgen.sim.oracle``). Costs come from the predictor when supplied,
else the fallback estimator. Parameters: ``margin_frac`` m (default 0),
``check_tpot`` (default true), ``when_infeasible`` (default ``keep``).
Removes nothing when the route has no TTFT or TPOT objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from core.types import BackendView
from policies.context import RouteContext
from policies.params import SLOHeadroomParams
from policies.registry import BuildContext, register_plugin

TYPE = "slo_headroom"


class SLOHeadroomFilter:
    keeps_order = True  # policies.base: what it keeps is an in-order subset of its input
    consumes = ("slo", "predictions", "prefix_matched_tokens", "in_flight_*")
    reason = "predicted to miss the route's SLO"

    def __init__(self, params: SLOHeadroomParams) -> None:
        self.name = TYPE
        self._keep_frac = 1.0 - params.margin_frac
        self._check_tpot = params.check_tpot
        self._sacrifice = params.when_infeasible == "sacrifice"

    def filter(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Sequence[BackendView]:
        slo = ctx.request.slo
        ttft_limit = slo.ttft_ms * self._keep_frac if slo.ttft_ms is not None else None
        tpot_limit = slo.tpot_ms * self._keep_frac if slo.tpot_ms is not None and self._check_tpot else None
        if ttft_limit is None and tpot_limit is None:
            return candidates
        meets_both: list[BackendView] = []
        # Their costs too, handed to the context with the answer (``RouteContext.remember_pairs``).
        # Kept as objects: compiled, a ``tuple[float, float]`` item read into a typed local is unboxed and
        # would be boxed again (a new tuple) when appended.
        both_pairs: list[object] = []
        slowest: BackendView | None = None
        slowest_ttft_ms = -1.0
        meets_ttft_only = False  # a backend meets the TTFT objective but not the TPOT one
        pairs = cast("list[object]", ctx.ttft_tpot_all(candidates))  # one per candidate, in order
        for i in range(len(pairs)):  # not zip(..., strict=True): a generic keyword call in compiled code
            view = candidates[i]
            pair = pairs[i]
            ttft_ms, tpot_ms = cast("tuple[float, float]", pair)
            if ttft_ms > slowest_ttft_ms:
                slowest, slowest_ttft_ms = view, ttft_ms
            if ttft_limit is not None and ttft_ms > ttft_limit:
                continue
            if tpot_limit is None or tpot_ms <= tpot_limit:
                meets_both.append(view)
                both_pairs.append(pair)
            else:
                meets_ttft_only = True
        if len(meets_both) == len(candidates):
            return candidates  # nothing removed: the pipeline skips its bookkeeping for the same object
        if meets_both:
            ctx.remember_pairs(meets_both, cast("list[tuple[float, float]]", both_pairs))
            return meets_both
        if meets_ttft_only:
            # Rare (no backend meets both objectives): those meeting the TTFT one, in a second pass over
            # the same pairs, so that the usual decision does not build two more lists it then drops.
            meets_ttft: list[BackendView] = []
            ttft_pairs: list[object] = []
            for i in range(len(pairs)):
                pair = pairs[i]
                ttft_ms, _ = cast("tuple[float, float]", pair)
                if ttft_limit is None or not ttft_ms > ttft_limit:
                    meets_ttft.append(candidates[i])
                    ttft_pairs.append(pair)
            ctx.remember_pairs(meets_ttft, cast("list[tuple[float, float]]", ttft_pairs))
            return meets_ttft
        if self._sacrifice and slowest is not None:
            return [slowest]
        return candidates


@register_plugin(
    "filter", TYPE, SLOHeadroomParams, "drop backends predicted to miss the SLO if others meet it"
)
def _build(params: SLOHeadroomParams, ctx: BuildContext) -> SLOHeadroomFilter:
    return SLOHeadroomFilter(params)
