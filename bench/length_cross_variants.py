"""Training variants aimed at cross-dataset ranking, judged by the static location's tau (issue 5 item 3).

Cross-dataset protocol of ``sluice predict eval`` (train on two sources, test on
the third), ridge location only (``alpha_mu``, ``len-v6`` features, vocabulary
from the training sources), Kendall tau of the location against the true
length per held-out source. The in-distribution check is the seed-0 split of
``split_groups`` (pooled and per source). Variants, each a principled guess at
what transfers between sources, none tuned on a held-out source:

* ``base``: the shipped recipe's location.
* ``source_balanced``: sample weights so every training source weighs the same
  in total (ShareGPT has 61k pairs, hh_rlhf 5.8k: the big source sets the weights).
* ``group_balanced``: every conversation/instruction weighs the same in total (an
  alpaca_eval instruction answered by 30 models counts once, as the vocabulary does).
* ``rank_target``: target = the normal score of the reply's length rank within
  its source (ordinal: only the order within a source is learned, not the
  sources' different length scales and tails).
* ``text_only``: text terms and model id only, no size/turn keys (the keys whose
  effect flips between sources: more turns -> longer ShareGPT, shorter hh_rlhf replies).

Run: ``python bench/length_cross_variants.py``; writes
``bench/results/length_cross_variants.json``. CPU heavy: ``nice -n 10`` (~5 min).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from scipy.stats import kendalltau, norm, rankdata
from sklearn.linear_model import Ridge

from bench._results import write_result
from predictors.evaluation import split_groups
from predictors.features import LengthFeatureRow, length_features
from predictors.length_training import TrainConfig, build_vocabulary, design_matrix, log_targets
from predictors.training_data import SOURCES, LengthSample, load_samples

Variant = Callable[[Sequence[LengthSample]], tuple[np.ndarray, np.ndarray]]  # -> (target, weight)


def _log_target(train: Sequence[LengthSample]) -> np.ndarray:
    return log_targets(train)


def _unit(train: Sequence[LengthSample]) -> np.ndarray:
    return np.ones(len(train))


def base(train: Sequence[LengthSample]) -> tuple[np.ndarray, np.ndarray]:
    return _log_target(train), _unit(train)


def source_balanced(train: Sequence[LengthSample]) -> tuple[np.ndarray, np.ndarray]:
    counts = Counter(s.source for s in train)
    w = np.asarray([len(train) / (len(counts) * counts[s.source]) for s in train])
    return _log_target(train), w


def group_balanced(train: Sequence[LengthSample]) -> tuple[np.ndarray, np.ndarray]:
    counts = Counter(s.group for s in train)
    w = np.asarray([1.0 / counts[s.group] for s in train])
    return _log_target(train), w * len(train) / w.sum()


def rank_target(train: Sequence[LengthSample]) -> tuple[np.ndarray, np.ndarray]:
    z = _log_target(train)
    out = np.empty_like(z)
    sources = np.asarray([s.source for s in train])
    for src in set(sources.tolist()):
        mask = sources == src
        out[mask] = norm.ppf((rankdata(z[mask]) - 0.5) / mask.sum())
    return out, _unit(train)


VARIANTS: dict[str, Variant] = {
    "base": base,
    "source_balanced": source_balanced,
    "group_balanced": group_balanced,
    "rank_target": rank_target,
    "text_only": base,
}


def _rows(samples: Sequence[LengthSample], text_only: bool) -> list[LengthFeatureRow]:
    rows = [length_features(s.features) for s in samples]
    if not text_only:
        return rows
    return [LengthFeatureRow(r.head, r.tail, r.categorical[:1]) for r in rows]  # keep "m:<model>"


def _fit_score(
    name: str, train: Sequence[LengthSample], tests: dict[str, list[LengthSample]], alpha: float
) -> dict[str, float]:
    text_only = name == "text_only"
    rows = _rows(train, text_only)
    vocabulary = build_vocabulary(rows, [s.group for s in train], TrainConfig().min_df)
    target, weight = VARIANTS[name](train)
    ridge = Ridge(alpha=alpha).fit(design_matrix(rows, vocabulary), target, sample_weight=weight)
    out = {}
    for test_name, test in tests.items():
        score = ridge.predict(design_matrix(_rows(test, text_only), vocabulary))
        truth = np.asarray([s.output_tokens for s in test], dtype=np.float64)
        out[test_name] = round(float(kendalltau(score, truth)[0]), 4)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    alpha = TrainConfig().alpha_mu
    samples = load_samples(SOURCES, args.data_dir)
    train_in, test_in = split_groups(samples, seed=0)
    in_tests = {"all": test_in, **{src: [s for s in test_in if s.source == src] for src in SOURCES}}
    figures: dict[str, Any] = {}
    for name in args.variants:
        started = time.perf_counter()
        cross = {}
        for held in SOURCES:
            train = [s for s in samples if s.source != held]
            test = {held: [s for s in samples if s.source == held]}
            cross[held] = _fit_score(name, train, test, alpha)[held]
        figures[name] = {
            "cross_tau": cross,
            "in_distribution_tau_seed0": _fit_score(name, train_in, in_tests, alpha),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(name, figures[name], flush=True)
    write_result("length_cross_variants", {"alpha_mu": alpha, "variants": args.variants}, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
