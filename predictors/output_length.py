"""Output-length model: log-space location-scale quantiles from sparse linear weight tables.

Model (all in ``z = log(1 + output_tokens)``)::

    mu(x)    = b_mu + sum_j w_mu[j] * x_j                (ridge regression of z, all features)
    s(x)     = max(s_floor, b_s + sum_c w_s[c] * x_c)    (ridge regression of |z - mu_oof|,
                                                          categorical features c only)
    z_q(x)   = mu(x) + k_q * s(x)                      q in {0.5, 0.9}

``x`` is the sparse row of ``predictors.features.length_features``; ``k_q`` is
the empirical q-quantile of the standardised out-of-fold residual
``(z - mu_oof) / s``, so the quantiles are calibrated on data the location
model did not see. Quantiles are returned in tokens (``expm1``) and capped by
the request's ``max_tokens``.

Why linear tables and not a fitted estimator on the request path: scikit-learn's
``predict`` on one row spends tens of microseconds validating input. Here the
fitted coefficients are exported into plain dicts (text term -> w_mu,
categorical key -> (w_mu, w_s)) and a prediction is a few dozen dict lookups. ``tests/unit`` checks that
this path equals the fitted scikit-learn estimators to 1e-9.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.types import OutputLengthEstimate, RequestFeatures
from predictors.features import LengthFeatureRow, length_token_features
from predictors.slots import slot_setters

Weights = tuple[float, float]
_ZERO: Weights = (0.0, 0.0)
# exp(12.2) ~ 2e5 tokens: beyond any context window; keeps expm1 finite for absurd inputs.
MAX_LOG_TOKENS = 12.2
_new = object.__new__
_set_p50, _set_p90, _set_source = slot_setters(OutputLengthEstimate, ("p50_tokens", "p90_tokens", "source"))


@dataclass(frozen=True, slots=True)
class LogQuantiles:
    """Quantiles in log1p-token space plus the location-scale pair they came from."""

    mu: float
    scale: float
    z50: float
    z90: float


@dataclass(slots=True)
class OutputLengthModel:
    """The serving form of the fitted output-length model (plain dicts, no scikit-learn objects)."""

    intercept: Weights
    k50: float
    k90: float
    scale_floor: float
    unigrams: dict[str, float]
    bigrams: dict[str, dict[str, float]]
    categorical: dict[str, Weights]
    metadata: dict[str, Any] = field(default_factory=dict)
    text_table: dict[str, tuple[float, dict[str, float] | None]] = field(init=False, repr=False)
    known_models: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # One lookup per token serves its unigram weight and the bigrams it starts.
        table: dict[str, tuple[float, dict[str, float] | None]] = {
            token: (weight, None) for token, weight in self.unigrams.items()
        }
        for first, inner in self.bigrams.items():
            table[first] = (self.unigrams.get(first, 0.0), inner)
        self.text_table = table
        self.known_models = frozenset(key[2:] for key in self.categorical if key.startswith("m:"))

    def location_scale(self, row: LengthFeatureRow) -> tuple[float, float]:
        """``(mu, s)`` before the scale floor: the two linear scores of ``row``."""
        mu, s = self.intercept
        text = 0.0
        get = self.text_table.get
        for tokens in (row.head, row.tail):
            previous_bigrams = None
            for token in tokens:
                if previous_bigrams is not None:
                    w = previous_bigrams.get(token)
                    if w is not None:
                        text += w
                entry = get(token)
                if entry is None:
                    previous_bigrams = None
                else:
                    text += entry[0]
                    previous_bigrams = entry[1]
        mu += text * row.text_value
        cat = self.categorical
        for key in row.categorical:
            pair = cat.get(key, _ZERO)
            mu += pair[0]
            s += pair[1]
        return mu, s

    def location_scale_of(self, features: RequestFeatures) -> tuple[float, float]:
        """``(mu, s)`` of a request, ``mu`` clamped to ``[0, MAX_LOG_TOKENS]`` (s is floored by callers)."""
        mu, s = self.location_scale(length_token_features(features))
        return min(max(mu, 0.0), MAX_LOG_TOKENS), s

    def log_quantiles(self, features: RequestFeatures) -> LogQuantiles:
        mu, s = self.location_scale_of(features)
        scale = s if s > self.scale_floor else self.scale_floor
        return LogQuantiles(mu, scale, mu + self.k50 * scale, mu + self.k90 * scale)

    def predict(self, features: RequestFeatures) -> OutputLengthEstimate:
        q = self.log_quantiles(features)
        return quantiles_to_estimate(q.z50, q.z90, features.max_tokens, "model")

    def knows_model(self, model_key: str) -> bool:
        """Whether the training data contained this (normalised) model id."""
        return model_key in self.known_models


def quantiles_to_estimate(
    z50: float, z90: float, max_tokens: int | None, source: str
) -> OutputLengthEstimate:
    """Tokens from log-space quantiles: clamp, keep p90 >= p50, cap by ``max_tokens`` (>= 1)."""
    # ``min``/``max`` written as comparisons (the same result, NaN included: ``max(x, y)`` is
    # ``y if y > x else x``); this runs once per request and the builtin calls were a fifth of it.
    if z50 < 0.0:
        z50 = 0.0
    if z50 > MAX_LOG_TOKENS:
        z50 = MAX_LOG_TOKENS
    if z50 > z90:
        z90 = z50
    if z90 > MAX_LOG_TOKENS:
        z90 = MAX_LOG_TOKENS
    p50 = math.expm1(z50)
    p90 = math.expm1(z90)
    if max_tokens is not None and max_tokens > 0:
        cap = float(max_tokens)
        if cap < p50:
            p50 = cap
        if cap < p90:
            p90 = cap
    estimate = _new(OutputLengthEstimate)
    _set_p50(estimate, 1.0 if p50 < 1.0 else p50)
    _set_p90(estimate, 1.0 if p90 < 1.0 else p90)
    _set_source(estimate, source)
    return estimate


def model_tables_from_mapping(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Check and convert the ``model`` section of a saved file into constructor arguments.

    Raises ``ValueError`` naming the first bad entry; the caller turns it into
    a start-up error with the file name.
    """

    def pair(value: Any, where: str) -> Weights:
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int | float) and math.isfinite(v) for v in value)
        ):
            raise ValueError(f"{where}: expected [w_mu, w_scale] finite numbers")
        return (float(value[0]), float(value[1]))

    def table(name: str) -> dict[str, Any]:
        raw = payload.get(name)
        if not isinstance(raw, dict):
            raise ValueError(f"model.{name}: expected an object")
        return raw

    def pairs(name: str) -> dict[str, Weights]:
        return {str(k): pair(v, f"model.{name}[{k!r}]") for k, v in table(name).items()}

    def weights(name: str) -> dict[str, float]:
        out = {}
        for k, v in table(name).items():
            if not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"model.{name}[{k!r}]: expected a finite number")
            out[str(k)] = float(v)
        return out

    def number(name: str) -> float:
        value = payload.get(name)
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"model.{name}: expected a finite number")
        return float(value)

    bigrams: dict[str, dict[str, float]] = {}
    for key, weight in weights("bigrams").items():
        first, sep, second = key.partition(" ")
        if not sep:
            raise ValueError(f"model.bigrams[{key!r}]: expected two space-separated tokens")
        bigrams.setdefault(first, {})[second] = weight
    k50, k90, scale_floor = number("k50"), number("k90"), number("scale_floor")
    if scale_floor <= 0 or k90 < k50:
        raise ValueError("model: need scale_floor > 0 and k90 >= k50")
    return {
        "intercept": pair(payload.get("intercept"), "model.intercept"),
        "k50": k50,
        "k90": k90,
        "scale_floor": scale_floor,
        "unigrams": weights("unigrams"),
        "bigrams": bigrams,
        "categorical": pairs("categorical"),
    }


def model_tables_to_mapping(model: OutputLengthModel) -> dict[str, Any]:
    """The JSON-ready ``model`` section (inverse of ``model_tables_from_mapping``)."""
    return {
        "intercept": list(model.intercept),
        "k50": model.k50,
        "k90": model.k90,
        "scale_floor": model.scale_floor,
        "unigrams": dict(sorted(model.unigrams.items())),
        "bigrams": {
            f"{a} {b}": w for a, inner in sorted(model.bigrams.items()) for b, w in sorted(inner.items())
        },
        "categorical": {k: list(v) for k, v in sorted(model.categorical.items())},
    }
