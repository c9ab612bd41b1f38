"""How well can output length be ranked at all, per source, from the request alone? (issue 5 item 3)

The cross-dataset target is tau >= 0.4 on every held-out source. Before tuning
towards it, this measures the *ceiling* a request-only model reaches when it is
trained on the very source it is tested on (an in-distribution figure is an
upper bound for what a model that never saw the source can reach offline, and
roughly what the online weights can converge to):

* ``shipped_all``: the shipped recipe (``fit_length_model``, ``len-v6``
  features) trained on the training groups of all three sources, tested on the
  source's held-out groups: the published in-distribution row.
* ``shipped_own``: the same recipe trained on that source's training groups only.
* ``reference_own``: a stronger and far more expensive reference on that
  source alone: TF-IDF (sublinear tf, word 1-2 grams, up to 200k terms) of the
  *whole* last user message (``core.features`` keeps up to 2,000 characters, the
  shipped model reads 260 of them) plus the shipped design matrix (its
  categorical keys and head/tail terms), ridge with ``alpha`` chosen by a
  group-wise validation split *inside* the training groups (never on the test
  groups). Not servable in the request-path budget; it only answers whether
  more text helps.
* ``reference_all``: that reference trained on all three sources' training groups.

Split: ``split_groups`` (20% of conversation/instruction groups per source held
out) for each ``--seeds`` seed. Metric: Kendall tau-b of the location score
(the p50 up to a per-row scale, for the shipped recipe the real p50) against the
true length. CPU heavy: run under ``nice -n 10`` (about 5 min for one seed).

Run: ``python bench/length_ceiling.py [--seeds 0 1 2]``; writes
``bench/results/length_ceiling.json``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from scipy import sparse
from scipy.stats import kendalltau
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge

from bench._results import write_result
from predictors.evaluation import length_metrics, model_estimates, split_groups
from predictors.features import length_features
from predictors.length_training import (
    TrainConfig,
    build_vocabulary,
    design_matrix,
    fit_length_model,
    log_targets,
)
from predictors.training_data import SOURCES, LengthSample, load_samples

REFERENCE_ALPHAS = (1.0, 3.0, 10.0, 30.0)
REFERENCE_MAX_TERMS = 200_000
VALIDATION_FRACTION = 0.2


def _tau(score: np.ndarray, samples: Sequence[LengthSample]) -> float:
    y = np.asarray([s.output_tokens for s in samples], dtype=np.float64)
    return round(float(kendalltau(score, y)[0]), 4)


def _reference_matrices(
    train: Sequence[LengthSample], tests: Sequence[Sequence[LengthSample]]
) -> tuple[sparse.csr_matrix, list[sparse.csr_matrix]]:
    """TF-IDF of the whole last user message next to the shipped design matrix (vocabulary from ``train``)."""
    tfidf = TfidfVectorizer(
        ngram_range=(1, 2), min_df=3, sublinear_tf=True, max_features=REFERENCE_MAX_TERMS, dtype=np.float64
    )
    text_train = tfidf.fit_transform([s.features.last_user_text for s in train])
    rows_train = [length_features(s.features) for s in train]
    vocabulary = build_vocabulary(rows_train, [s.group for s in train], TrainConfig().min_df)
    x_train = sparse.hstack([text_train, design_matrix(rows_train, vocabulary)], format="csr")
    x_tests = [
        sparse.hstack(
            [
                tfidf.transform([s.features.last_user_text for s in test]),
                design_matrix([length_features(s.features) for s in test], vocabulary),
            ],
            format="csr",
        )
        for test in tests
    ]
    return x_train, x_tests


def _choose_alpha(train: Sequence[LengthSample], seed: int) -> tuple[float, dict[str, float]]:
    """Best ridge alpha by tau on a group-wise validation split of ``train`` (test groups never used)."""
    groups = sorted({s.group for s in train})
    held = set(random.Random(seed).sample(groups, k=max(1, round(len(groups) * VALIDATION_FRACTION))))
    fit_part = [s for s in train if s.group not in held]
    validation = [s for s in train if s.group in held]
    x_fit, (x_val,) = _reference_matrices(fit_part, [validation])
    z_fit = log_targets(fit_part)
    scores = {
        str(alpha): _tau(Ridge(alpha=alpha).fit(x_fit, z_fit).predict(x_val), validation)
        for alpha in REFERENCE_ALPHAS
    }
    best = max(REFERENCE_ALPHAS, key=lambda a: scores[str(a)])
    return best, scores


def _reference_taus(
    train: Sequence[LengthSample], tests: dict[str, list[LengthSample]], seed: int
) -> tuple[dict[str, float], dict[str, Any]]:
    alpha, validation = _choose_alpha(train, seed)
    names = list(tests)
    x_train, x_tests = _reference_matrices(train, [tests[n] for n in names])
    ridge = Ridge(alpha=alpha).fit(x_train, log_targets(train))
    taus = {name: _tau(ridge.predict(x), tests[name]) for name, x in zip(names, x_tests, strict=True)}
    return taus, {"alpha": alpha, "validation_tau_by_alpha": validation, "n_columns": x_train.shape[1]}


def _shipped_taus(train: Sequence[LengthSample], tests: dict[str, list[LengthSample]]) -> dict[str, Any]:
    model = fit_length_model(train).model
    out = {}
    for name, test in tests.items():
        estimates = model_estimates(model, test)
        metrics = length_metrics(
            [s.output_tokens for s in test], [e[0] for e in estimates], [e[1] for e in estimates]
        )
        out[name] = {"tau": metrics["kendall_tau"], "p90_coverage": metrics["p90_coverage"]}
    return out


def run_seed(samples: list[LengthSample], seed: int) -> dict[str, Any]:
    train, test = split_groups(samples, seed=seed)
    by_source = {src: [s for s in test if s.source == src] for src in SOURCES}
    result: dict[str, Any] = {"n_train": len(train), "n_test": {k: len(v) for k, v in by_source.items()}}
    started = time.perf_counter()
    result["shipped_all"] = _shipped_taus(train, by_source)
    reference_all, detail_all = _reference_taus(train, by_source, seed)
    result["reference_all"] = reference_all
    result["reference_all_detail"] = detail_all
    result["shipped_own"], result["reference_own"], result["reference_own_detail"] = {}, {}, {}
    for src in SOURCES:
        own_train = [s for s in train if s.source == src]
        result["shipped_own"][src] = _shipped_taus(own_train, {src: by_source[src]})[src]
        taus, detail = _reference_taus(own_train, {src: by_source[src]}, seed)
        result["reference_own"][src] = taus[src]
        result["reference_own_detail"][src] = detail
        print(f"seed {seed} {src}: {result['shipped_own'][src]} ref {taus[src]}", flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-name", default="length_ceiling")
    args = parser.parse_args(argv)
    samples = load_samples(SOURCES, args.data_dir)
    figures = {f"seed_{seed}": run_seed(samples, seed) for seed in args.seeds}
    config = {
        "seeds": args.seeds,
        "reference": {
            "tfidf": "word 1-2 grams, sublinear tf, min_df 3",
            "max_terms": REFERENCE_MAX_TERMS,
            "alphas": REFERENCE_ALPHAS,
            "validation_fraction": VALIDATION_FRACTION,
        },
        "shipped": "fit_length_model(TrainConfig())",
    }
    path = write_result(args.out_name, config, figures)
    for seed_name, fig in figures.items():
        print(seed_name)
        for src in SOURCES:
            print(
                f"  {src:12s} shipped_all {fig['shipped_all'][src]['tau']:.3f}"
                f"  shipped_own {fig['shipped_own'][src]['tau']:.3f}"
                f"  reference_own {fig['reference_own'][src]:.3f}"
                f"  reference_all {fig['reference_all'][src]:.3f}"
            )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
