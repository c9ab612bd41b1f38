"""What every plugin of one routing decision sees: the request, the snapshot, time, rng, and costs.

Per-backend cost estimates are resolved once per decision and shared by the
plugins that need them (an SLO filter and a cost scorer read the same numbers):
the predictor's ``BackendCostEstimate`` when the request carries one for that
backend, else the fallback estimator (``policies.estimate``). Only the
backends a plugin asks about are estimated, so a predictor may hand over a lazy
``per_backend`` mapping and pay only for the candidates that survive sampling.
The context is created by the pipeline for one decision and discarded; it is
the only place a decision caches anything.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from core.cost_table import CostTable
from core.types import (
    BackendCostEstimate,
    BackendId,
    BackendView,
    FleetSnapshot,
    OutputLengthEstimate,
    RequestFeatures,
    RoutingRequest,
)
from policies.estimate import estimate_terms, prior_output_length


class RouteContext:
    __slots__ = (
        "_costs",
        "_length",
        "_pairs",
        "_pairs_of",
        "_table",
        "now_s",
        "request",
        "rng",
        "snapshot",
    )

    def __init__(
        self,
        request: RoutingRequest,
        snapshot: FleetSnapshot,
        now_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.request = request
        self.snapshot = snapshot
        self.now_s = now_s
        self.rng = rng if rng is not None else random.Random(0)
        # Made on first use: with the predictor's table (the common case) neither is needed, and every
        # container allocated per decision counts toward the next garbage collection.
        self._costs: dict[BackendId, tuple[float, float] | BackendCostEstimate] | None = None
        self._length: OutputLengthEstimate | None = None
        predictions = request.predictions
        per_backend = predictions.per_backend if predictions is not None else None
        self._table = per_backend if type(per_backend) is CostTable else None
        self._pairs_of: Sequence[BackendView] | None = None
        self._pairs: list[tuple[float, float]] | None = None

    @property
    def features(self) -> RequestFeatures:
        return self.request.features

    def matched_tokens(self, backend_id: BackendId) -> int:
        """Prompt tokens the prefix index believes are cached on ``backend_id`` (0 if unknown)."""
        return self.request.prefix_matched_tokens.get(backend_id, 0)

    def output_length(self) -> OutputLengthEstimate:
        """The predictor's output-length quantiles, or the fallback prior."""
        if self._length is None:
            predictions = self.request.predictions
            self._length = (
                predictions.output_length if predictions is not None else prior_output_length(self.features)
            )
        return self._length

    def output_tokens(self, tail_weight: float) -> float:
        """Tail-aware length ``p50 + tail_weight·(p90 - p50)``: 0 = median, 1 = p90."""
        length = self.output_length()
        return max(1.0, length.p50_tokens + tail_weight * (length.p90_tokens - length.p50_tokens))

    def ttft_tpot(self, view: BackendView) -> tuple[float, float]:
        """Predicted ``(TTFT ms, TPOT ms)`` on ``view``'s backend: the predictor's, else the fallback's."""
        backend_id = view.backend_id
        table = self._table
        if table is not None:  # the predictor's table: plain floats, no estimate object built
            pair = table.ttft_tpot(backend_id)
            if pair is not None:
                return pair
        costs = self._costs
        if costs is None:
            costs = self._costs = {}
        cached = costs.get(backend_id)
        if cached is None:
            predictions = self.request.predictions
            cached = predictions.per_backend.get(backend_id) if predictions is not None else None
            if cached is None:
                wait_ms, prefill_ms, tpot_ms = estimate_terms(
                    self.request.features.prompt_tokens, self.matched_tokens(backend_id), view
                )
                cached = (wait_ms + prefill_ms, tpot_ms)
            costs[backend_id] = cached
        if isinstance(cached, tuple):
            return cached
        return cached.ttft_ms, cached.tpot_ms

    def ttft_tpot_all(self, views: Sequence[BackendView]) -> list[tuple[float, float]]:
        """``ttft_tpot`` of each of ``views``, in order; remembered for the last sequence asked about.

        Why: the SLO filter and the cost scorer read the same candidates' costs one after the other
        (the filter hands the very sequence on when it removes nothing), so the second read is free.
        The numbers are those of ``ttft_tpot``, which reads fixed predictions or memoised estimates."""
        known = self._pairs
        if views is self._pairs_of and known is not None and len(views) == len(known):
            return known
        table = self._table
        pairs = table.ttft_tpot_list(views) if table is not None else None
        if pairs is None:  # no table, or a backend it does not hold: view by view (same numbers)
            pairs = [self.ttft_tpot(view) for view in views]
        self._pairs_of, self._pairs = views, pairs
        return pairs

    def remember_pairs(self, views: Sequence[BackendView], pairs: list[tuple[float, float]]) -> None:
        """Hand over ``ttft_tpot`` of each of ``views`` (in order), as ``ttft_tpot_all`` remembers its own.

        Why: the SLO filter reads its candidates' costs and keeps some of them; the cost scorer then
        asks for exactly the kept ones, which the filter already holds (the same tuples of the same
        numbers), so the scorer's read is free instead of a second pass over the cost table."""
        self._pairs_of, self._pairs = views, pairs

    def cost(self, view: BackendView) -> BackendCostEstimate:
        """The full predicted cost on ``view``'s backend (built on demand; the hot path is ``ttft_tpot``)."""
        predictions = self.request.predictions
        estimate = predictions.per_backend.get(view.backend_id) if predictions is not None else None
        if estimate is not None:
            return estimate
        matched = self.matched_tokens(view.backend_id)
        wait_ms, prefill_ms, tpot_ms = estimate_terms(self.features.prompt_tokens, matched, view)
        ttft_ms = wait_ms + prefill_ms
        return BackendCostEstimate(
            backend_id=view.backend_id,
            queue_wait_ms=wait_ms,
            prefill_ms=prefill_ms,
            ttft_ms=ttft_ms,
            tpot_ms=tpot_ms,
            e2e_ms=ttft_ms + (self.output_length().p90_tokens - 1.0) * tpot_ms,
            cached_prompt_tokens=min(matched, self.features.prompt_tokens),
        )

    def was_estimated(self, backend_id: BackendId) -> bool:
        """Whether a plugin asked for this backend's cost during this decision."""
        return self._costs is not None and backend_id in self._costs
