"""Offline evaluation of the output-length model against baselines (formulas.md §1 and §11.5).

Metrics, per request set (``length_metrics``):

* ``kendall_tau`` (tau-b) and ``spearman`` between the p50 prediction and the
  true length: ranking quality, what SJF-like scheduling needs. ``None`` for a
  constant predictor (ranking undefined).
* ``log_mae``: mean ``|log(1 + p50) - log(1 + true)|`` (0.69 = off by 2x).
* ``p90_coverage``: share of requests whose true length is <= the p90 (target 85–95%).
* ``bucket_accuracy``: p50 and truth in the same bucket, ``BUCKET_EDGES_TOKENS``
  = [0, 64), [64, 256), [256, 1024), [1024, inf). Reported only next to tau:
  coarse buckets flatter weak models.

Baselines (fitted on the same training rows): ``global_mean``; ``per_model_mean``
(normalised model id, global for unseen models); ``prompt_length_regression``
(least squares of log1p(output) on log1p(prompt tokens), p90 from its residual
quantile); ``prompt_ratio_1.5`` (llm-d / AIBrix ``outputRatio``); ``max_tokens``
(the request's ``max_tokens``, else ``DEFAULT_MAX_TOKENS``; no request in these
data sets sends one, so it is a constant here).

Protocols: ``in_distribution`` holds out 20% of conversation/instruction groups
of every source; ``cross_dataset`` trains on two sources and tests on the
third. Both report the static model and, prequentially, the two online
refinements: per-key means only (``predictors.online``) and per-key means plus
the online feature weights (``predictors.online_features``); each held-out
request is predicted, then observed, in a seeded random order, as the proxy
would. ``cross_dataset`` also returns the pooled metrics over the three
held-out sources concatenated.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

from core.config import PredictorsConfig
from core.types import OutputLengthEstimate, RequestFeatures
from predictors.facade import Predictor
from predictors.features import length_features, normalise_model
from predictors.length_training import TrainConfig, fit_length_model
from predictors.online import OnlineLengthCorrector, OnlineParams
from predictors.online_features import FeatureWeightParams, OnlineFeatureWeights
from predictors.output_length import OutputLengthModel
from predictors.refit import RefitParams, RefitReservoir, compact_entry, group_key, run_refit
from predictors.training_data import LengthSample

BUCKET_EDGES_TOKENS = (64, 256, 1024)
DEFAULT_MAX_TOKENS = 4096
TEST_FRACTION = 0.2
Estimator = Callable[[RequestFeatures], tuple[float, float]]


def _corr(stat: Any, a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    value = float(stat(a, b)[0])
    return None if math.isnan(value) else round(value, 4)


def length_metrics(true_tokens: Sequence[int], p50: Sequence[float], p90: Sequence[float]) -> dict[str, Any]:
    y = np.asarray(true_tokens, dtype=np.float64)
    q50 = np.asarray(p50, dtype=np.float64)
    q90 = np.asarray(p90, dtype=np.float64)
    edges = np.asarray(BUCKET_EDGES_TOKENS)
    return {
        "n": len(y),
        "kendall_tau": _corr(kendalltau, q50, y),
        "spearman": _corr(spearmanr, q50, y),
        "log_mae": round(float(np.mean(np.abs(np.log1p(q50) - np.log1p(y)))), 4),
        "p90_coverage": round(float(np.mean(y <= q90)), 4),
        "bucket_accuracy": round(float(np.mean(np.digitize(q50, edges) == np.digitize(y, edges))), 4),
    }


def split_groups(
    samples: Sequence[LengthSample], test_fraction: float = TEST_FRACTION, seed: int = 0
) -> tuple[list[LengthSample], list[LengthSample]]:
    """(train, test) with whole conversation/instruction groups on one side, the same share per source."""
    rng = random.Random(seed)
    test_groups: set[str] = set()
    by_source: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        by_source[s.source].add(s.group)
    for source in sorted(by_source):
        groups = sorted(by_source[source])
        test_groups.update(rng.sample(groups, k=max(1, round(len(groups) * test_fraction))))
    train = [s for s in samples if s.group not in test_groups]
    test = [s for s in samples if s.group in test_groups]
    return train, test


def _log_targets(samples: Sequence[LengthSample]) -> np.ndarray:
    return np.log1p(np.asarray([s.output_tokens for s in samples], dtype=np.float64))


def fit_baselines(train: Sequence[LengthSample]) -> dict[str, Estimator]:
    """Each baseline as a function features -> (p50 tokens, p90 tokens)."""
    y = np.asarray([s.output_tokens for s in train], dtype=np.float64)
    global_mean, global_p90 = float(np.mean(y)), float(np.quantile(y, 0.9))
    per_model: dict[str, list[float]] = defaultdict(list)
    for s in train:
        per_model[normalise_model(s.features.model)].append(s.output_tokens)
    model_stats = {m: (float(np.mean(v)), float(np.quantile(v, 0.9))) for m, v in per_model.items()}
    x = np.log1p(np.asarray([s.features.prompt_tokens for s in train], dtype=np.float64))
    z = _log_targets(train)
    slope, intercept = (float(v) for v in np.polyfit(x, z, 1))
    resid_q90 = float(np.quantile(z - (slope * x + intercept), 0.9))

    def regression(f: RequestFeatures) -> tuple[float, float]:
        zhat = slope * math.log1p(f.prompt_tokens) + intercept
        return math.expm1(zhat), math.expm1(zhat + resid_q90)

    def max_tokens(f: RequestFeatures) -> tuple[float, float]:
        cap = float(f.max_tokens if f.max_tokens is not None else DEFAULT_MAX_TOKENS)
        return cap, cap

    return {
        "global_mean": lambda f: (global_mean, global_p90),
        "per_model_mean": lambda f: model_stats.get(normalise_model(f.model), (global_mean, global_p90)),
        "prompt_length_regression": regression,
        "prompt_ratio_1.5": lambda f: (1.5 * f.prompt_tokens, 1.5 * f.prompt_tokens),
        "max_tokens": max_tokens,
    }


def _metrics_by_source(
    test: Sequence[LengthSample], estimates: Sequence[tuple[float, float]]
) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(test):
        groups["all"].append(i)
        groups[s.source].append(i)
    out = {}
    for name, idx in groups.items():
        out[name] = length_metrics(
            [test[i].output_tokens for i in idx],
            [estimates[i][0] for i in idx],
            [estimates[i][1] for i in idx],
        )
    return out


def within_model_tau(test: Sequence[LengthSample], estimates: Sequence[tuple[float, float]]) -> float | None:
    """Mean over models of Kendall tau within one model (ranks prompts, not models); None if one model."""
    idx_by_model: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(test):
        idx_by_model[s.features.model].append(i)
    if len(idx_by_model) < 2:
        return None
    taus = []
    for idx in idx_by_model.values():
        tau = _corr(
            kendalltau,
            np.asarray([estimates[i][0] for i in idx]),
            np.asarray([test[i].output_tokens for i in idx], dtype=np.float64),
        )
        if tau is not None:
            taus.append(tau)
    return round(float(np.mean(taus)), 4) if taus else None


def model_estimates(model: OutputLengthModel, test: Sequence[LengthSample]) -> list[tuple[float, float]]:
    predictor = Predictor(model, online=None)
    out = []
    for s in test:
        estimate = predictor.predict_length(s.features)
        out.append((estimate.p50_tokens, estimate.p90_tokens))
    return out


def stream_order(n: int, seed: int = 0) -> list[int]:
    """The seeded random arrival order of the prequential protocol."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def first_of_group(test: Sequence[LengthSample], seed: int = 0) -> list[int]:
    """Indices of the requests that arrive before any other request of their group in the stream.

    An alpaca_eval instruction is answered by 30 models, so later arrivals of it
    are ranked partly by memory of the same prompt; these requests show what is
    learned that carries over to prompts never seen before.
    """
    seen: set[str] = set()
    first = []
    for i in stream_order(len(test), seed):
        if test[i].group not in seen:
            seen.add(test[i].group)
            first.append(i)
    return sorted(first)


def prequential_online_estimates(
    model: OutputLengthModel,
    test: Sequence[LengthSample],
    seed: int = 0,
    feature_params: FeatureWeightParams | None = None,
    online_params: OnlineParams | None = None,
) -> list[tuple[float, float]]:
    """Predict each request, then learn from its true length, in a seeded random arrival order.

    Per-key means only (today's refinement) when ``feature_params`` is None; with it, also the
    online feature weights (``predictors.online_features``).
    """
    weights = OnlineFeatureWeights(feature_params) if feature_params is not None else None
    predictor = Predictor(model, online=OnlineLengthCorrector(online_params), feature_weights=weights)
    order = stream_order(len(test), seed)
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(test)
    for i in order:
        s = test[i]
        estimate: OutputLengthEstimate = predictor.predict_length(s.features)
        out[i] = (estimate.p50_tokens, estimate.p90_tokens)
        predictor.observe_length(s.features, s.output_tokens)
    return out


def prequential_refit_estimates(
    model: OutputLengthModel,
    test: Sequence[LengthSample],
    params: RefitParams,
    seed: int = 0,
    feature_params: FeatureWeightParams | None = None,
    online_params: OnlineParams | None = None,
    log: list[dict[str, Any]] | None = None,
) -> list[tuple[float, float]]:
    """The prequential stream of ``prequential_online_estimates`` with the guarded refit on top.

    Every ``params.every_outcomes`` outcomes a refit is fitted on the reservoir (only outcomes
    already observed) and judged on the newest ``params.holdout`` (``predictors.refit``); an
    accepted one replaces the model at once (in the proxy it lands a few seconds of outcomes
    later). ``log`` (optional) receives one record per refit.
    """
    weights = OnlineFeatureWeights(feature_params or FeatureWeightParams())
    predictor = Predictor(model, online=OnlineLengthCorrector(online_params), feature_weights=weights)
    reservoir = RefitReservoir(params, random.Random(seed))
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(test)
    for step, i in enumerate(stream_order(len(test), seed)):
        s = test[i]
        estimate = predictor.predict_length(s.features)
        out[i] = (estimate.p50_tokens, estimate.p90_tokens)
        max_tokens = s.features.max_tokens
        due = False
        if max_tokens is None or s.output_tokens < max_tokens:
            entry = compact_entry(
                length_features(s.features), s.output_tokens, estimate.p50_tokens, group_key(s.features)
            )
            due = reservoir.add(entry)
        predictor.observe_length(s.features, s.output_tokens)
        if due:
            fit, holdout = reservoir.job()
            result = run_refit(model, fit, holdout, params)
            if result.accepted:
                predictor.replace_length_model(result.model, reset_online=params.reset_online)
            if log is not None:
                log.append(
                    {
                        "step": step + 1,
                        "accepted": result.accepted,
                        "reason": result.reason,
                        "tau_refit": result.tau_refit,
                        "tau_served": result.tau_served,
                        "log_mae_refit": round(result.log_mae_refit, 4),
                        "log_mae_served": round(result.log_mae_served, 4),
                        "coverage_refit": round(result.coverage_refit, 4),
                        "fit_n": result.fit_n,
                        "duration_s": round(result.duration_s, 2),
                        "groups": {
                            g: {k: (round(v, 4) if v is not None else None) for k, v in f.items()}
                            for g, f in result.groups.items()
                        },
                    }
                )
    return out


def _evaluate(
    model: OutputLengthModel,
    train: Sequence[LengthSample],
    test: Sequence[LengthSample],
    online: bool,
    feature_params: FeatureWeightParams | None = None,
    refit: RefitParams | None = None,
) -> tuple[dict[str, Any], dict[str, list[tuple[float, float]]]]:
    """Metrics of the model (static, and prequential online when asked) and baselines; plus the estimates.

    With ``refit`` (and ``online``) also the default online refinement plus the guarded background
    refit (``model_refit_prequential``, its log of refits in ``refit_log``), and for both online
    columns with feature weights the tau over the second half of the stream (what a proxy reaches
    once it has seen half of this workload).
    """
    estimates = {"model": model_estimates(model, test)}
    result: dict[str, Any] = {
        "train_n": len(train),
        "test_n": len(test),
        "model": _metrics_by_source(test, estimates["model"]),
        "model_within_model_tau": within_model_tau(test, estimates["model"]),
    }
    if online:
        estimates["model_online_prequential"] = prequential_online_estimates(model, test)
        estimates["model_online_features_prequential"] = prequential_online_estimates(
            model, test, feature_params=feature_params or FeatureWeightParams()
        )
        names = ["model_online_prequential", "model_online_features_prequential"]
        if refit is not None:
            refit_log: list[dict[str, Any]] = []
            estimates["model_refit_prequential"] = prequential_refit_estimates(
                model, test, refit, feature_params=feature_params or FeatureWeightParams(), log=refit_log
            )
            result["refit_log"] = refit_log
            result["refit_params"] = asdict(refit)
            names.append("model_refit_prequential")
        first = first_of_group(test)
        second_half = sorted(stream_order(len(test))[len(test) // 2 :])
        for name in names[1:]:
            result[name + "_second_half"] = length_metrics(
                [test[i].output_tokens for i in second_half],
                [estimates[name][i][0] for i in second_half],
                [estimates[name][i][1] for i in second_half],
            )
        for name in names:
            result[name] = _metrics_by_source(test, estimates[name])
            result[name + "_first_of_group"] = length_metrics(
                [test[i].output_tokens for i in first],
                [estimates[name][i][0] for i in first],
                [estimates[name][i][1] for i in first],
            )
        result["model_first_of_group"] = length_metrics(
            [test[i].output_tokens for i in first],
            [estimates["model"][i][0] for i in first],
            [estimates["model"][i][1] for i in first],
        )
        result["model_online_within_model_tau"] = within_model_tau(
            test, estimates["model_online_prequential"]
        )
        result["model_online_features_within_model_tau"] = within_model_tau(
            test, estimates["model_online_features_prequential"]
        )
        if refit is not None:
            result["model_refit_within_model_tau"] = within_model_tau(
                test, estimates["model_refit_prequential"]
            )
    result["baselines"] = {
        name: _metrics_by_source(test, [fn(s.features) for s in test])
        for name, fn in fit_baselines(train).items()
    }
    return result, estimates


def in_distribution(
    samples: Sequence[LengthSample],
    config: TrainConfig,
    seed: int = 0,
    online: bool = False,
    refit: RefitParams | None = None,
) -> tuple[dict[str, Any], OutputLengthModel]:
    """Held-out split; with ``online`` also streams the held-out part prequentially (both refinements,
    and the background refit when ``refit`` is given)."""
    train, test = split_groups(samples, seed=seed)
    model = fit_length_model(train, config).model
    result, _ = _evaluate(model, train, test, online=online, refit=refit)
    result["protocol"] = f"{int(TEST_FRACTION * 100)}% of groups per source held out, seed {seed}"
    return result, model


def cross_dataset(
    samples: Sequence[LengthSample], config: TrainConfig, refit: RefitParams | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per held-out source results, and the pooled metrics over the concatenated held-out sources.

    Pooled: every source's own test estimates (from the model trained without it) put side by
    side, so the tau also judges whether lengths from different sources are on one scale.
    """
    sources = sorted({s.source for s in samples})
    out: dict[str, Any] = {}
    pooled_truth: list[int] = []
    pooled: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for held in sources:
        train = [s for s in samples if s.source != held]
        test = [s for s in samples if s.source == held]
        if not train or not test:
            continue
        model = fit_length_model(train, config).model
        result, estimates = _evaluate(model, train, test, online=True, refit=refit)
        result["trained_on"] = sorted({s.source for s in train})
        out[held] = result
        pooled_truth.extend(s.output_tokens for s in test)
        for name, values in estimates.items():
            pooled[name].extend(values)
    pooled_metrics: dict[str, Any] = {
        name: length_metrics(pooled_truth, [e[0] for e in values], [e[1] for e in values])
        for name, values in pooled.items()
    }
    pooled_metrics["held_out_sources"] = sorted(out)
    return out, pooled_metrics


def summary(
    in_dist: dict[str, Any],
    cross: dict[str, Any],
    by_seed: dict[str, Any] | None = None,
    cross_pooled: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The headline figures against the issue's targets (tau spread over held-out seeds when given).

    ``cross_dataset_tau_online`` is the refinement the proxy runs by default
    (``predictors.online_features`` included when ``online_feature_weights`` is on).
    """
    pooled = in_dist["model"]["all"]
    seed_taus = [
        m["all"]["kendall_tau"] for m in (by_seed or {}).values() if m["all"]["kendall_tau"] is not None
    ]
    cross_tau = {k: v["model"]["all"]["kendall_tau"] for k, v in cross.items()}
    means_tau = {k: v["model_online_prequential"]["all"]["kendall_tau"] for k, v in cross.items()}
    features_tau = {k: v["model_online_features_prequential"]["all"]["kendall_tau"] for k, v in cross.items()}
    refit_tau = {
        k: v["model_refit_prequential"]["all"]["kendall_tau"]
        for k, v in cross.items()
        if "model_refit_prequential" in v
    }
    defaults = PredictorsConfig()
    default_online = features_tau if defaults.online_feature_weights else means_tau
    if defaults.refit.enabled and refit_tau:
        default_online = refit_tau
    in_online = in_dist.get("model_online_features_prequential", {}).get("all", {})
    in_refit = in_dist.get("model_refit_prequential", {}).get("all", {})
    return {
        "in_distribution_tau": pooled["kendall_tau"],
        "in_distribution_tau_over_seeds": {
            "mean": round(float(np.mean(seed_taus)), 4) if seed_taus else None,
            "min": min(seed_taus, default=None),
            "max": max(seed_taus, default=None),
            "n_seeds": len(seed_taus),
        },
        "in_distribution_p90_coverage": pooled["p90_coverage"],
        "cross_dataset_tau_static": cross_tau,
        "cross_dataset_tau_online": default_online,
        "cross_dataset_tau_online_key_means": means_tau,
        "cross_dataset_tau_online_feature_weights": features_tau,
        "cross_dataset_tau_online_refit": refit_tau,
        "cross_dataset_p90_coverage_online_refit": {
            k: v["model_refit_prequential"]["all"]["p90_coverage"]
            for k, v in cross.items()
            if "model_refit_prequential" in v
        },
        "cross_dataset_pooled_tau": {
            name: metrics["kendall_tau"]
            for name, metrics in (cross_pooled or {}).items()
            if isinstance(metrics, dict)
        },
        "in_distribution_online_feature_weights_tau": in_online.get("kendall_tau"),
        "in_distribution_online_feature_weights_p90_coverage": in_online.get("p90_coverage"),
        "in_distribution_online_refit_tau": in_refit.get("kendall_tau"),
        "in_distribution_online_refit_p90_coverage": in_refit.get("p90_coverage"),
        "targets": {"in_distribution_tau": 0.5, "cross_dataset_tau": 0.4, "p90_coverage": [0.85, 0.95]},
    }


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return asdict(config)
