"""Fitting the output-length model with scikit-learn (offline only: CLI or an executor, never the event loop).

Recipe (formulas.md §1, adapted to a CPU budget of microseconds per request):

1. Rows from ``predictors.features.length_features``; a vocabulary of every
   feature seen in at least ``min_df`` training rows (rarer terms cannot be
   learned and would only bloat the shipped file).
2. Location: ``Ridge(alpha_mu)`` on ``z = log1p(output_tokens)``.
3. Out-of-fold location predictions with ``GroupKFold(n_folds)`` (groups =
   conversations / instructions, so a prompt never scores itself).
4. Scale: ``Ridge(alpha_scale)`` of the absolute out-of-fold residual on the
   categorical columns only (model, sizes, turns, cues), floored at
   ``scale_floor``. Leaving the text terms out of the scale costs nothing
   measurable in coverage and halves the per-term work on the request path.
5. ``k_q`` = empirical q-quantile of ``residual / scale`` over the training rows.

The fitted estimators are kept next to the exported tables so tests can check
that the serving path reproduces ``Ridge.predict`` exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold

from predictors.features import LengthFeatureRow, length_features
from predictors.output_length import OutputLengthModel, Weights
from predictors.training_data import LengthSample

_UNI, _BI, _CAT = "u:", "b:", "c:"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    alpha_mu: float = 5.0
    alpha_scale: float = 30.0
    min_df: int = 5
    n_folds: int = 5
    scale_floor: float = 0.05


@dataclass(slots=True)
class FittedLengthModel:
    """The serving tables plus what produced them (estimators, vocabulary, training residual stats)."""

    model: OutputLengthModel
    location: Ridge
    scale: Ridge
    vocabulary: dict[str, int]
    scale_columns: np.ndarray


def _row_terms(row: LengthFeatureRow) -> list[str]:
    """Every feature occurrence of a row (text terms repeat when their tokens do)."""
    terms = [_UNI + t for t in row.unigrams()]
    terms.extend(f"{_BI}{a} {b}" for a, b in row.bigrams())
    terms.extend(_CAT + k for k in row.categorical)
    return terms


def build_vocabulary(rows: Sequence[LengthFeatureRow], groups: Sequence[str], min_df: int) -> dict[str, int]:
    """Column index of every feature present in at least ``min_df`` distinct groups, sorted.

    Frequency is counted per group (conversation or instruction), not per row:
    one alpaca_eval instruction answered by 30 models is one piece of evidence.
    """
    per_group: dict[str, set[str]] = {}
    for row, group in zip(rows, groups, strict=True):
        per_group.setdefault(group, set()).update(_row_terms(row))
    counts: Counter[str] = Counter()
    for terms in per_group.values():
        counts.update(terms)
    kept = sorted(term for term, n in counts.items() if n >= min_df)
    return {term: i for i, term in enumerate(kept)}


def design_matrix(rows: Sequence[LengthFeatureRow], vocabulary: dict[str, int]) -> sparse.csr_matrix:
    """CSR matrix with the exact values the serving path multiplies weights by."""
    indptr = [0]
    indices: list[int] = []
    values: list[float] = []
    for row in rows:
        text_value = row.text_value
        for term in _row_terms(row):
            column = vocabulary.get(term)
            if column is None:
                continue
            indices.append(column)
            if term.startswith((_UNI, _BI)):
                values.append(text_value)
            else:
                values.append(1.0)
        indptr.append(len(indices))
    matrix = sparse.csr_matrix(
        (np.asarray(values, dtype=np.float64), np.asarray(indices, dtype=np.int64), np.asarray(indptr)),
        shape=(len(rows), len(vocabulary)),
    )
    matrix.sum_duplicates()  # repeated terms become counts
    return matrix


def log_targets(samples: Sequence[LengthSample]) -> np.ndarray:
    return np.log1p(np.asarray([max(0, s.output_tokens) for s in samples], dtype=np.float64))


def categorical_columns(vocabulary: dict[str, int]) -> np.ndarray:
    """Column indices of the categorical features, in column order (the scale model's inputs)."""
    return np.asarray(sorted(c for t, c in vocabulary.items() if t.startswith(_CAT)), dtype=np.int64)


def _export(
    vocabulary: dict[str, int], location: Ridge, scale: Ridge, k50: float, k90: float, floor: float
) -> OutputLengthModel:
    w_mu = location.coef_
    w_s_by_column = dict(zip(categorical_columns(vocabulary).tolist(), scale.coef_.tolist(), strict=True))
    unigrams: dict[str, float] = {}
    bigrams: dict[str, dict[str, float]] = {}
    categorical: dict[str, Weights] = {}
    for term, column in vocabulary.items():
        weight = float(w_mu[column])
        kind, name = term[:2], term[2:]
        if kind == _UNI:
            unigrams[name] = weight
        elif kind == _BI:
            a, _, b = name.partition(" ")
            bigrams.setdefault(a, {})[b] = weight
        else:
            categorical[name] = (weight, float(w_s_by_column[column]))
    return OutputLengthModel(
        intercept=(float(location.intercept_), float(scale.intercept_)),
        k50=k50,
        k90=k90,
        scale_floor=floor,
        unigrams=unigrams,
        bigrams=bigrams,
        categorical=categorical,
    )


def out_of_fold_location(
    x: sparse.csr_matrix, z: np.ndarray, groups: Sequence[str], config: TrainConfig
) -> np.ndarray:
    """Location predictions for every row from a model that did not see the row's group."""
    n_groups = len(set(groups))
    n_folds = min(config.n_folds, n_groups)
    if n_folds < 2:
        raise ValueError("need at least two conversation/instruction groups to calibrate quantiles")
    oof = np.empty_like(z)
    for train_idx, test_idx in GroupKFold(n_splits=n_folds).split(x, z, groups=list(groups)):
        fold = Ridge(alpha=config.alpha_mu).fit(x[train_idx], z[train_idx])
        oof[test_idx] = fold.predict(x[test_idx])
    return oof


def fit_length_model(samples: Sequence[LengthSample], config: TrainConfig | None = None) -> FittedLengthModel:
    """Fit location, scale and quantile offsets on ``samples``; returns serving tables and estimators."""
    config = config or TrainConfig()
    if len(samples) < 10:
        raise ValueError(f"need at least 10 training samples, got {len(samples)}")
    rows = [length_features(s.features) for s in samples]
    groups = [s.group for s in samples]
    vocabulary = build_vocabulary(rows, groups, config.min_df)
    x = design_matrix(rows, vocabulary)
    z = log_targets(samples)
    location = Ridge(alpha=config.alpha_mu).fit(x, z)
    residual = z - out_of_fold_location(x, z, groups, config)
    scale_columns = categorical_columns(vocabulary)
    x_scale = x[:, scale_columns]
    scale = Ridge(alpha=config.alpha_scale).fit(x_scale, np.abs(residual))
    s_hat = np.maximum(scale.predict(x_scale), config.scale_floor)
    k50, k90 = (float(v) for v in np.quantile(residual / s_hat, [0.5, 0.9]))
    model = _export(vocabulary, location, scale, k50, k90, config.scale_floor)
    return FittedLengthModel(
        model=model, location=location, scale=scale, vocabulary=vocabulary, scale_columns=scale_columns
    )
