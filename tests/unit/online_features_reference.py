"""The online feature table as it was before the flat hash layout (main 182b70a), kept as the reference.

``predictors.online_features`` replaced its dict-of-objects table (one ``_Term`` per token, a dict of
pair ``_Term`` under each) with two open-addressing tables of 64-bit key hashes and contiguous float
arrays, for fewer dependent memory loads per token on the request path. It must score and learn bit
for bit like this one; ``tests/unit/test_online_table_exact.py`` drives both with the same random
streams. Not used by Sluice itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from predictors.features import LengthFeatureRow
from predictors.online_features import FeatureWeightParams
from predictors.output_length import OutputLengthModel


class _Term:
    """One text term (a token, or an adjacent pair under its first token): its two weights and ``G``.

    ``offline``: the bound offline model's ridge weight; ``w``: the online weight; ``g``: the AdaGrad
    sum of squared gradients; ``pairs``: second token -> ``_Term`` (whose own ``pairs`` stays None).
    A slots object, so the request path reads one object per term (a list was the list, its item
    array, then the floats): with a few thousand distinct prompts the table does not stay in the
    CPU cache and the request path's time is mostly these reads (docs/predictors.md, speed).

    ``next`` (pairs only): the term of the pair's second token, linked the first time both are
    found. Most adjacent tokens of a prompt are a known pair (~13 of ~24 per prompt in the speed
    bench), so the small pair dict of the previous token, searched anyway, hands over the token's
    own term and the large table is not searched again. Terms are never removed or replaced
    (``bind`` keeps them), so a link stays valid.
    """

    __slots__ = ("g", "next", "offline", "pairs", "w")

    def __init__(self) -> None:
        self.offline = 0.0
        self.w = 0.0
        self.g = 0.0
        self.next: _Term | None = None
        self.pairs: dict[str, _Term] | None = None


class ReferenceFeatureWeights:
    """Sparse linear residual model on the length features, learnt one observation at a time.

    Table layout:

    * text term: ``_Term`` (``offline``, ``w``, ``g``, ``pairs``, ``next``);
    * categorical key: ``[w_mu_offline, w_scale_offline, w, G]`` (a list: index access is the
      cheapest read in CPython; a dozen per request, not worth a second layout).

    ``G`` is the AdaGrad sum of squared gradients; offline weights are 0.0 for terms the offline
    model does not have (adding 0.0 leaves its sums bit-identical).
    """

    __slots__ = ("_categorical", "_intercept", "_n_weights", "_params", "_text", "n_updates")

    def __init__(self, params: FeatureWeightParams | None = None) -> None:
        self._params = params or FeatureWeightParams()
        self._text: dict[str, _Term] = {}
        self._categorical: dict[str, list[float]] = {}
        self._intercept: tuple[float, float] = (0.0, 0.0)
        self._n_weights = 0
        self.n_updates = 0

    @property
    def params(self) -> FeatureWeightParams:
        return self._params

    def __len__(self) -> int:
        """Number of online weights created (bounded by ``max_weights``; the offline ones not counted)."""
        return self._n_weights

    def reset(self) -> None:
        """Forget every learned weight and term (``bind`` the serving model again afterwards).

        Used when a background refit (``predictors.refit``) is swapped in: the refit has learned
        from the same outcomes, so weights learned against the old model would count them twice.
        Dropping the table, not zeroing it, also drops terms only the old model had (bounded memory
        across refits).
        """
        self._text = {}
        self._categorical = {}
        self._intercept = (0.0, 0.0)
        self._n_weights = 0
        self.n_updates = 0

    def bind(self, model: OutputLengthModel) -> None:
        """Load ``model``'s weights into the shared table (at start and on model replacement).

        Online weights learned so far are kept; terms the new model lacks get offline weight 0.
        """
        for _ in self.bind_in_steps(model, 0):
            pass

    def bind_in_steps(self, model: OutputLengthModel, step_terms: int) -> Iterator[None]:
        """``bind``, pausing (one ``yield``) after every ``step_terms`` text terms (0: never).

        Binding a refitted model into a fresh table creates tens of thousands of terms (~40-80 ms
        in one go); the refit's swap (``router.length_refit``) builds the new table a slice per
        loop callback and only then swaps it in. The same operations in the same order as one call.
        """
        self._intercept = model.intercept
        for old in self._text.values():
            old.offline = 0.0
            if old.pairs is not None:
                for old_pair in old.pairs.values():
                    old_pair.offline = 0.0
        text = self._text
        done = 0
        for token, (weight, base_pairs) in model.text_table.items():
            entry = text.get(token)
            if entry is None:
                entry = text[token] = _Term()
            entry.offline = weight
            if base_pairs:
                pairs = entry.pairs
                if pairs is None:
                    pairs = entry.pairs = {}
                for second, pair_weight in base_pairs.items():
                    pair = pairs.get(second)
                    if pair is None:
                        pair = pairs[second] = _Term()
                    pair.offline = pair_weight
            done += 1
            if done == step_terms:
                done = 0
                yield
        cat = self._categorical
        for key, (w_mu, w_s) in model.categorical.items():
            cat_entry = cat.get(key)
            if cat_entry is None:
                cat_entry = cat[key] = [0.0, 0.0, 0.0, 0.0]
            cat_entry[0] = w_mu
            cat_entry[1] = w_s

    def location_scale_score(self, row: LengthFeatureRow) -> tuple[float, float, float]:
        """``(mu, s, f)``: the bound offline model's two linear scores (unclamped) and the online score.

        ``f`` is clipped to ``+-max_correction``. Runs on the request path: one pass, one lookup
        per token (in its predecessor's pairs if they know it, see ``_Term.next``, else in the
        table), per pair and per categorical key.
        """
        mu, s = self._intercept
        text = 0.0
        online = 0.0
        table = self._text  # a dict read as one (a bound .get is a generic call from compiled code)
        for tokens in (row.head, row.tail):
            pairs = None
            for token in tokens:
                pair: _Term | None = pairs.get(token) if pairs is not None else None
                if pair is None:
                    entry = table.get(token)
                else:
                    text += pair.offline
                    online += pair.w
                    entry = pair.next
                    if entry is None:
                        entry = pair.next = table.get(token)
                if entry is None:
                    pairs = None
                else:
                    text += entry.offline
                    online += entry.w
                    pairs = entry.pairs
        value = row.text_value
        mu += text * value
        online *= value
        cat = self._categorical
        for key in row.categorical:
            cat_entry = cat.get(key)
            if cat_entry is not None:
                mu += cat_entry[0]
                s += cat_entry[1]
                online += cat_entry[2]
        limit = self._params.max_correction
        return mu, s, limit if online > limit else -limit if online < -limit else online

    def score(self, row: LengthFeatureRow) -> float:
        """``f(x)`` alone (clipped)."""
        return self.location_scale_score(row)[2]

    def update(self, row: LengthFeatureRow, error: float) -> None:
        """One step toward ``error`` = target - current ``f(x)`` (``learn`` with the target implied)."""
        self.learn(row, error + self.score(row))

    def learn(self, row: LengthFeatureRow, target: float, *, only_raise: bool = False) -> float:
        """Score ``row`` and take one step of ``f(x)`` toward ``target``; returns ``f(x)`` before the step.

        ``target`` is what the offline model and the per-key means left for this request. With
        ``only_raise`` (an answer cut by ``max_tokens``) the step is taken only if it raises ``f``.
        One pass finds (or creates, below the cap) the request's weights and sums ``f``; the
        second steps the same weights without looking them up again.
        """
        p = self._params
        cap, use_pairs = p.max_weights, p.use_pairs
        text = self._text
        words: list[_Term] = []
        pairs_seen: list[_Term] = []
        online = 0.0
        for tokens in (row.head, row.tail):
            previous: _Term | None = None
            for token in tokens:
                pair = entry = None
                if previous is not None and previous.pairs is not None:
                    pair = previous.pairs.get(token)
                    if pair is not None:
                        entry = pair.next
                if entry is None:
                    entry = text.get(token)
                    if entry is None and self._n_weights < cap:
                        entry = text[token] = _Term()
                        self._n_weights += 1
                    if pair is not None:
                        pair.next = entry
                if previous is not None:
                    if pair is None and use_pairs and self._n_weights < cap:
                        pairs = previous.pairs
                        if pairs is None:
                            pairs = previous.pairs = {}
                        pair = pairs[token] = _Term()
                        pair.next = entry
                        self._n_weights += 1
                    if pair is not None:
                        online += pair.w
                        pairs_seen.append(pair)
                if entry is not None:
                    online += entry.w
                    words.append(entry)
                previous = entry
        value = row.text_value
        online *= value
        cat = self._categorical
        cats: list[list[float]] = []
        for key in row.categorical:
            cat_entry = cat.get(key)
            if cat_entry is None:
                if self._n_weights >= cap:
                    continue
                cat_entry = cat[key] = [0.0, 0.0, 0.0, 0.0]
                self._n_weights += 1
            online += cat_entry[2]
            cats.append(cat_entry)
        limit = p.max_correction
        f = limit if online > limit else -limit if online < -limit else online
        error = target - f
        if only_raise and error <= 0.0:
            return f
        clip = p.error_clip
        e = clip if error > clip else -clip if error < -clip else error
        if e == 0.0:
            return f
        self.n_updates += 1
        g0, keep, sqrt = p.g0, 1.0 - p.l2, math.sqrt
        g = e * value
        gg = g * g
        rate_g = p.rate * g  # the step's numerator, as ``rate * g / sqrt(...)`` evaluates it
        for term in words if not (use_pairs or p.learn_offline_pairs) else words + pairs_seen:
            total = term.g + gg
            term.g = total
            term.w = keep * (term.w + rate_g / sqrt(g0 + total))
        ee = e * e
        rate_e = p.rate * e
        for cg in cats:
            total = cg[3] + ee
            cg[3] = total
            cg[2] = keep * (cg[2] + rate_e / sqrt(g0 + total))
        return f
