"""Model files: round trip, the bundled default, and every way a bad file must stop start-up."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from core.config import PredictorsConfig, load_config_text
from predictors import ModelFileError, Predictor
from predictors.length_training import TrainConfig, fit_length_model
from predictors.persistence import (
    FORMAT_VERSION,
    build_metadata,
    default_model_path,
    load_default_model,
    load_model,
    save_model,
)
from tests.unit.length_fixtures import chat_features, synthetic_samples

PROMPTS = ("write a detailed essay about tea", "what is the capital of jazz", "", "hello " * 500)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = fit_length_model(synthetic_samples(300), TrainConfig(min_df=2, n_folds=3)).model
    model.metadata = build_metadata(
        training_data_sha256="0" * 64,
        sources=["synthetic"],
        n_samples=300,
        train_config={"min_df": 2},
        evaluation={},
        created_by="test",
    )
    path = tmp_path_factory.mktemp("model") / "m.json.gz"
    save_model(model, path)
    return path


def _document(path: Path) -> dict:
    return json.loads(gzip.decompress(path.read_bytes()))


def _write(path: Path, document: dict) -> None:
    path.write_bytes(gzip.compress(json.dumps(document).encode()))


def test_round_trip_predicts_identically(model_file: Path) -> None:
    original = fit_length_model(synthetic_samples(300), TrainConfig(min_df=2, n_folds=3)).model
    loaded = load_model(model_file)
    for text in PROMPTS:
        f = chat_features(text, "verbose")
        assert loaded.log_quantiles(f) == original.log_quantiles(f)
    assert loaded.metadata["sources"] == ["synthetic"]


def test_saving_is_reproducible(model_file: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.json.gz"
    save_model(load_model(model_file), again)
    assert again.read_bytes() == model_file.read_bytes()


def _corruptions(good: dict) -> dict[str, tuple[object, str]]:
    wrong_spec = json.loads(json.dumps(good))
    wrong_spec["metadata"]["feature_spec_hash"] = "deadbeefdeadbeef"
    bad_weight = json.loads(json.dumps(good))
    bad_weight["model"]["categorical"] = {"m:x": "heavy"}
    return {
        "truncated": (b"truncated", "not valid gzip"),
        "not_json": (gzip.compress(b"{nope"), "bad JSON"),
        "other_format": ({**good, "format": "pickle"}, "not a Sluice output-length model"),
        "newer_format": ({**good, "format_version": FORMAT_VERSION + 1}, "is not supported"),
        "tampered": ({**good, "model": {**good["model"], "k90": 99.0}}, "checksum mismatch"),
        "wrong_spec": (wrong_spec, "feature spec"),
        "bad_weight": (bad_weight, "model.categorical"),
    }


@pytest.mark.parametrize(
    "case", ["truncated", "not_json", "other_format", "newer_format", "tampered", "wrong_spec", "bad_weight"]
)
def test_bad_files_fail_at_construction_with_a_clear_message(
    model_file: Path, tmp_path: Path, case: str
) -> None:
    good = _document(model_file)
    content, message = _corruptions(good)[case]
    path = tmp_path / f"{case}.json.gz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        assert isinstance(content, dict)
        if case in ("wrong_spec", "bad_weight"):
            # Re-seal the checksum so the deeper check is the one that fires.
            import hashlib

            from predictors.persistence import _canonical

            payload = {"metadata": content["metadata"], "model": content["model"]}
            content["payload_sha256"] = hashlib.sha256(_canonical(payload)).hexdigest()
        _write(path, content)
    with pytest.raises(ModelFileError, match=message) as info:
        Predictor.from_config(PredictorsConfig(output_length_model=str(path)))
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="cannot read"):
        Predictor.from_config(PredictorsConfig(output_length_model=str(tmp_path / "absent.json.gz")))


def test_bundled_default_model_loads_small_and_sane() -> None:
    path = default_model_path()
    assert path.stat().st_size <= 5 * 1024 * 1024
    model = load_default_model()
    meta = model.metadata
    for key in ("sklearn_version", "feature_spec_hash", "training_data_sha256", "evaluation", "n_samples"):
        assert meta[key]
    held_out = meta["evaluation"]["in_distribution"]["model"]["all"]
    assert held_out["kendall_tau"] >= 0.45 and 0.85 <= held_out["p90_coverage"] <= 0.95
    predictor = Predictor.from_config(
        load_config_text("backends: [{name: a, url: 'http://x', models: [m]}]").config.predictors
    )
    essay = predictor.predict_length(
        chat_features("Write a 1500-word essay on the causes of the French Revolution.")
    )
    arithmetic = predictor.predict_length(chat_features("What is 2+2? Answer with a number only."))
    assert essay.p50_tokens > 3 * arithmetic.p50_tokens
