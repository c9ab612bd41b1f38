"""``sluice_predictive``: route to the backend with the lowest predicted latency for this request.

Rule (formulas.md §3), as one pipeline:

0. ``subset`` - on fleets larger than ``max_candidates``, consider only the
   backends holding the deepest prefix match (up to ``keep_prefix_matches``)
   plus a random sample of the others (power of d choices), which bounds the
   per-request cost of the cost model on large fleets;
1. ``imbalance_guard`` - remove backends whose weight-normalised queue
   (requests awaiting their first byte) is more than ``guard_abs_threshold``
   above AND ``guard_rel_threshold`` times the least-queued one (the hard
   safety net; reads only Sluice's accounting).
2. ``slo_headroom`` - drop backends predicted to miss the route's TTFT (and
   TPOT) objective when others meet it; a backend meets it with
   ``slo_margin_frac`` of the bound to spare. When none does
   (``when_infeasible: sacrifice``), keep only the backend predicted slowest
   to a first token. Why: a request that can meet the bound nowhere, sent to
   the shortest queue, pushes that queue past the bound for the requests
   behind it; near saturation one burst then tips every backend over and
   attainment collapses. Sent to the slowest backend it costs the others
   nothing. The margin decides when that happens: with a TTFT score the
   chosen backend is the one with the most headroom anyway, so the margin
   only moves the point where even the best is given up (1.6 s of a 2 s
   bound at 0.2), which covers the model's error in deep queues (TTFT̂ ~1.3x
   low at p90). The oracle (``loadgen.sim.oracle``) uses the same two rules
   (margin 0.1, sacrifice). Issue-6 fleet, ShareGPT at 190 / 220 req/s,
   seed 1: SLO attainment 0.84 / 0.65 before, 0.95 / 0.89 with these and the
   latency model's slot term (docs/policies.md, "Near saturation").
3. ``predicted_cost`` - score ``min_c / c(b)`` with ``c(b)`` the route's
   objective: ``TTFT̂(b)`` = predicted queue wait + prefill of the uncached
   prompt tokens, or ``E2Ê(b) = TTFT̂(b) + (L̂ - 1)·TPOT̂(b)`` with the
   tail-aware length ``L̂ = p50 + tail_weight·(p90 - p50)`` and decode at that
   backend's own (learned) speed, or (``slo``, the default) what the route's
   SLO asks for: TTFT when it bounds TTFT or TPOT (TPOT is step 2's
   constraint), the larger fraction of the TTFT/E2E deadlines when it bounds
   E2E, E2E when it has no SLO. Why ``slo`` by default: goodput counts
   requests that meet every bound, and ``e2e`` spends TTFT budget to save
   decode time the SLO does not ask for (docs/policies.md, "Objective":
   critical goodput 81-90% -> 96-98% in the overload scenario, a tie on the
   issue-6 matrix).
4. ``p2c`` - the better of two random draws among the ``top_k`` best that are
   within ``near_best_frac`` of the best score, so proxy replicas deciding on
   the same snapshot don't all herd onto one argmin, while a clearly better
   backend is never given away; with ``prefer_prefix`` the draw is among those
   of them that cache the longest prefix of the prompt (cache affinity breaks
   near-ties: a conversation stays where its history is cached).

Costs come from ``RoutingRequest.predictions`` (the predictors facade, learned
per-backend speeds and output-length quantiles); when a request carries none,
the fallback estimator in ``policies.estimate`` is used.

Parameters and defaults: ``max_candidates`` 16, ``keep_prefix_matches`` 4,
``objective`` slo, ``tail_weight`` 1.0 (p90), ``slo_margin_frac`` 0.2,
``check_tpot`` true, ``when_infeasible`` sacrifice, ``top_k`` 3, ``near_best_frac`` 0.9 (a cost within ~11%
of the best), ``guard_abs_threshold`` 32, ``guard_rel_threshold`` 3.0,
``prefer_prefix`` true.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from policies.filters.imbalance_guard import ImbalanceGuardFilter
from policies.filters.slo_headroom import SLOHeadroomFilter
from policies.filters.subset import SubsetFilter
from policies.params import (
    ImbalanceGuardParams,
    P2CParams,
    PredictedCostParams,
    SLOHeadroomParams,
    SubsetParams,
)
from policies.pickers.p2c import P2CPicker
from policies.pipeline import Pipeline
from policies.registry import BuildContext, PolicyParams, register
from policies.scorers.predicted_cost import PredictedCostScorer

NAME = "sluice_predictive"


class PredictiveParams(PolicyParams):
    max_candidates: int = Field(16, ge=1)
    keep_prefix_matches: int = Field(4, ge=0)
    objective: Literal["ttft", "e2e", "slo"] = "slo"
    tail_weight: float = Field(1.0, ge=0.0, le=2.0)
    slo_margin_frac: float = Field(0.2, ge=0.0, lt=1.0)
    check_tpot: bool = True
    when_infeasible: Literal["keep", "sacrifice"] = "sacrifice"
    top_k: int = Field(3, ge=1)
    near_best_frac: float = Field(0.9, ge=0.0, le=1.0)
    guard_abs_threshold: float = Field(32.0, ge=0.0)
    guard_rel_threshold: float = Field(3.0, ge=1.0)
    prefer_prefix: bool = True


@register(
    NAME, PredictiveParams, "argmin predicted TTFT/E2E with SLO filter, P2C anti-herding, imbalance guard"
)
def build_predictive(params: PredictiveParams, ctx: BuildContext | None = None) -> Pipeline:
    p = params
    subset = SubsetFilter(SubsetParams(size=p.max_candidates, keep_prefix_matches=p.keep_prefix_matches))
    guard = ImbalanceGuardFilter(
        ImbalanceGuardParams(abs_threshold=p.guard_abs_threshold, rel_threshold=p.guard_rel_threshold)
    )
    slo = SLOHeadroomFilter(
        SLOHeadroomParams(
            margin_frac=p.slo_margin_frac, check_tpot=p.check_tpot, when_infeasible=p.when_infeasible
        )
    )
    scorer = PredictedCostScorer(PredictedCostParams(objective=p.objective, tail_weight=p.tail_weight))
    picker = P2CPicker(
        P2CParams(top_k=p.top_k, near_best_frac=p.near_best_frac, prefer_prefix=p.prefer_prefix)
    )
    return Pipeline(NAME, (subset, guard, slo), ((scorer, 1.0),), picker)
