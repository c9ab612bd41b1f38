"""``Predictor``: the one object the DecisionEngine holds for output-length and per-backend cost predictions.

Request path (``predict``): output-length quantiles from the bundled (or
configured) model, corrected online per ``(route, model, tenant)``; then, for
every selectable backend serving the request's model, TTFT/TPOT/E2E from the
per-backend latency model. Pure arithmetic on in-memory tables: no I/O, no
training, no clock reads.

Learning path (``observe``): called once per finished request with its
``Outcome``, the request's ``RequestFeatures`` and the ``BackendView`` of the
backend it ran on as seen at dispatch. It updates the online length
correction and that backend's latency coefficients (a few tens of
microseconds; cheap enough for the event loop). Refitting the offline
length model is never done here: run ``sluice predict train`` and restart, or
build a new model in an executor and swap it with ``replace_length_model``.

Construction loads and validates the model file, so a corrupt or mismatched
file fails at start-up with ``ModelFileError``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping

from core.config import PredictorsConfig
from core.types import (
    BackendView,
    Endpoint,
    FleetSnapshot,
    Outcome,
    OutputLengthEstimate,
    Predictions,
    RequestFeatures,
    RoutingRequest,
)
from predictors.features import (
    HEAD_CHARS,
    TAIL_CHARS,
    LengthFeatureRow,
    length_features,
    length_token_features,
    normalise_model,
)
from predictors.latency import LatencyModel, LatencyPriors
from predictors.online import OnlineLengthCorrector, OnlineParams
from predictors.online_features import PAIRS_PARAMS, FeatureWeightParams, OnlineFeatureWeights
from predictors.output_length import MAX_LOG_TOKENS, OutputLengthModel, quantiles_to_estimate
from predictors.persistence import load_default_model, load_model
from predictors.slots import slot_setters

# In-flight requests whose base prediction is kept for observe (beyond it, observe recomputes).
MAX_REMEMBERED = 32_768
# Feature rows kept for the online weights' step at the outcome (~1 KB each, their token keys: ~4 MB at
# most). Only the newest requests keep theirs; an older outcome recomputes its row (same row:
# length_features is pure).
MAX_REMEMBERED_ROWS = 4_096
# (features, output tokens, the request's length-feature row if kept, the p50 served for it if kept).
LengthListener = Callable[[RequestFeatures, int, LengthFeatureRow | None, float | None], None]
NO_OUTPUT = OutputLengthEstimate(p50_tokens=0.0, p90_tokens=0.0, source="no-output")
_new = object.__new__
_set_output_length, _set_per_backend = slot_setters(Predictions, ("output_length", "per_backend"))


def observed_tpot_ms(outcome: Outcome) -> float | None:
    """``(E2E - TTFT) / (output tokens - 1)``, the vLLM/GenAI-Perf definition; None below 2 tokens."""
    if outcome.ttft_ms is None or outcome.output_tokens < 2:
        return None
    return max(outcome.e2e_ms - outcome.ttft_ms, 0.0) / (outcome.output_tokens - 1)


def _fingerprint(features: RequestFeatures) -> int:
    """Identifies a request's length features well enough to reuse its prediction (ids may repeat).

    Reads the text's two ends and its length, not the whole text (at most 2,000 characters, as
    ``core.features`` clips it): hashing a fresh 2,000-character text costs ~1 us, a third of what
    the two slices' hashes cost. Two requests under one id that differ only in the middle of a
    long text share a fingerprint; the outcome then learns from the location predicted for the
    earlier one, which is what was served.
    """
    text = features.last_user_text
    return hash(
        (
            text[:HEAD_CHARS],
            text[-TAIL_CHARS:],
            len(text),
            features.prompt_chars,
            features.n_messages,
            features.model,
        )
    )


def _learnable(outcome: Outcome) -> bool:
    return outcome.status_code == 200 and not outcome.cancelled and outcome.error_code is None


class Predictor:
    """Output-length + per-backend latency predictions for the decision engine."""

    __slots__ = (
        "_feature_weights",
        "_latency",
        "_length",
        "_length_listener",
        "_online",
        "_predicted",
        "_rows",
    )

    def __init__(
        self,
        length_model: OutputLengthModel,
        *,
        online: OnlineLengthCorrector | None = None,
        latency: LatencyModel | None = None,
        feature_weights: OnlineFeatureWeights | None = None,
    ) -> None:
        """``feature_weights`` (ranking refinement) is only used together with ``online`` (per-key means)."""
        self._length = length_model
        self._online = online
        self._feature_weights = feature_weights if online is not None else None
        if self._feature_weights is not None:
            self._feature_weights.bind(length_model)
        # request id -> (fingerprint of the features, mu, scale, p50 served) from predict, consumed by
        # observe.
        self._predicted: OrderedDict[str, tuple[int, float, float, float]] = OrderedDict()
        self._rows: OrderedDict[str, LengthFeatureRow] = OrderedDict()
        self._latency = latency or LatencyModel()
        self._length_listener: LengthListener | None = None

    @classmethod
    def from_config(cls, config: PredictorsConfig) -> Predictor:
        """Load the configured model (or the bundled default); raises ``ModelFileError`` if it is bad."""
        path = config.output_length_model
        model = load_model(path) if path is not None else load_default_model()
        online = OnlineLengthCorrector(OnlineParams()) if config.online_refinement else None
        weights = (
            OnlineFeatureWeights(PAIRS_PARAMS if config.online_feature_pairs else FeatureWeightParams())
            if config.online_feature_weights
            else None
        )
        return cls(model, online=online, latency=LatencyModel(LatencyPriors()), feature_weights=weights)

    @property
    def length_model(self) -> OutputLengthModel:
        return self._length

    @property
    def online(self) -> OnlineLengthCorrector | None:
        return self._online

    @property
    def feature_weights(self) -> OnlineFeatureWeights | None:
        return self._feature_weights

    @property
    def latency(self) -> LatencyModel:
        return self._latency

    def replace_length_model(
        self,
        model: OutputLengthModel,
        *,
        reset_online: bool = False,
        feature_weights: OnlineFeatureWeights | None = None,
    ) -> None:
        """Swap in a model fitted elsewhere (e.g. in an executor).

        Online corrections are kept unless ``reset_online`` (a refit that learned from the same
        outcomes: keeping them would count those outcomes twice, ``predictors.refit``): then the
        feature weights are reset and the per-key means rebased (``OnlineLengthCorrector.rebase``).
        ``feature_weights`` (with ``reset_online``): a fresh table already bound to ``model``, used
        instead of resetting and binding the current one here (the refit builds it in slices so the
        loop is not held for the whole bind).
        """
        self._length = model
        self._predicted.clear()
        self._rows.clear()
        if reset_online and self._online is not None:
            self._online.rebase()
        if self._feature_weights is not None:
            if reset_online and feature_weights is not None:
                self._feature_weights = feature_weights
                return
            if reset_online:
                self._feature_weights.reset()
            self._feature_weights.bind(model)

    def set_length_listener(self, listener: LengthListener | None) -> None:
        """Called with (features, output tokens, row, served p50) for each learnable outcome, before
        it is learned.

        For ``predictors.refit`` (its reservoir). ``row`` and ``served p50`` are what ``predict``
        computed for the request (its feature row and the p50 it returned), handed over so the
        listener need not recompute them; either is None when the predictor no longer holds it
        (evicted, a model swap since, features that differ): the listener may then call
        ``predict_length`` (what the predictor would serve now) and ``length_features``.
        """
        self._length_listener = listener

    def predict_length(self, features: RequestFeatures) -> OutputLengthEstimate:
        if features.endpoint is Endpoint.EMBEDDINGS:
            return NO_OUTPUT
        length = self._length
        weights = self._feature_weights
        if weights is not None:
            # One pass over the shared table gives the offline scores and the online one (by the
            # row's token keys: no token strings made).
            row = length_features(features)
            mu, s, ranking = weights.location_scale_score(row)
        else:
            row = length_token_features(features)  # the offline model's dicts: token strings, no keys
            mu, s = length.location_scale(row)
            ranking = 0.0
        mu = 0.0 if mu < 0.0 else MAX_LOG_TOKENS if mu > MAX_LOG_TOKENS else mu  # min(max(mu, 0), MAX)
        scale = s if s > length.scale_floor else length.scale_floor
        model_key = normalise_model(features.model)
        source = "model" if length.knows_model(model_key) else "prior"
        online = self._online
        if online is None:
            return quantiles_to_estimate(
                mu + length.k50 * scale, mu + length.k90 * scale, features.max_tokens, source
            )
        if weights is not None:
            rows = self._rows
            rows[features.request_id] = row
            if len(rows) > MAX_REMEMBERED_ROWS:
                rows.popitem(last=False)
        base_mu = mu
        d90 = 0.0
        correction = online.correction(features.route, model_key, features.tenant)
        if correction.n_model or correction.n_key:
            mu += correction.location
            d90 = correction.p90_offset
            source += "+online"
        mu += correction.ranking_gain * ranking
        estimate = quantiles_to_estimate(
            mu + length.k50 * scale, mu + length.k90 * scale + d90, features.max_tokens, source
        )
        self._remember(features, base_mu, scale, estimate.p50_tokens)
        return estimate

    def _remember(self, features: RequestFeatures, mu: float, scale: float, p50_tokens: float) -> None:
        """Keep the base location/scale until the outcome arrives, so ``observe`` need not recompute it,
        and the p50 served (the length listener's reference, ``set_length_listener``)."""
        predicted = self._predicted
        predicted[features.request_id] = (_fingerprint(features), mu, scale, p50_tokens)
        if len(predicted) > MAX_REMEMBERED:
            predicted.popitem(last=False)

    def predict(self, request: RoutingRequest, snapshot: FleetSnapshot) -> Predictions:
        return self.predict_for(request.features, request.prefix_matched_tokens, snapshot)

    def predict_for(
        self, features: RequestFeatures, prefix_matched_tokens: Mapping[str, int], snapshot: FleetSnapshot
    ) -> Predictions:
        """``predict`` on the two parts of the request it reads (the engine calls this directly)."""
        length = self.predict_length(features)
        per_backend = self._latency.cost_table(
            snapshot.backends,
            features.model,
            features.prompt_tokens,
            prefix_matched_tokens,
            length.p50_tokens,
        )
        predictions = _new(Predictions)
        _set_output_length(predictions, length)
        _set_per_backend(predictions, per_backend)
        return predictions

    def observe(
        self,
        outcome: Outcome,
        features: RequestFeatures,
        view_at_dispatch: BackendView | None,
        prefix_matched_tokens: int = 0,
        view_at_end: BackendView | None = None,
    ) -> None:
        """Learn from a finished request; failed, cancelled and errored requests teach nothing.

        ``view_at_end``: the backend's latest view before the outcome, if the caller has one (the
        TPOT model learns against the load over the request's decode, ``LatencyModel.observe``).
        """
        if not _learnable(outcome):
            return
        self.observe_length(features, outcome.output_tokens)
        if view_at_dispatch is not None and view_at_dispatch.backend_id == outcome.backend_id:
            cached = outcome.cached_prompt_tokens
            self._latency.observe(
                view_at_dispatch,
                features,
                cached if cached is not None else prefix_matched_tokens,
                outcome.ttft_at_backend_ms,  # the view at dispatch explains the backend's TTFT only
                observed_tpot_ms(outcome),
                view_at_end,
            )

    def observe_length(self, features: RequestFeatures, output_tokens: int) -> None:
        """Teach the online correction one true output length (no-op when refinement is off)."""
        if self._online is None or features.endpoint is Endpoint.EMBEDDINGS:
            return
        request_id = features.request_id
        predicted = self._predicted
        remembered = predicted.pop(request_id, None)
        kept_row = self._rows.pop(request_id, None)
        fresh = remembered is not None and remembered[0] == _fingerprint(features)
        listener = self._length_listener
        if listener is not None:
            if fresh and remembered is not None:
                listener(features, output_tokens, kept_row, remembered[3])
            else:
                listener(features, output_tokens, None, None)
                # The listener may have predicted the request again (what would be served now):
                # learn from that prediction, as for any request predicted just before its outcome.
                remembered = predicted.pop(request_id, None)
                kept_row = self._rows.pop(request_id, None)
                fresh = remembered is not None
        length = self._length
        weights = self._feature_weights
        row: LengthFeatureRow | None = None
        if fresh and remembered is not None:
            _, mu, scale, _ = remembered
            if weights is not None:
                row = kept_row if kept_row is not None else length_features(features)
        else:
            row = length_features(features) if weights is not None else None
            mu, s = length.location_scale(row) if row is not None else length.location_scale_of(features)
            mu = 0.0 if mu < 0.0 else MAX_LOG_TOKENS if mu > MAX_LOG_TOKENS else mu
            scale = s if s > length.scale_floor else length.scale_floor
        max_tokens = features.max_tokens
        censored = max_tokens is not None and output_tokens >= max_tokens
        z_observed = math.log1p(output_tokens if output_tokens > 0 else 0)
        route, model_key, tenant = features.route, normalise_model(features.model), features.tenant
        ranking = 0.0
        if weights is not None and row is not None:
            # The weights learn what the per-key means leave (their state before this outcome), fully:
            # the per-key gain only scales how much of them a key applies. Their score is taken now,
            # not at predict: the step needs the current error.
            left = z_observed - mu - self._online.correction(route, model_key, tenant).location
            ranking = weights.learn(row, left, only_raise=censored)
        self._online.observe(
            route,
            model_key,
            tenant,
            z_observed=z_observed,
            mu_base=mu,
            z90_base_offset=length.k90 * scale,
            censored=censored,
            ranking_score=ranking,
        )
