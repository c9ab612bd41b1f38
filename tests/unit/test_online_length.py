"""Online refinement: long-answer tenants learned quickly, bounded memory, bad outcomes teach nothing."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from predictors import Predictor
from predictors.length_training import TrainConfig, fit_length_model
from predictors.online import OnlineLengthCorrector, OnlineParams
from tests.unit.length_fixtures import chat_features, length_outcome, synthetic_samples

PROMPT = "write a detailed essay about tea rivers"


@pytest.fixture(scope="module")
def model():
    return fit_length_model(synthetic_samples(600), TrainConfig(min_df=2, n_folds=3)).model


def test_long_answer_tenant_is_learned_within_a_few_hundred_requests(model) -> None:
    predictor = Predictor(model, online=OnlineLengthCorrector())
    long_f = chat_features(PROMPT, "terse", tenant="long")
    normal_f = chat_features(PROMPT, "terse", tenant="normal")
    base_p50 = predictor.predict_length(long_f).p50_tokens
    rng = random.Random(1)
    long_truth: list[int] = []
    normal_truth: list[int] = []
    for _ in range(150):  # 300 requests, alternating tenants
        tokens = int(3 * base_p50 * rng.lognormvariate(0, 0.3))
        long_truth.append(tokens)
        predictor.observe(length_outcome(tokens, "long"), long_f, None)
        tokens = int(base_p50 * rng.lognormvariate(0, 0.3))
        normal_truth.append(tokens)
        predictor.observe(length_outcome(tokens, "normal"), normal_f, None)
    learned = predictor.predict_length(long_f)
    assert learned.source == "model+online"
    assert learned.p50_tokens == pytest.approx(statistics.median(long_truth), rel=0.15)
    assert predictor.predict_length(normal_f).p50_tokens == pytest.approx(
        statistics.median(normal_truth), rel=0.15
    )
    coverage = sum(t <= learned.p90_tokens for t in long_truth[-100:]) / 100
    assert 0.75 <= coverage <= 1.0


def test_failed_cancelled_and_errored_requests_teach_nothing(model) -> None:
    predictor = Predictor(model, online=OnlineLengthCorrector())
    f = chat_features(PROMPT, "terse", tenant="x")
    before = predictor.predict_length(f)
    for outcome in (length_outcome(5000, "x", status=500), length_outcome(5000, "x", cancelled=True)):
        predictor.observe(outcome, f, None)
    assert predictor.predict_length(f) == before


def test_answers_cut_by_max_tokens_never_lower_the_estimate(model) -> None:
    predictor = Predictor(model, online=OnlineLengthCorrector())
    f = chat_features(PROMPT, "terse", tenant="x", max_tokens=5)
    uncapped = chat_features(PROMPT, "terse", tenant="x")
    before = predictor.predict_length(uncapped).p50_tokens
    for _ in range(50):
        predictor.observe(length_outcome(5, "x"), f, None)
    assert predictor.predict_length(uncapped).p50_tokens >= before


def test_refinement_off_keeps_the_offline_model(model) -> None:
    predictor = Predictor(model, online=None)
    f = chat_features(PROMPT, "terse", tenant="x")
    before = predictor.predict_length(f)
    predictor.observe(length_outcome(9000, "x"), f, None)
    assert predictor.predict_length(f) == before


def test_memory_is_bounded_by_lru() -> None:
    corrector = OnlineLengthCorrector(OnlineParams(max_keys=50, max_models=5))
    for i in range(10_000):
        corrector.observe(
            "r", f"model{i % 7}", f"tenant{i}", z_observed=5.0, mu_base=4.0, z90_base_offset=1.0
        )
        assert len(corrector) <= 50 and corrector.n_models <= 5
    # The most recently observed key survives, the oldest is gone.
    assert corrector.correction("r", "model3", "tenant9999").n_key == 1
    assert corrector.correction("r", "model0", "tenant0").n_key == 0


def test_correction_shrinks_toward_zero_with_few_observations() -> None:
    corrector = OnlineLengthCorrector(OnlineParams(prior_n=10))
    corrector.observe("r", "m", "t", z_observed=math.log1p(100), mu_base=math.log1p(10), z90_base_offset=1.0)
    one = corrector.correction("r", "m", "t").location
    for _ in range(200):
        corrector.observe(
            "r", "m", "t", z_observed=math.log1p(100), mu_base=math.log1p(10), z90_base_offset=1.0
        )
    many = corrector.correction("r", "m", "t").location
    gap = math.log1p(100) - math.log1p(10)
    assert 0 < one < 0.2 * gap
    assert many == pytest.approx(gap, rel=0.1)


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        OnlineParams(max_keys=0)
    with pytest.raises(ValueError, match="min_rate"):
        OnlineParams(min_rate=0.0)
