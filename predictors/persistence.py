"""Saving and loading the output-length model: gzipped JSON with metadata and a checksum.

Why JSON and not pickle/joblib: the serving model is plain weight tables, so
nothing executable is deserialised (a model file cannot run code), the file
diffs and inspects with ordinary tools, and it does not break when
scikit-learn changes its private estimator layout.

File layout::

    {"format": "sluice-output-length", "format_version": 1,
     "metadata": {feature_spec, feature_spec_hash, sklearn_version, numpy_version,
                  python_version, training_data_sha256, sources, n_samples,
                  train_config, evaluation, created_by},
     "model": {intercept, k50, k90, scale_floor, unigrams, bigrams, categorical},
     "payload_sha256": sha256 of the canonical JSON of {"metadata", "model"}}

``load_model`` checks, in order: gzip/JSON integrity, format name and version,
the payload checksum, the feature-spec hash against this code's
(``predictors.features.feature_spec_hash``), then every weight. Any failure
raises ``ModelFileError`` naming the file and the problem; the facade builds
the model at construction, so a bad file stops start-up instead of failing the
first request. The scikit-learn version is recorded for provenance but not
enforced: no scikit-learn object is stored, so a newer scikit-learn computes
identical predictions from the same tables.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import json
import platform
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from predictors.features import feature_spec, feature_spec_hash
from predictors.output_length import OutputLengthModel, model_tables_from_mapping, model_tables_to_mapping

FORMAT_NAME = "sluice-output-length"
FORMAT_VERSION = 1
DEFAULT_MODEL_PACKAGE = "predictors.default_model"
DEFAULT_MODEL_FILE = "output_length.json.gz"


class ModelFileError(Exception):
    """A model file is missing, corrupt, or was built for different features."""


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def build_metadata(
    *,
    training_data_sha256: str,
    sources: list[str],
    n_samples: int,
    train_config: dict[str, Any],
    evaluation: dict[str, Any],
    created_by: str,
) -> dict[str, Any]:
    return {
        "feature_spec": feature_spec(),
        "feature_spec_hash": feature_spec_hash(),
        "sklearn_version": importlib.metadata.version("scikit-learn"),
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "training_data_sha256": training_data_sha256,
        "sources": sources,
        "n_samples": n_samples,
        "train_config": train_config,
        "evaluation": evaluation,
        "created_by": created_by,
    }


def save_model(model: OutputLengthModel, path: str | Path) -> None:
    """Write ``model`` (its ``metadata`` must come from ``build_metadata``) atomically to ``path``."""
    payload = {"metadata": model.metadata, "model": model_tables_to_mapping(model)}
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        **payload,
        "payload_sha256": hashlib.sha256(_canonical(payload)).hexdigest(),
    }
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    # No name and mtime 0 in the gzip header: the same model gives the same bytes wherever it is written.
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write(_canonical(document))
    tmp.replace(target)


def _read_document(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read output-length model ({exc.strerror or exc})") from None
    try:
        text = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ModelFileError(f"{path}: corrupt model file (not valid gzip: {exc})") from None
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: corrupt model file (bad JSON: {exc})") from None
    if not isinstance(document, dict):
        raise ModelFileError(f"{path}: corrupt model file (top level is not an object)")
    return document


def _check_header(path: Path, document: dict[str, Any]) -> None:
    if document.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: not a Sluice output-length model (format={document.get('format')!r})")
    if document.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format {document.get('format_version')!r} is not supported "
            f"(this Sluice reads format {FORMAT_VERSION}); retrain with `sluice predict train`"
        )
    payload = {"metadata": document.get("metadata"), "model": document.get("model")}
    try:
        digest = hashlib.sha256(_canonical(payload)).hexdigest()
    except ValueError as exc:
        raise ModelFileError(f"{path}: corrupt model file ({exc})") from None
    if digest != document.get("payload_sha256"):
        raise ModelFileError(f"{path}: corrupt model file (payload checksum mismatch)")
    metadata = document["metadata"]
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: corrupt model file (metadata is not an object)")
    file_spec = metadata.get("feature_spec_hash")
    if file_spec != feature_spec_hash():
        raise ModelFileError(
            f"{path}: model was trained for feature spec {file_spec!r} "
            f"({(metadata.get('feature_spec') or {}).get('version')!r}) but this Sluice computes "
            f"{feature_spec_hash()!r} ({feature_spec()['version']!r}); retrain with `sluice predict train`"
        )


def load_model(path: str | Path) -> OutputLengthModel:
    """Load and fully validate a model file; raises ``ModelFileError`` with the reason."""
    target = Path(path)
    document = _read_document(target)
    _check_header(target, document)
    model_section = document["model"]
    if not isinstance(model_section, dict):
        raise ModelFileError(f"{target}: corrupt model file (model is not an object)")
    try:
        tables = model_tables_from_mapping(model_section)
    except ValueError as exc:
        raise ModelFileError(f"{target}: invalid model: {exc}") from None
    return OutputLengthModel(**tables, metadata=document["metadata"])


def default_model_path() -> Path:
    """The model shipped inside the package."""
    return Path(str(resources.files(DEFAULT_MODEL_PACKAGE).joinpath(DEFAULT_MODEL_FILE)))


def load_default_model() -> OutputLengthModel:
    return load_model(default_model_path())
