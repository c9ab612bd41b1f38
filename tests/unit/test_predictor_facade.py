"""The Predictor facade as the decision engine uses it: predict over a snapshot, observe outcomes."""

from __future__ import annotations

import dataclasses

import pytest

from core.config import PredictorsConfig
from core.types import (
    BackendView,
    FleetSnapshot,
    Health,
    Outcome,
    OutputLengthEstimate,
    Predictions,
    RoutingRequest,
)
from predictors import Predictor
from predictors.facade import observed_tpot_ms
from tests.unit.length_fixtures import chat_features

MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"


def _view(
    backend_id: str, health: Health = Health.READY, models: frozenset[str] = frozenset({MODEL})
) -> BackendView:
    return BackendView(
        backend_id=backend_id,
        models=models,
        gpu_class="unknown",
        weight=1.0,
        max_concurrency=None,
        health=health,
        in_flight_requests=2,
        awaiting_first_byte=1,
        in_flight_prompt_tokens=3000,
        in_flight_predicted_decode_tokens=400.0,
    )


def _outcome(backend: str, ttft_ms: float | None, e2e_ms: float, tokens: int, status: int = 200) -> Outcome:
    return Outcome(
        request_id="r",
        backend_id=backend,
        route="default",
        model=MODEL,
        tenant="t",
        status_code=status,
        prompt_tokens=100,
        output_tokens=tokens,
        cached_prompt_tokens=0,
        ttft_ms=ttft_ms,
        e2e_ms=e2e_ms,
    )


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_config(PredictorsConfig())


def test_predict_covers_every_selectable_backend_serving_the_model(predictor: Predictor) -> None:
    snapshot = FleetSnapshot(
        backends=(
            _view("a"),
            _view("b"),
            _view("down", Health.DOWN),
            _view("pending", Health.PENDING),
            _view("other-model", models=frozenset({"x"})),
        ),
        taken_at_s=1.0,
    )
    features = chat_features("Explain how TCP congestion control works.", MODEL)
    request = RoutingRequest(features=features, prefix_matched_tokens={"b": features.prompt_tokens})
    predictions = predictor.predict(request, snapshot)
    assert set(predictions.per_backend) == {"a", "b"}
    a, b = predictions.per_backend["a"], predictions.per_backend["b"]
    assert b.cached_prompt_tokens == features.prompt_tokens and a.cached_prompt_tokens == 0
    assert b.prefill_ms < a.prefill_ms
    length = predictions.output_length
    assert a.e2e_ms == pytest.approx(a.ttft_ms + (length.p50_tokens - 1) * a.tpot_ms)
    assert 1 <= length.p50_tokens <= length.p90_tokens


def test_unknown_model_gets_no_backends_and_a_prior(predictor: Predictor) -> None:
    snapshot = FleetSnapshot(backends=(_view("a"),), taken_at_s=0.0)
    predictions = predictor.predict(
        RoutingRequest(features=chat_features("hi", "nobody-serves-me")), snapshot
    )
    assert predictions.per_backend == {}
    assert predictions.output_length.source == "prior"


def test_observe_learns_the_backend_it_ran_on(predictor: Predictor) -> None:
    fresh = Predictor(predictor.length_model)
    view = _view("slow")
    features = chat_features("hello there", MODEL)
    for _ in range(60):
        fresh.observe(_outcome("slow", 900.0, 900.0 + 99 * 80.0, 100), features, view)
    est = fresh.latency.estimate(view, features.prompt_tokens, 0, 100.0)
    assert est.ttft_ms == pytest.approx(900.0, rel=0.1)
    assert est.tpot_ms == pytest.approx(80.0, rel=0.1)


def test_observe_skips_mismatched_views_errors_and_missing_first_byte(predictor: Predictor) -> None:
    fresh = Predictor(predictor.length_model)
    features = chat_features("hello", MODEL)
    fresh.observe(_outcome("a", 500.0, 600.0, 10), features, _view("b"))  # view of another backend
    fresh.observe(_outcome("a", 500.0, 600.0, 10, status=502), features, _view("a"))
    fresh.observe(_outcome("a", None, 600.0, 0), features, _view("a"))
    fresh.observe(_outcome("a", 500.0, 600.0, 10), features, None)
    assert len(fresh.latency) == 0


def test_observed_tpot_follows_the_vllm_definition() -> None:
    assert observed_tpot_ms(_outcome("a", 100.0, 1090.0, 100)) == pytest.approx(10.0)
    assert observed_tpot_ms(_outcome("a", 100.0, 150.0, 1)) is None
    assert observed_tpot_ms(_outcome("a", None, 150.0, 10)) is None


def test_predictors_never_read_simulator_ground_truth() -> None:
    import pathlib

    import predictors

    root = pathlib.Path(predictors.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "x-sim" not in text.lower() and "SIM_OUTPUT_TOKENS" not in text, path


def test_values_built_without_init_equal_constructed_ones(predictor: Predictor) -> None:
    """The request path builds ``OutputLengthEstimate`` and ``Predictions`` through their slots
    (predictors.slots): they must be indistinguishable from constructor-built values."""
    snapshot = FleetSnapshot(backends=(_view("a"),), taken_at_s=0.0)
    for text, max_tokens in (("write a long essay about rivers", None), ("hi", 3), ("", None)):
        predictions = predictor.predict(
            RoutingRequest(features=chat_features(text, MODEL, max_tokens=max_tokens)), snapshot
        )
        length = predictions.output_length
        rebuilt = OutputLengthEstimate(
            p50_tokens=length.p50_tokens, p90_tokens=length.p90_tokens, source=length.source
        )
        assert length == rebuilt and hash(length) == hash(rebuilt) and repr(length) == repr(rebuilt)
        assert 1.0 <= length.p50_tokens <= length.p90_tokens
        if max_tokens is not None:
            assert length.p90_tokens <= max_tokens
        assert predictions == Predictions(output_length=rebuilt, per_backend=predictions.per_backend)
        with pytest.raises(dataclasses.FrozenInstanceError):
            length.p50_tokens = 1.0  # type: ignore[misc]
