"""``p2c`` picker: power of two choices among the best candidates.

Rule: the *eligible* set is the first ``top_k`` candidates by score (all when
``top_k`` is unset) that also score at least ``near_best_frac`` times the best
total. With ``prefer_prefix``, if eligible candidates differ in the prompt
tokens the prefix index believes they cache, only those with the longest match
stay eligible. Two distinct eligible candidates are drawn uniformly at random
and the better-scored one wins; the others follow in score order. With one
eligible candidate it wins outright.

Why: with d = 2 choices the maximum queue drops from ln n / ln ln n to
ln ln n / ln 2 (Mitzenmacher 2001), and sampling keeps several proxy replicas
acting on the same stale snapshot from all picking the same argmin (herding).
``near_best_frac`` confines the randomisation to near-ties, so a clearly
better backend is not given away. ``prefer_prefix`` breaks those near-ties by
cache affinity instead of at random: a near-tie in *predicted* cost ignores
what keeping a conversation on the backend that holds its history is worth to
its next turns (their prefill is then cached too), so randomising there throws
prefix hits away. Parameters: ``top_k`` (default unset), ``near_best_frac``
(default 0), ``prefer_prefix`` (default false). As a baseline
(``power_of_two``) it samples among all candidates, as Envoy/Ray do.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from core.types import BackendId
from policies.context import RouteContext
from policies.params import P2CParams
from policies.registry import BuildContext, register_plugin
from policies.sampling import sample_consuming

TYPE = "p2c"


class P2CPicker:
    returns_permutation = True  # policies.base: a permutation of by_score by construction

    def __init__(self, params: P2CParams) -> None:
        self.name = TYPE
        self._top_k = params.top_k
        self._near_best_frac = params.near_best_frac
        self._prefer_prefix = params.prefer_prefix

    def pick(
        self,
        ctx: RouteContext,
        by_score: Sequence[BackendId],
        totals: Mapping[BackendId, float],
        rng: random.Random,
    ) -> tuple[BackendId, ...]:
        top_k = self._top_k
        n = len(by_score) if top_k is None or top_k > len(by_score) else top_k
        best = totals[by_score[0]]
        # The first ``top_k`` near the best in one list (not a slice, a copy of it, then the filtered list).
        eligible: list[BackendId]
        if self._near_best_frac > 0.0 and best > 0.0:
            floor = self._near_best_frac * best
            eligible = [by_score[i] for i in range(n) if totals[by_score[i]] >= floor]
        else:
            eligible = [by_score[i] for i in range(n)]
        if self._prefer_prefix and len(eligible) > 1 and ctx.request.prefix_matched_tokens:
            eligible = _longest_matches(ctx, eligible)
        if len(eligible) < 2:
            return _winner_first(eligible[0], by_score)
        first, second = sample_consuming(rng, eligible, 2)  # this call's own list: drawn without a copy
        if totals[first] != totals[second]:
            winner = first if totals[first] > totals[second] else second
        else:
            winner = first  # the draw order is already random
        return _winner_first(winner, by_score)


def _winner_first(winner: BackendId, by_score: Sequence[BackendId]) -> tuple[BackendId, ...]:
    """``winner``, then the others in score order (backend ids are distinct: one C-level removal)."""
    if by_score[0] is winner:  # the usual case: the ranking as it is, one C-level copy
        return tuple(by_score)
    rest = list(by_score)
    rest.remove(winner)
    return (winner, *rest)


def _longest_matches(ctx: RouteContext, eligible: list[BackendId]) -> list[BackendId]:
    """The eligible backends whose cached prefix of this prompt is the longest (all when none is cached)."""
    matched = [ctx.matched_tokens(b) for b in eligible]
    longest = matched[0]
    for m in matched:  # max() as a loop: a generic call from compiled code (the same value)
        if m > longest:
            longest = m
    if longest <= 0:
        return eligible
    # Indexed, not zip(..., strict=True): a generic keyword call in compiled code.
    return [eligible[i] for i in range(len(eligible)) if matched[i] == longest]


@register_plugin("picker", TYPE, P2CParams, "best of two random draws among the top candidates")
def _build(params: P2CParams, ctx: BuildContext) -> P2CPicker:
    return P2CPicker(params)
