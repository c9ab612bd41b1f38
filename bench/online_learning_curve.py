"""How fast the online refinement learns a new source: tau by number of requests already observed.

Cross-dataset protocol of ``sluice predict eval``: the model trained on two
sources meets the third as a stream (seeded random order, each request
predicted, then its true length observed: ``prequential_online_estimates``).
The stream is cut into windows of arrival position (requests 0-99, 100-299,
...), and Kendall tau and P90 coverage are computed within each window, for
the static model, per-key means only, and per-key means + online feature
weights (the default). This answers "after N requests of a new tenant, how
well are its requests ranked?" (issue 5 item 2: "learned within a few hundred
requests"). Windows hold different requests, so small early windows are noisy:
the early windows are also averaged over ``--orders`` stream orders.

The three cross-dataset models are fitted once and cached (``--cache``), as in
``bench/online_rank_tune.py``. Run: ``python bench/online_learning_curve.py``;
writes ``bench/results/online_learning_curve.json``. CPU heavy: ``nice -n 10``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from scipy.stats import kendalltau

from bench._results import write_result
from bench.online_rank_tune import cross_models
from predictors.evaluation import model_estimates, prequential_online_estimates, stream_order
from predictors.online_features import FeatureWeightParams
from predictors.training_data import SOURCES, LengthSample, data_hash, load_samples

WINDOW_EDGES = (0, 100, 300, 1000, 3000, 10000, 30000, 100000)


def window_metrics(
    test: Sequence[LengthSample], estimates: Sequence[tuple[float, float]], seed: int
) -> list[dict[str, Any]]:
    """Tau and P90 coverage of the requests whose arrival position falls in each window."""
    order = stream_order(len(test), seed)
    out = []
    for lo, hi in itertools.pairwise(WINDOW_EDGES):
        idx = order[lo:hi]
        if len(idx) < 50:
            break
        truth = np.asarray([test[i].output_tokens for i in idx], dtype=np.float64)
        p50 = np.asarray([estimates[i][0] for i in idx])
        p90 = np.asarray([estimates[i][1] for i in idx])
        tau = kendalltau(p50, truth)[0]
        out.append(
            {
                "from": lo,
                "to": lo + len(idx),
                "tau": None if np.isnan(tau) else round(float(tau), 4),
                "p90_coverage": round(float(np.mean(truth <= p90)), 4),
            }
        )
    return out


def _mean_curves(curves: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for windows in zip(*curves, strict=False):
        taus = [w["tau"] for w in windows if w["tau"] is not None]
        out.append(
            {
                "from": windows[0]["from"],
                "to": windows[0]["to"],
                "tau": round(float(np.mean(taus)), 4) if taus else None,
                "tau_sd": round(float(np.std(taus)), 4) if taus else None,
                "p90_coverage": round(float(np.mean([w["p90_coverage"] for w in windows])), 4),
            }
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=3, help="stream orders (seeds 0..n-1) to average")
    parser.add_argument("--cache", default="/tmp/sluice_online_rank_cache")
    args = parser.parse_args(argv)
    started = time.monotonic()
    samples = load_samples(list(SOURCES))
    models = cross_models(samples, Path(args.cache), data_hash(list(SOURCES)))
    figures: dict[str, Any] = {}
    for held in SOURCES:
        test = [s for s in samples if s.source == held]
        static = model_estimates(models[held], test)
        per_variant: dict[str, list[list[dict[str, Any]]]] = {
            "static": [],
            "key_means": [],
            "feature_weights": [],
        }
        for seed in range(args.orders):
            per_variant["static"].append(window_metrics(test, static, seed))
            means = prequential_online_estimates(models[held], test, seed=seed)
            per_variant["key_means"].append(window_metrics(test, means, seed))
            weights = prequential_online_estimates(
                models[held], test, seed=seed, feature_params=FeatureWeightParams()
            )
            per_variant["feature_weights"].append(window_metrics(test, weights, seed))
        figures[held] = {name: _mean_curves(curves) for name, curves in per_variant.items()}
        for name, curve in figures[held].items():
            print(held, name, [(w["from"], w["tau"]) for w in curve], flush=True)
    figures["elapsed_s"] = round(time.monotonic() - started, 1)
    write_result(
        "online_learning_curve",
        {"window_edges": WINDOW_EDGES, "orders": args.orders, "feature_params": "FeatureWeightParams()"},
        figures,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
