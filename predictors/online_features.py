"""Online feature weights: a bounded sparse linear correction that learns *ranking* from observed lengths.

``predictors.online`` shifts every request of a key by the same amount, so it
restores calibration on a new workload but cannot reorder two requests of one
(route, model, tenant). This module learns, from the outcomes the proxy sees,
a sparse linear function of the same features the offline ridge uses
(``predictors.features.length_features``: token unigrams of the two prompt
slices, scaled by ``text_value``, the categorical keys, and the adjacent
token pairs the offline model already has (``learn_offline_pairs``: their
entries are read on the request path anyway, so learning them costs only
``observe`` time); *new* adjacent pairs too with ``use_pairs``, which ranks
better but costs request-path time, see docs/predictors.md):

    f(x) = sum_j w_j x_j              (in z = log(1 + tokens))
    target of f: z_obs - mu_base(x) - c_keys      (what the key means left over)

so ``mu = mu_base + c_keys + gain_key * f(x)`` (``gain_key``: ``predictors.online``).
Fitting ``f`` to what the per-key means leave makes the two parts separate:
the keys carry the level of a tenant or model, ``f`` the differences between
requests within it.

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
Deterministic: nothing depends on the order of string hashes (their seed varies per process).

Cost and where it runs: the online weights live in one table with the
offline model's own text and categorical weights (``bind`` copies those in),
so a request's offline location, scale and online score come from the same
lookups (``location_scale_score``): the online part adds a few float
additions per token, not a second pass. The text part of that table is two
flat open-addressing tables (``_HashTable``: tokens, adjacent pairs) of 64-bit
key hashes with the weights in one contiguous float array, so a token's
lookup reads two cache lines (its key, its weights) where a dict of objects
chased five or more dependent pointers (docs/decision_cost_history.md, branch online_table).
``tests/unit/test_online_features.py`` checks the offline part equals
``OutputLengthModel.location_scale`` exactly.
An update touches the same <= ~110 weights once. That is "refinement" in
the issue's sense (an incremental step whose cost is bounded by the request's
own feature count, like the per-key means), not "training" (a refit over
stored samples, which stays in ``sluice predict train`` or an executor). It
runs on the event loop next to the rest of ``observe``: in CPython a worker
thread would take the GIL for the same pure-Python work, so it would not give
the loop that CPU back; ``bench/predictor_speed.py`` reports the cost of
``predict_length`` and ``observe`` with and without this part.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from librt.vecs import append, vec
from mypy_extensions import i64

from predictors.features import LengthFeatureRow, token_key
from predictors.output_length import OutputLengthModel


@dataclass(frozen=True, slots=True)
class FeatureWeightParams:
    """Hyper-parameters (chosen on a tuning half of the held-out groups: docs/predictors.md)."""

    rate: float = 0.2
    g0: float = 0.1
    l2: float = 1e-4
    error_clip: float = 3.0
    max_correction: float = 2.0
    max_weights: int = 100_000
    use_pairs: bool = False
    # Step the online weights of adjacent pairs the offline model has (never creates one). Those
    # entries are already read by ``location_scale_score``, so the request path does not change;
    # cross-dataset tau +0.011 / +0.019 / +0.003 on sharegpt / alpaca_eval / hh_rlhf (docs/predictors.md).
    learn_offline_pairs: bool = True

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.g0 <= 0 or not 0 <= self.l2 < 1:
            raise ValueError("need rate > 0, g0 > 0 and 0 <= l2 < 1")
        if self.error_clip <= 0 or self.max_correction <= 0 or self.max_weights < 1:
            raise ValueError("need error_clip > 0, max_correction > 0 and max_weights >= 1")


# With adjacent pairs (``predictors.online_feature_pairs``): the rate chosen for them on the tuning half.
PAIRS_PARAMS = FeatureWeightParams(rate=0.1, use_pairs=True)


# Slot layout of ``_HashTable.data``: three floats per slot, adjacent so that one token's weights are one
# cache line (a request reads ``offline`` and ``w``; ``observe`` also ``g``).
_STRIDE: Final = 3
_OFFLINE: Final = 0
_W: Final = 1
_G: Final = 2
_EMPTY: Final = 0  # the key of an empty slot (never a token's: ``features.token_key``)
_MIN_SLOTS: Final = 64


def _pair_key(first: i64, second: i64) -> i64:
    """The key of the adjacent pair ``(first, second)`` (token keys), in the pair table: never 0.

    ``second``'s bits rotated by 7 (a bijection of 64-bit values, written so that no intermediate
    leaves the signed 64-bit range in either build), XORed with ``first``: for one first token,
    distinct second tokens never share a key; otherwise as random as the token keys.
    """
    key: i64 = first ^ (second >> 7) ^ ((second & 127) << 56)
    return key if key != _EMPTY else 1


class _HashTable:
    """Open addressing (linear probing, load <= 1/2) of 64-bit keys, each with ``[offline, w, g]``.

    ``offline``: the bound offline model's ridge weight; ``w``: the online weight; ``g``: the AdaGrad
    sum of squared gradients. Why not a dict: a dict lookup of a fresh ``str`` reads the dict's index,
    its entry, the stored key string (for the compare) and the value object, then that object's
    fields: four dependent cache misses per token once the table (~10^4 tokens, ~3x10^4 pairs: several
    MB as objects) no longer fits in the CPU cache, which is where the decision's p99 went
    (docs/decision_cost_history.md, "Where the p99 goes"). Here a lookup reads the key array, and when
    found the weights of the same slot: two loads, and the key's address depends only on the token, so the CPU
    overlaps the lookups of successive tokens. ``vec`` (``librt.vecs``) arrays are unboxed when
    compiled (a C array index) and a C type with item access when not.

    Keys are never removed (``reset`` replaces the tables), so a slot index stays valid until the
    next ``insert`` that grows the table; ``learn`` reserves room first, so its slots stay valid.
    """

    __slots__ = ("count", "data", "keys", "mask")

    def __init__(self, n_slots: i64 = _MIN_SLOTS) -> None:
        self.keys: vec[i64] = vec[i64]([_EMPTY] * n_slots)
        self.data: vec[float] = vec[float]([0.0] * (n_slots * _STRIDE))
        self.mask: i64 = n_slots - 1
        self.count: i64 = 0

    def find(self, key: i64) -> i64:
        """The slot of ``key``, or -1 when absent."""
        keys = self.keys
        mask = self.mask
        slot = key & mask
        while True:
            found = keys[slot]
            if found == key:
                return slot
            if found == _EMPTY:
                return -1
            slot = (slot + 1) & mask

    def reserve(self, n_new: i64) -> None:
        """Grow now if ``n_new`` more keys would pass half full, so that inserting them moves no slot."""
        n_slots = self.mask + 1
        if 2 * (self.count + n_new) > n_slots:
            while 2 * (self.count + n_new) > n_slots:
                n_slots *= 2
            self._rehash(n_slots)

    def insert(self, key: i64) -> i64:
        """Add ``key`` (absent: ``find`` said so) with ``[0, 0, 0]``; returns its slot.

        Does not grow: callers ``reserve`` first (a growth moves every slot).
        """
        keys = self.keys
        mask = self.mask
        slot = key & mask
        while keys[slot] != _EMPTY:
            slot = (slot + 1) & mask
        keys[slot] = key
        self.count += 1
        return slot

    def clear_offline(self) -> None:
        """Set every slot's offline weight to 0 (a new model is being bound); online state kept."""
        data = self.data
        i: i64 = _OFFLINE
        n = len(data)
        while i < n:
            data[i] = 0.0
            i += _STRIDE

    def _rehash(self, n_slots: i64) -> None:
        old_keys = self.keys
        old_data = self.data
        self.keys = vec[i64]([_EMPTY] * n_slots)
        self.data = vec[float]([0.0] * (n_slots * _STRIDE))
        self.mask = n_slots - 1
        self.count = 0
        data = self.data
        for old_slot in range(len(old_keys)):
            key = old_keys[old_slot]
            if key != _EMPTY:
                at = self.insert(key) * _STRIDE
                was = old_slot * _STRIDE
                data[at] = old_data[was]
                data[at + 1] = old_data[was + 1]
                data[at + 2] = old_data[was + 2]

    def n_bytes(self) -> int:
        """Bytes held by the two arrays (memory reports)."""
        return 8 * (len(self.keys) + len(self.data))


def _keys_of(row: LengthFeatureRow, use: str) -> vec[i64]:
    """The row's token keys (head, then tail); a row made without keys is refused, not read as empty."""
    keys = row.keys
    if len(keys) != row.n_head + row.n_tail:
        raise ValueError(f"a row without token keys (keyed=False) cannot be {use} by the table")
    return keys


def _step(data: vec[float], at: i64, gg: float, rate_g: float, g0: float, keep: float) -> None:
    """One AdaGrad step plus decay of the term at ``data[at:at + 3]``, in the old ``_Term``'s float order."""
    total = data[at + _G] + gg
    data[at + _G] = total
    data[at + _W] = keep * (data[at + _W] + rate_g / math.sqrt(g0 + total))


class OnlineFeatureWeights:
    """Sparse linear residual model on the length features, learnt one observation at a time.

    Table layout:

    * text terms: two ``_HashTable`` (tokens by ``features.token_key``, adjacent pairs by ``_pair_key``),
      ``[offline, w, g]`` per slot;
    * categorical key: ``[w_mu_offline, w_scale_offline, w, G]`` (a list: index access is the
      cheapest read in CPython; a dozen per request, not worth a second layout).

    ``G`` is the AdaGrad sum of squared gradients; offline weights are 0.0 for terms the offline
    model does not have (adding 0.0 leaves its sums bit-identical). A pair is only ever created
    under a token that is in the table (as the dict-of-pairs layout before it: a pair is looked up
    only after its first token was found), and entries are never removed until ``reset``.
    """

    __slots__ = ("_categorical", "_intercept", "_n_weights", "_pairs", "_params", "_tokens", "n_updates")

    def __init__(self, params: FeatureWeightParams | None = None) -> None:
        self._params = params or FeatureWeightParams()
        self._tokens = _HashTable()
        self._pairs = _HashTable()
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

    def n_bytes(self) -> int:
        """Bytes held by the text tables' arrays (the categorical dict, a few dozen keys, not counted)."""
        return self._tokens.n_bytes() + self._pairs.n_bytes()

    def reset(self) -> None:
        """Forget every learned weight and term (``bind`` the serving model again afterwards).

        Used when a background refit (``predictors.refit``) is swapped in: the refit has learned
        from the same outcomes, so weights learned against the old model would count them twice.
        Dropping the table, not zeroing it, also drops terms only the old model had (bounded memory
        across refits).
        """
        self._tokens = _HashTable()
        self._pairs = _HashTable()
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
        tokens = self._tokens
        pairs = self._pairs
        tokens.clear_offline()
        pairs.clear_offline()
        # Room for the model's terms up front (exact for a fresh table, the refit's case): growing
        # while binding would rehash the table ~10 times, the last in one slice (~0.7 ms).
        n_pairs = 0
        for inner in model.bigrams.values():
            n_pairs += len(inner)
        missing: i64 = len(model.text_table) - tokens.count
        if missing > 0:
            tokens.reserve(missing)
        missing = n_pairs - pairs.count
        if missing > 0:
            pairs.reserve(missing)
            if step_terms:
                yield  # allocating the arrays (~1-2 ms for a model's ~3x10^4 pairs) is a slice of its own
        done = 0
        for token, (weight, base_pairs) in model.text_table.items():
            first = token_key(token)
            slot = tokens.find(first)
            if slot < 0:
                tokens.reserve(1)
                slot = tokens.insert(first)
            tokens.data[slot * _STRIDE] = weight
            if base_pairs:
                for second, pair_weight in base_pairs.items():
                    key = _pair_key(first, token_key(second))
                    pair = pairs.find(key)
                    if pair < 0:
                        pairs.reserve(1)
                        pair = pairs.insert(key)
                    pairs.data[pair * _STRIDE] = pair_weight
            done += 1
            if done == step_terms:
                done = 0
                yield
        cat = self._categorical
        for cat_key, (w_mu, w_s) in model.categorical.items():
            cat_entry = cat.get(cat_key)
            if cat_entry is None:
                cat_entry = cat[cat_key] = [0.0, 0.0, 0.0, 0.0]
            cat_entry[0] = w_mu
            cat_entry[1] = w_s

    def location_scale_score(self, row: LengthFeatureRow) -> tuple[float, float, float]:
        """``(mu, s, f)``: the bound offline model's two linear scores (unclamped) and the online score.

        ``f`` is clipped to ``+-max_correction``. Runs on the request path: one pass, one lookup
        per token and, after a token found in the table, one per pair; per categorical key.
        Sums in the order of ``OutputLengthModel.location_scale`` (a pair, then its second token).
        """
        mu, s = self._intercept
        text = 0.0
        online = 0.0
        tokens = self._tokens
        pairs = self._pairs
        token_keys = tokens.keys
        token_data = tokens.data
        token_mask = tokens.mask
        pair_keys = pairs.keys
        pair_data = pairs.data
        pair_mask = pairs.mask
        keys = _keys_of(row, "scored")
        n_keys: i64 = len(keys)
        end: i64 = row.n_head  # the head's keys, then the tail's (pairs within a slice only)
        i: i64 = 0
        while True:
            previous: i64 = _EMPTY  # key of the previous token when it was found, else none
            while i < end:
                key = keys[i]
                i += 1
                if previous != _EMPTY:
                    pair_key = _pair_key(previous, key)
                    slot = pair_key & pair_mask
                    while True:  # ``_HashTable.find``, inlined: a native call per token is measurable
                        found = pair_keys[slot]
                        if found == pair_key:
                            at = slot * _STRIDE
                            text += pair_data[at]
                            online += pair_data[at + 1]
                            break
                        if found == _EMPTY:
                            break
                        slot = (slot + 1) & pair_mask
                previous = _EMPTY
                slot = key & token_mask
                while True:
                    found = token_keys[slot]
                    if found == key:
                        at = slot * _STRIDE
                        text += token_data[at]
                        online += token_data[at + 1]
                        previous = key
                        break
                    if found == _EMPTY:
                        break
                    slot = (slot + 1) & token_mask
            if end == n_keys:
                break
            end = n_keys
        value = row.text_value
        mu += text * value
        online *= value
        cat = self._categorical
        for cat_key in row.categorical:
            cat_entry = cat.get(cat_key)
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
        second steps the same weights without looking them up again (room for every term the
        pass may create is reserved first, so no slot moves in between).
        """
        p = self._params
        cap, use_pairs = p.max_weights, p.use_pairs
        tokens = self._tokens
        pairs = self._pairs
        keys = _keys_of(row, "learned")
        n_tokens: i64 = len(keys)
        tokens.reserve(n_tokens)
        pairs.reserve(n_tokens)
        token_data = tokens.data
        pair_data = pairs.data
        words = vec[i64](capacity=n_tokens)  # slots in ``tokens`` (unboxed: a list would box each)
        pairs_seen = vec[i64](capacity=n_tokens)  # slots in ``pairs``
        online = 0.0
        end: i64 = row.n_head  # the head's keys, then the tail's (pairs within a slice only)
        i: i64 = 0
        while True:
            previous: i64 = _EMPTY
            while i < end:
                key = keys[i]
                i += 1
                entry = tokens.find(key)
                if entry < 0 and self._n_weights < cap:
                    entry = tokens.insert(key)
                    self._n_weights += 1
                if previous != _EMPTY:
                    pair_key = _pair_key(previous, key)
                    pair = pairs.find(pair_key)
                    if pair < 0 and use_pairs and self._n_weights < cap:
                        pair = pairs.insert(pair_key)
                        self._n_weights += 1
                    if pair >= 0:
                        online += pair_data[pair * _STRIDE + _W]
                        pairs_seen = append(pairs_seen, pair)
                if entry >= 0:
                    online += token_data[entry * _STRIDE + _W]
                    words = append(words, entry)
                    previous = key
                else:
                    previous = _EMPTY
            if end == n_tokens:
                break
            end = n_tokens
        value = row.text_value
        online *= value
        cat = self._categorical
        cats: list[list[float]] = []
        for cat_key in row.categorical:
            cat_entry = cat.get(cat_key)
            if cat_entry is None:
                if self._n_weights >= cap:
                    continue
                cat_entry = cat[cat_key] = [0.0, 0.0, 0.0, 0.0]
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
        for slot in words:
            _step(token_data, slot * _STRIDE, gg, rate_g, g0, keep)
        if use_pairs or p.learn_offline_pairs:
            for slot in pairs_seen:
                _step(pair_data, slot * _STRIDE, gg, rate_g, g0, keep)
        ee = e * e
        rate_e = p.rate * e
        for cg in cats:
            total = cg[3] + ee
            cg[3] = total
            cg[2] = keep * (cg[2] + rate_e / sqrt(g0 + total))
        return f
