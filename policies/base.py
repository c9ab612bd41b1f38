"""The pipeline's plugin contracts: filters remove, scorers score, a picker orders.

A ``pipeline`` policy runs ``filters -> weighted scorers -> picker`` (the GIE
scheduler-profile shape). Plugins are small and stateless apart from picker
cursors; the pipeline, not the plugins, enforces the contract: it drops any
backend a filter tries to add, clamps scores into [0, 1], applies weights,
breaks ties with the injected ``rng`` and records which filter removed whom.

Every plugin has an instance ``name`` (unique within its pipeline, used as the
key of ``RoutingDecision.scores`` / ``removed``) and a ``consumes`` tuple naming
the request/snapshot fields it reads, for the docs and ``/debug/decisions``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from core.types import BackendId, BackendView

if TYPE_CHECKING:
    from policies.context import RouteContext


class Filter(Protocol):
    """Returns the subset of ``candidates`` that may serve the request, in the given order."""

    name: str

    @property
    def consumes(self) -> tuple[str, ...]: ...

    @property
    def reason(self) -> str:
        """One line shown in the decision's reason when this filter removes the last candidates."""
        ...

    def filter(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Sequence[BackendView]: ...


# A filter may also set a class attribute ``keeps_order = True``: a promise that ``filter`` returns
# ``candidates`` itself or some of its elements (the same objects, each once) in their order. The pipeline
# then takes the answer as it is instead of re-deriving it from the input (a scan of every candidate and
# a set per filter: ~4 µs per request for the subset filter at 64 backends). The built-in filters make the
# promise (tests/unit/test_pipeline.py checks them); a filter without it is checked as before.


class Scorer(Protocol):
    """Scores each candidate in [0, 1], higher is better; a missing backend scores 0.

    Called only with at least one candidate.
    """

    name: str

    @property
    def consumes(self) -> tuple[str, ...]: ...

    def score(self, ctx: RouteContext, candidates: Sequence[BackendView]) -> Mapping[BackendId, float]: ...


# A scorer may also define ``score_values(ctx, candidates) -> list[float]``: the same scores as ``score``, as
# a new list in the order of ``candidates`` (one per candidate; the pipeline may change the list). The
# pipeline then uses it instead of ``score`` (no per-decision dict keyed by backend id; it clamps and
# records the values exactly as ``score``'s). Optional: a scorer with ``score`` only works as before.


class Picker(Protocol):
    """Orders the candidates into the final ranking (first = chosen, rest = retry fallbacks).

    ``by_score`` holds every candidate, best weighted score first, the lead
    drawn at random among those tied for the best score (others in snapshot
    order); ``totals`` are the weighted scores. The result must be a
    permutation of ``by_score``.
    """

    name: str

    def pick(
        self,
        ctx: RouteContext,
        by_score: Sequence[BackendId],
        totals: Mapping[BackendId, float],
        rng: random.Random,
    ) -> tuple[BackendId, ...]: ...


# A picker may also set a class attribute ``returns_permutation = True``: a promise that ``pick`` returns
# every element of ``by_score`` exactly once (in any order). The pipeline then skips its own check of the
# ranking (a set of the ranking compared with the candidates per decision). The built-in pickers make the
# promise (tests/unit/test_pipeline.py checks them); a picker without it is checked as before.
