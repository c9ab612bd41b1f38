"""What every plugin of one routing decision sees: the request, the snapshot, the time, and costs.

Per-backend cost estimates are resolved once per decision and shared by the
plugins that need them (an SLO filter and a cost scorer read the same numbers):
the predictor's ``BackendCostEstimate`` when the request carries one for that
backend, else the fallback estimator (``policies.estimate``). The context is
created by the pipeline for one decision and discarded; it is the only place a
decision caches anything.
"""

from __future__ import annotations

from core.types import (
    BackendCostEstimate,
    BackendId,
    BackendView,
    FleetSnapshot,
    OutputLengthEstimate,
    RequestFeatures,
    RoutingRequest,
)
from policies.estimate import estimate_cost, prior_output_length


class RouteContext:
    __slots__ = ("_costs", "_length", "now_s", "request", "snapshot")

    def __init__(self, request: RoutingRequest, snapshot: FleetSnapshot, now_s: float) -> None:
        self.request = request
        self.snapshot = snapshot
        self.now_s = now_s
        self._costs: dict[BackendId, BackendCostEstimate] = {}
        self._length: OutputLengthEstimate | None = None

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

    def cost(self, view: BackendView) -> BackendCostEstimate:
        """Predicted cost on ``view``'s backend: the predictor's when supplied, else the fallback's."""
        backend_id = view.backend_id
        cached = self._costs.get(backend_id)
        if cached is not None:
            return cached
        predictions = self.request.predictions
        estimate = predictions.per_backend.get(backend_id) if predictions is not None else None
        if estimate is None:
            estimate = estimate_cost(
                self.features, self.matched_tokens(backend_id), view, self.output_length().p90_tokens
            )
        self._costs[backend_id] = estimate
        return estimate

    def known_cost(self, backend_id: BackendId) -> BackendCostEstimate | None:
        """A cost already computed in this decision (for the explanation), else None."""
        return self._costs.get(backend_id)
