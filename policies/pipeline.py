"""The routing pipeline: filters -> weighted scorers -> picker, and its ``pipeline`` config entry.

Rule (what the pipeline itself guarantees, whatever the plugins do):

1. Candidates are the selectable backends serving the request's model, in
   snapshot order. None -> empty ranking, reason "no healthy backend serves ...".
2. Each filter in turn keeps a subset; anything it returns that was not a
   candidate is ignored (filters never add), and each backend it drops is
   recorded in ``removed`` under the filter's name. If a filter leaves nothing,
   the decision is an empty ranking whose reason names that filter (the data
   plane answers 503 with it) - never an exception.
3. Each scorer's value for each candidate is clamped to [0, 1] (NaN and a
   missing backend count as 0) and recorded in ``scores[scorer]``; the total is
   ``Σ weight·score``.
4. Candidates are sorted by total, best first; among the backends tied for
   the best total a uniformly random one (injected ``rng``) leads, the others
   keep snapshot order. The picker turns that into the final ranking, which the pipeline
   checks is a permutation of the surviving candidates.
5. ``predicted_ttft_ms`` / ``predicted_e2e_ms`` are the chosen backend's cost
   when a plugin computed one or the request carries predictions;
   ``predicted_output_tokens`` is the expected output length (the predictor's
   quantiles or the fallback prior, through ``policies.estimate.expected_tokens``).

Config (``routes[].policy``)::

    name: pipeline
    params:
      filters: [{type: slo_headroom, params: {margin_frac: 0.1}}]
      scorers:
        - {type: prefix_match, weight: 3}
        - {type: least_requests, weight: 2, name: queue}
      picker: {type: p2c, params: {top_k: 3}}

``name`` defaults to ``type`` and must be unique within the pipeline. Every
``type`` and ``params`` key is validated at start-up (file:line errors).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from core.cost_table import CostTable
from core.types import (
    BackendId,
    BackendView,
    FleetSnapshot,
    RoutingDecision,
    RoutingRequest,
)
from policies.base import Filter, Picker, Scorer
from policies.context import RouteContext
from policies.estimate import expected_tokens
from policies.params import PipelineParams, PluginRef
from policies.registry import BuildContext, PluginKind, build_plugin, register
from policies.sampling import randbelow


class Pipeline:
    """A routing policy assembled from plugins; stateless apart from its picker's cursor."""

    __slots__ = (
        "_filters",
        "_keeps_order",
        "_name",
        "_picker",
        "_picker_permutes",
        "_scorer_names",
        "_scorers",
        "_value_scorers",
    )

    def __init__(
        self,
        name: str,
        filters: Sequence[Filter],
        scorers: Sequence[tuple[Scorer, float]],
        picker: Picker,
    ) -> None:
        self._name = name
        self._filters = tuple(filters)
        # Filters whose answer is an in-order subset of their input by construction (``Filter.keeps_order``):
        # taken as it is, without the per-backend check (a scan of the fleet and a set per filter).
        self._keeps_order = tuple(getattr(flt, "keeps_order", False) is True for flt in self._filters)
        self._scorers = tuple(scorers)
        # Scorers that also answer in candidate order (``Scorer.score_values``, policies/base.py): their
        # values are read as a list, not through a per-decision dict keyed by backend id.
        self._value_scorers = tuple(
            getattr(scorer, "score_values", None) is not None for scorer, _ in self._scorers
        )
        self._scorer_names = tuple(scorer.name for scorer, _ in self._scorers)
        self._picker = picker
        # A picker that promises a permutation of its input (``Picker.returns_permutation``) is not checked.
        self._picker_permutes = getattr(picker, "returns_permutation", False) is True

    @property
    def name(self) -> str:
        return self._name

    @property
    def plugins(self) -> tuple[str, ...]:
        """Instance names in execution order, for docs and debugging."""
        return (*(f.name for f in self._filters), *(s.name for s, _ in self._scorers), self._picker.name)

    def route(
        self, request: RoutingRequest, snapshot: FleetSnapshot, now_s: float, rng: random.Random
    ) -> RoutingDecision:
        model = request.features.model
        candidates: Sequence[BackendView] = snapshot.serving(model)
        if not candidates:
            reason = f"no healthy backend serves {model!r}"
            return RoutingDecision(ranked=(), policy=self._name, reason=reason)
        ctx = RouteContext(request, snapshot, now_s, rng)
        removed = RemovedBy()
        filters, keeps_order = self._filters, self._keeps_order
        # The candidates' ids once a filter removed some (the explanation keeps ids, not views: see
        # ``RemovedBy``); they are then also the scorers' ids below.
        candidate_ids: list[BackendId] | None = None
        for k in range(len(filters)):  # not zip(): a generic call with keywords in compiled code
            flt = filters[k]
            kept = flt.filter(ctx, candidates)
            if kept is candidates:
                continue
            before = candidates
            if keeps_order[k]:
                candidates = kept
            else:
                kept_ids = {view.backend_id for view in kept}
                candidates = [view for view in before if view.backend_id in kept_ids]  # never adds, in order
            before_ids = candidate_ids if candidate_ids is not None else _ids_of(before, snapshot)
            candidate_ids = [view.backend_id for view in candidates]
            removed.note(flt.name, before_ids, candidate_ids)
            if not candidates:
                return RoutingDecision(
                    ranked=(),
                    policy=self._name,
                    removed=removed,
                    reason=f"every candidate was filtered out; the last by {flt.name!r}: {flt.reason}",
                )

        ids = candidate_ids if candidate_ids is not None else [view.backend_id for view in candidates]
        total_values, scores = self._score(ctx, candidates, ids)
        n = len(ids)
        totals: dict[BackendId, float] = {}
        for i in range(n):
            totals[ids[i]] = total_values[i]
        by_score = _by_score(ids, totals, rng)
        ranked = self._picker.pick(ctx, by_score, totals, rng)
        if not self._picker_permutes and (len(ranked) != n or set(ranked) != totals.keys()):
            picker = self._picker.name
            raise RuntimeError(f"picker {picker!r} returned {ranked!r}, not a permutation of {ids!r}")
        cost = _chosen_cost(ctx, ranked[0], candidates)
        return RoutingDecision(
            ranked=ranked,
            policy=self._name,
            scores=scores,
            removed=removed,
            predicted_ttft_ms=cost[0] if cost is not None else None,
            predicted_e2e_ms=cost[1] if cost is not None else None,
            predicted_output_tokens=expected_tokens(ctx.output_length()),
        )

    def _score(
        self, ctx: RouteContext, candidates: Sequence[BackendView], ids: list[BackendId]
    ) -> tuple[list[float], Mapping[str, Mapping[BackendId, float]]]:
        """Weighted totals in candidate order and each scorer's clamped scores (negative/NaN/missing -> 0,
        above 1 -> 1); the per-scorer mapping is ``ScoresByName``, built from the value lists when read."""
        scorers = self._scorers
        n = len(ids)
        if not scorers:
            return [0.0] * n, {}
        value_scorers = self._value_scorers
        per_scorer: list[list[float]] = []
        totals: list[float] = []
        for k in range(len(scorers)):  # not zip(): a generic call with keywords in compiled code
            scorer, weight = scorers[k]
            values: list[float]
            if value_scorers[k]:
                values = scorer.score_values(ctx, candidates)  # type: ignore[attr-defined]
                if len(values) != n:
                    name = scorer.name
                    raise RuntimeError(f"scorer {name!r} returned {len(values)} values for {n} candidates")
            else:
                raw = scorer.score(ctx, candidates)
                values = [raw.get(backend_id, 0.0) for backend_id in ids]
            zero = False
            for i in range(n):
                value = values[i]
                if not value >= 0.0:  # negative or NaN
                    values[i] = 0.0
                    zero = True
                elif value > 1.0:
                    values[i] = 1.0
                elif value == 0.0:
                    zero = True
            # Each total starts at 0.0 and adds weight·score per scorer (0.0 + x, not x: the same bits,
            # -0.0 included); the first scorer fills the list instead of updating one of zeros. With a
            # weight of 1.0 and no zero score, 0.0 + 1.0·x is x itself (exact for every x in (0, 1]): the
            # totals are then a copy of the scores' list, sharing their float objects instead of boxing
            # as many new ones. Only for ``score_values`` (a list of floats by contract): a Mapping
            # scorer's ints would otherwise be handed on as totals where 0.0 + 1.0·x makes floats.
            if k == 0:
                if weight == 1.0 and not zero and value_scorers[k]:
                    totals = values[:]
                else:
                    for i in range(n):
                        totals.append(0.0 + weight * values[i])
            else:
                for i in range(n):
                    totals[i] += weight * values[i]
            per_scorer.append(values)
        return totals, ScoresByName(self._scorer_names, ids, per_scorer)


class ScoresByName(Mapping[str, Mapping[BackendId, float]]):
    """``RoutingDecision.scores``: scorer name -> backend -> clamped score, built only when read.

    The pipeline keeps each scorer's clamped values as a list in candidate order; the per-scorer
    dicts (what ``/debug/decisions``, the digest and tests read) are made on first read, never on
    the request path. The same keys in the same order, and the same floats, as the dicts it replaced.
    """

    __slots__ = ("_ids", "_map", "_names", "_values")

    def __init__(self, names: tuple[str, ...], ids: list[BackendId], values: list[list[float]]) -> None:
        self._names = names
        self._ids = ids
        self._values = values
        self._map: dict[str, dict[BackendId, float]] | None = None

    def _built(self) -> dict[str, dict[BackendId, float]]:
        built = self._map
        if built is None:
            built = self._map = {}
            ids = self._ids
            for k in range(len(self._names)):
                values = self._values[k]
                built[self._names[k]] = {ids[i]: values[i] for i in range(len(ids))}
        return built

    def __getitem__(self, name: str) -> Mapping[BackendId, float]:
        return self._built()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return repr(self._built())


class RemovedBy(Mapping[BackendId, str]):
    """``RoutingDecision.removed``: backend -> the filter that removed it, worked out only when read.

    The pipeline notes each filter's input and what it kept, as backend ids; the per-backend map
    (48 entries when sampling 16 of 64 backends) is built on first read, by the decision log or a
    test, never on the request path. Ids, not views: the decision log keeps a decision for 1,024
    decisions, and views kept that long (the whole fleet's tuple for the first filter) would keep
    every snapshot's views alive and be freed, cold, inside a later decision. The fleet's ids come
    from ``FleetSnapshot.backend_ids``, one tuple shared by every snapshot of an unchanged fleet.
    """

    __slots__ = ("_map", "_steps")

    def __init__(self) -> None:
        # Flat: name, before, kept, name, ... (no tuple per step: a decision stays in the log for ~1,000
        # requests, and every object it holds is freed then, cold, inside a later decision).
        self._steps: list[object] = []
        self._map: dict[BackendId, str] | None = None

    def note(self, filter_name: str, before: Sequence[BackendId], kept: Sequence[BackendId]) -> None:
        """``filter_name`` turned ``before`` into ``kept`` (backend ids, in candidate order)."""
        steps = self._steps
        steps.append(filter_name)
        steps.append(before)
        steps.append(kept)
        self._map = None

    def _built(self) -> dict[BackendId, str]:
        built = self._map
        if built is None:
            built = self._map = {}
            steps = self._steps
            for at in range(0, len(steps), 3):
                name = cast("str", steps[at])
                before = cast("Sequence[BackendId]", steps[at + 1])
                kept_ids = set(cast("Sequence[BackendId]", steps[at + 2]))
                for backend_id in before:
                    if backend_id not in kept_ids:
                        built[backend_id] = name
        return built

    def __getitem__(self, backend_id: BackendId) -> str:
        return self._built()[backend_id]

    def __iter__(self) -> Iterator[BackendId]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._built())

    def __bool__(self) -> bool:
        return bool(self._steps) and bool(self._built())

    def __repr__(self) -> str:
        return repr(self._built())


def _ids_of(views: Sequence[BackendView], snapshot: FleetSnapshot) -> Sequence[BackendId]:
    """The ids of ``views``: the snapshot's shared tuple when they are its whole fleet (no view read)."""
    fleet_ids = snapshot.backend_ids
    if fleet_ids is not None and views is snapshot.backends and len(fleet_ids) == len(views):
        return fleet_ids
    return [view.backend_id for view in views]


def _by_score(ids: list[BackendId], totals: dict[BackendId, float], rng: random.Random) -> list[BackendId]:
    """Best total first; among the backends tied for the best total, a uniformly random one leads.

    The rest keep snapshot order within ties: only the head of the ranking
    decides where the request goes (pickers that sample compare totals
    themselves), so one C-level sort and one random draw suffice.
    """
    by_score = sorted(ids, key=totals.__getitem__, reverse=True)  # stable: snapshot order within ties
    best = totals[by_score[0]]
    tied = 1
    while tied < len(by_score) and totals[by_score[tied]] == best:
        tied += 1
    if tied > 1:
        lead = randbelow(rng, tied)  # rng.randrange(tied), the same draw
        by_score[0], by_score[lead] = by_score[lead], by_score[0]
    return by_score


def _chosen_cost(
    ctx: RouteContext, backend_id: BackendId, candidates: Sequence[BackendView]
) -> tuple[float, float] | None:
    """The chosen backend's predicted ``(ttft_ms, e2e_ms)`` when this decision estimated it or the
    request carries it; read from the predictor's ``CostTable`` without building an estimate object."""
    predictions = ctx.request.predictions
    if predictions is not None:
        per_backend = predictions.per_backend
        if type(per_backend) is CostTable:
            pair = per_backend.ttft_e2e(backend_id)
            if pair is not None:
                return pair
        else:
            supplied = per_backend.get(backend_id)
            if supplied is not None:
                return supplied.ttft_ms, supplied.e2e_ms
    if ctx.was_estimated(backend_id):
        estimate = ctx.cost(next(v for v in candidates if v.backend_id == backend_id))
        return estimate.ttft_ms, estimate.e2e_ms
    return None


def _build_named(
    kind: PluginKind, ref: PluginRef, ctx: BuildContext, at: tuple[str | int, ...], seen: set[str]
) -> Any:
    plugin = build_plugin(kind, ref.type, ref.params, ctx, (*at, "type"), (*at, "params"))
    instance = ref.name or ref.type
    if instance in seen:
        raise ctx.error(f"name {instance!r} is used twice in this pipeline; set a distinct 'name'", *at)
    seen.add(instance)
    plugin.name = instance
    return plugin


def build_pipeline(name: str, params: PipelineParams, ctx: BuildContext) -> Pipeline:
    """Build each referenced plugin; unknown types/params raise ``ConfigError`` at their line."""
    seen: set[str] = set()
    filters: list[Filter] = [
        _build_named("filter", ref, ctx, ("filters", i), seen) for i, ref in enumerate(params.filters)
    ]
    scorers: list[tuple[Scorer, float]] = [
        (_build_named("scorer", ref, ctx, ("scorers", i), seen), ref.weight)
        for i, ref in enumerate(params.scorers)
    ]
    picker: Picker = _build_named("picker", params.picker, ctx, ("picker",), seen)
    return Pipeline(name, filters, scorers, picker)


@register("pipeline", PipelineParams, "filters -> weighted scorers -> picker, assembled in config")
def _build(params: PipelineParams, ctx: BuildContext) -> Pipeline:
    return build_pipeline("pipeline", params, ctx)
