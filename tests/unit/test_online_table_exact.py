"""The flat hash-table layout of the online feature weights scores and learns bit for bit like the old one.

``tests/unit/online_features_reference.py`` is the dict-of-objects table it replaced (main 182b70a).
Both are driven by the same random streams of rows, targets, model swaps and resets; every score, every
``learn`` result and the weight count must be equal (floats compared exactly).
"""

from __future__ import annotations

import random

import pytest

from predictors.features import LengthFeatureRow
from predictors.online_features import PAIRS_PARAMS, FeatureWeightParams, OnlineFeatureWeights
from predictors.output_length import OutputLengthModel
from tests.unit.online_features_reference import ReferenceFeatureWeights

# "te" (two 1-byte characters) and "\u6574" (one 2-byte character) are the same two bytes inside
# CPython, so their ``str`` hashes are equal: the table must still keep them apart. Likewise for
# "\x00\x01" / "\u0100" and 4-byte characters.
CLASHING = ["te", "\u6574", "\x00\x01", "\u0100", "\U00016574", "te\x00\x00", "\u6574\x00"]
VOCAB = [f"w{i}" for i in range(80)] + CLASHING


def _model(rng: random.Random) -> OutputLengthModel:
    known = rng.sample(VOCAB, 40)
    return OutputLengthModel(
        intercept=(rng.uniform(3.0, 5.0), rng.uniform(0.3, 0.8)),
        k50=0.0,
        k90=1.3,
        scale_floor=0.05,
        unigrams={t: rng.gauss(0.0, 0.3) for t in known},
        bigrams={t: {u: rng.gauss(0.0, 0.2) for u in rng.sample(VOCAB, 6)} for t in rng.sample(VOCAB, 20)},
        categorical={f"c:{i}": (rng.gauss(0.0, 0.2), rng.gauss(0.0, 0.1)) for i in range(4)},
    )


def _row(rng: random.Random) -> LengthFeatureRow:
    head = [rng.choice(VOCAB) for _ in range(rng.randint(0, 30))]
    tail = [rng.choice(VOCAB) for _ in range(rng.randint(0, 10))]
    return LengthFeatureRow(head, tail, tuple(f"c:{rng.randint(0, 6)}" for _ in range(rng.randint(0, 3))))


@pytest.mark.parametrize(
    "params",
    [
        FeatureWeightParams(),
        PAIRS_PARAMS,
        FeatureWeightParams(learn_offline_pairs=False),
        FeatureWeightParams(max_weights=60, use_pairs=True),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flat_table_equals_the_reference(params: FeatureWeightParams, seed: int) -> None:
    rng = random.Random(seed)
    flat, ref = OnlineFeatureWeights(params), ReferenceFeatureWeights(params)
    model = _model(rng)
    flat.bind(model)
    ref.bind(model)
    for step in range(3_000):
        row = _row(rng)
        assert flat.location_scale_score(row) == ref.location_scale_score(row), step
        target = rng.gauss(0.0, 1.5)
        only_raise = rng.random() < 0.2
        assert flat.learn(row, target, only_raise=only_raise) == ref.learn(row, target, only_raise=only_raise)
        assert len(flat) == len(ref) and flat.n_updates == ref.n_updates
        if step % 1_000 == 400:  # a new model bound over the learned weights (kept), as ``bind`` is used
            model = _model(rng)
            flat.bind(model)
            ref.bind(model)
        elif step % 1_000 == 800:  # a refit's swap: reset, then bound in slices
            model = _model(rng)
            flat.reset()
            ref.reset()
            for _ in flat.bind_in_steps(model, 7):
                pass
            for _ in ref.bind_in_steps(model, 7):
                pass
    for _ in range(200):
        row = _row(rng)
        assert flat.location_scale_score(row) == ref.location_scale_score(row)
        assert flat.location_scale_score(row)[:2] == model.location_scale(row)


def test_tokens_with_equal_str_hashes_keep_their_own_weights() -> None:
    """CPython hashes the internal bytes: "te" and "\u6574" hash alike, yet are two features."""
    assert hash("te") == hash("\u6574")  # what makes this case worth a test
    weights = OnlineFeatureWeights()
    weights.bind(
        OutputLengthModel(
            intercept=(4.0, 0.5),
            k50=0.0,
            k90=1.3,
            scale_floor=0.05,
            unigrams={"te": 1.0, "\u6574": -1.0},
            bigrams={},
            categorical={},
        )
    )
    mu_te = weights.location_scale_score(LengthFeatureRow(["te"], [], ()))[0]
    mu_other = weights.location_scale_score(LengthFeatureRow(["\u6574"], [], ()))[0]
    assert mu_te == 5.0 and mu_other == 3.0


def test_bounded_memory_unchanged_by_the_layout() -> None:
    """The cap counts online weights as before: a full table ignores new features, known ones learn."""
    params = FeatureWeightParams(max_weights=25, use_pairs=True)
    flat, ref = OnlineFeatureWeights(params), ReferenceFeatureWeights(params)
    rng = random.Random(5)
    for _ in range(300):
        row = _row(rng)
        assert flat.learn(row, 1.0) == ref.learn(row, 1.0)
    assert len(flat) == len(ref) == 25
