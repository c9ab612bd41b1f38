"""Online feature weights: a bounded sparse linear correction that learns *ranking* from observed lengths.

``predictors.online`` shifts every request of a key by the same amount, so it
restores calibration on a new workload but cannot reorder two requests of one
(route, model, tenant). This module learns, from the outcomes the proxy sees,
a sparse linear function of the same features the offline ridge uses
(``predictors.features.length_features``: token unigrams and adjacent pairs
of the two prompt slices, scaled by ``text_value``, and the categorical keys):

    f(x) = sum_j w_j x_j              (in z = log(1 + tokens))
    target of f: z_obs - mu_base(x) - c_keys      (what the key means left over)

so ``mu = mu_base + c_keys + f(x)``. Fitting ``f`` to what the per-key means
leave makes the two parts separate: the keys carry the level of a tenant or
model, ``f`` the differences between requests within it.

Learning rule: one AdaGrad step of squared loss per observation on the
features present in the request, ``w_j += rate * e x_j / sqrt(g0 + G_j)``
with ``G_j += (e x_j)^2`` and ``e`` the current error clipped to
``+-error_clip``; then the touched weights decay by ``(1 - l2)`` (L2 toward 0:
weights that stop being confirmed fade). ``g0`` damps the first steps of a
new feature, so a term seen once moves its weight only a little. The output is
clipped to ``+-max_correction``.

Bounded memory: at most ``max_weights`` weights (unigrams + pairs +
categorical keys). When the table is full, features not yet in it are
ignored (known ones keep learning); the first ``max_weights`` distinct
features of the stream are the ones kept, which are mostly the frequent ones.
Deterministic (no string hashing, whose seed varies per process).

Cost and where it runs: prediction is one dict lookup per token plus one per
pair and per categorical key (a few microseconds); an update touches the same
<= ~110 weights once, a few microseconds more than the prediction. That is
"refinement" in the issue's sense (an incremental step whose cost is bounded
by the request's own feature count, like the per-key means), not "training"
(a refit over stored samples, which stays in ``sluice predict train`` or an
executor). It runs on the event loop next to the rest of ``observe``: in
CPython a worker thread would take the GIL for the same pure-Python work, so
it would not give the loop that CPU back; ``bench/predictor_speed.py``
reports the measured cost of ``observe`` with and without this part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from predictors.features import LengthFeatureRow

# Mutable lists, not objects: index access is the cheapest read in CPython.
# A text term: [weight, sum of squared gradients, pairs it starts (second token -> [w, G]) or None];
# a pair or categorical key: [weight, sum of squared gradients].
_WG = list[float]


@dataclass(frozen=True, slots=True)
class FeatureWeightParams:
    """Hyper-parameters (chosen on a tuning half of the held-out groups: docs/predictors.md)."""

    rate: float = 0.1
    g0: float = 0.1
    l2: float = 1e-4
    error_clip: float = 3.0
    max_correction: float = 2.0
    max_weights: int = 100_000
    use_pairs: bool = True

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.g0 <= 0 or not 0 <= self.l2 < 1:
            raise ValueError("need rate > 0, g0 > 0 and 0 <= l2 < 1")
        if self.error_clip <= 0 or self.max_correction <= 0 or self.max_weights < 1:
            raise ValueError("need error_clip > 0, max_correction > 0 and max_weights >= 1")


class OnlineFeatureWeights:
    """Sparse linear residual model on the length features, learnt one observation at a time."""

    __slots__ = ("_categorical", "_n_weights", "_params", "_text", "n_updates")

    def __init__(self, params: FeatureWeightParams | None = None) -> None:
        self._params = params or FeatureWeightParams()
        self._text: dict[str, list[Any]] = {}
        self._categorical: dict[str, _WG] = {}
        self._n_weights = 0
        self.n_updates = 0

    @property
    def params(self) -> FeatureWeightParams:
        return self._params

    def __len__(self) -> int:
        """Number of weights held (bounded by ``max_weights``)."""
        return self._n_weights

    def score(self, row: LengthFeatureRow) -> float:
        """``f(x)``, clipped to ``+-max_correction`` (read-only; runs on the request path)."""
        if not self.n_updates:
            return 0.0
        text = 0.0
        get = self._text.get
        for tokens in (row.head, row.tail):
            pairs: dict[str, _WG] | None = None
            for token in tokens:
                if pairs is not None:
                    pair = pairs.get(token)
                    if pair is not None:
                        text += pair[0]
                entry = get(token)
                if entry is None:
                    pairs = None
                else:
                    text += entry[0]
                    pairs = entry[2]
        total = text * row.text_value
        cat = self._categorical
        for key in row.categorical:
            wg = cat.get(key)
            if wg is not None:
                total += wg[0]
        limit = self._params.max_correction
        return limit if total > limit else -limit if total < -limit else total

    def update(self, row: LengthFeatureRow, error: float) -> None:
        """One step toward ``error`` = target - current ``f(x)`` (target: what the base + keys missed)."""
        p = self._params
        clip = p.error_clip
        e = clip if error > clip else -clip if error < -clip else error
        if e == 0.0:
            return
        self.n_updates += 1
        rate, g0, keep, cap = p.rate, p.g0, 1.0 - p.l2, p.max_weights
        x = row.text_value
        gx = e * x
        text = self._text
        for tokens in (row.head, row.tail):
            previous: list[Any] | None = None
            for token in tokens:
                entry = text.get(token)
                if entry is None and self._n_weights < cap:
                    entry = text[token] = [0.0, 0.0, None]
                    self._n_weights += 1
                if p.use_pairs and previous is not None:
                    pairs = previous[2]
                    pair = pairs.get(token) if pairs is not None else None
                    if pair is None and self._n_weights < cap:
                        if pairs is None:
                            pairs = previous[2] = {}
                        pair = pairs[token] = [0.0, 0.0]
                        self._n_weights += 1
                    if pair is not None:
                        _step(pair, gx, rate, g0, keep)
                if entry is not None:
                    _step(entry, gx, rate, g0, keep)
                previous = entry
        cat = self._categorical
        for key in row.categorical:
            wg = cat.get(key)
            if wg is None:
                if self._n_weights >= cap:
                    continue
                wg = cat[key] = [0.0, 0.0]
                self._n_weights += 1
            _step(wg, e, rate, g0, keep)


def _step(wg: list[Any], g: float, rate: float, g0: float, keep: float) -> None:
    """AdaGrad step on one weight ``wg = [w, G, ...]`` for gradient ``-g`` (``g = e x_j``), then decay."""
    total = wg[1] + g * g
    wg[1] = total
    wg[0] = keep * (wg[0] + rate * g / math.sqrt(g0 + total))
