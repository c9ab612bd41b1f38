"""Guarded background refit of the output-length model from the outcomes the proxy observes.

Why: the online feature weights (``predictors.online_features``) learn a new workload's vocabulary
with one AdaGrad step per outcome. On a source the offline model never saw (cross-dataset ShareGPT)
they level off below what a ridge fitted on that source reaches (docs/predictors.md, "Ceiling").
A refit closes part of that gap: every ``every_outcomes`` outcomes, a ridge is fitted on a bounded
sample of what was observed, in a worker *process* (pure Python + scikit-learn would hold the GIL
in a thread), and swapped in only if it ranks the most recent outcomes better than what was served.

**Model** (the "sufficient form" of the offline data is the offline model itself): the refit is
the offline model plus a ridge correction fitted on the observed outcomes' residuals,

    mu_refit(x) = mu_offline(x) + delta(x),   delta = Ridge(alpha) on  z - mu_offline(x)

i.e. ridge regression of ``z`` with its prior mean at the offline weights instead of 0: terms the
outcomes do not show keep their offline weight, and the new workload's own vocabulary (features
seen in at least ``min_count`` observed requests) gets weights. The scale is corrected the same
way (ridge of ``|z - mu_oof| - s_offline`` on the categorical keys, from ``n_folds`` out-of-fold
location fits), and ``k50`` / ``k90`` are re-read from the observed standardised residuals, so the
quantiles are calibrated on the new workload. The correction is always relative to the *offline*
model, never to a previous refit, so an outcome still in the reservoir is not counted twice.
The offline design matrix is not refitted: keeping the 90k offline rows (or their 40k x 40k
normal matrix) in the proxy is what this avoids; the exact Bayesian form would weigh the prior by
the offline data's precision rather than ``alpha`` alike for every term.

**Reservoir** (bounded): the newest ``holdout`` outcomes in a queue; what leaves the queue enters
a uniform reservoir sample (Algorithm R, injected RNG) of at most ``reservoir_size``. Each entry is
the request's length-feature inputs in a compact form (the message's two slices as text, <= 200 and
60 characters, tokenized by the worker; the categorical keys; ~0.3-0.5 KB pickled), the output
tokens, and the p50 that was served for it (the one ``predict`` returned for the request, handed
over by the predictor). Answers cut by
``max_tokens`` are not stored (their true length is unknown).

**Guard**: the refit is fitted on the reservoir only; the ``holdout`` newest outcomes (not used to
fit) are predicted by it and compared with the p50s actually served for them (offline model +
online corrections, predicted before each was learned): swap only if Kendall tau improves by at
least ``min_tau_gain``, log-MAE gets no worse than ``max_log_mae_loss``, the refit's P90
coverage of the holdout is within ``coverage_band`` of 0.9, and no (route, model, tenant) group
with at least ``min_group_outcomes`` holdout outcomes loses more than ``group_max_tau_loss`` tau or
``group_max_log_mae_loss`` log-MAE against what was served for it (the pooled figures are
dominated by the largest groups; a small tenant's loss would hide under a large one's gain).

**Online corrections after a swap** (``reset_online``): the refit learned from the same outcomes
the per-key means and feature weights learned from, so keeping them would count those outcomes
twice; they are reset (the guard compared exactly what is served right after the swap: the refit
alone). ``reset_online: false`` keeps them (measured in docs/predictors.md).

Pure functions and a plain class: no asyncio, no clock (the duration is measured in the worker by
the caller's timer), no I/O. ``router/length_refit.py`` runs ``run_refit`` in a process pool and
applies the result on the event loop.
"""

from __future__ import annotations

import math
import pickle
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from core.config import RefitConfig
from core.types import RequestFeatures
from predictors.features import LengthFeatureRow, normalise_model, row_of_slices
from predictors.output_length import MAX_LOG_TOKENS, OutputLengthModel, Weights

# scikit-learn and scipy are imported inside the functions the worker process runs: the proxy
# imports this module for the reservoir and must not load training libraries
# (tests/unit/test_serve_imports.py).


@dataclass(frozen=True, slots=True)
class RefitParams:
    """Refit schedule, reservoir and guard (``predictors.refit`` in the config schema)."""

    every_outcomes: int = 5_000
    reservoir_size: int = 20_000
    holdout: int = 2_000
    alpha: float = 1.0
    alpha_scale: float = 30.0
    min_count: int = 3
    n_folds: int = 5
    min_tau_gain: float = 0.01
    max_log_mae_loss: float = 0.02
    coverage_band: float = 0.05
    reset_online: bool = True
    # Per-group guard: every (route, model, tenant) key with at least this many holdout outcomes must
    # not rank worse (tau) or fit worse (log-MAE) with the candidate than with what was served, beyond
    # the margins below (0 = no per-group check).
    min_group_outcomes: int = 100
    group_max_tau_loss: float = 0.0
    group_max_log_mae_loss: float = 0.02

    def __post_init__(self) -> None:
        if self.every_outcomes < 1 or self.reservoir_size < 10 or self.holdout < 10:
            raise ValueError("need every_outcomes >= 1, reservoir_size >= 10 and holdout >= 10")
        if self.alpha <= 0 or self.alpha_scale <= 0 or self.min_count < 1 or self.n_folds < 2:
            raise ValueError("need alpha > 0, alpha_scale > 0, min_count >= 1 and n_folds >= 2")
        if self.max_log_mae_loss < 0 or not 0 < self.coverage_band < 0.9:
            raise ValueError("need max_log_mae_loss >= 0 and 0 < coverage_band < 0.9")
        if self.min_group_outcomes < 0 or self.group_max_tau_loss < 0 or self.group_max_log_mae_loss < 0:
            raise ValueError("need min_group_outcomes, group_max_tau_loss and group_max_log_mae_loss >= 0")


def refit_params(config: RefitConfig) -> RefitParams:
    """The schema's ``predictors.refit`` as parameters (fields not in the schema keep their defaults)."""
    return RefitParams(
        every_outcomes=config.every_outcomes,
        reservoir_size=config.reservoir_size,
        holdout=config.holdout,
        alpha=config.alpha,
        min_tau_gain=config.min_tau_gain,
        reset_online=config.reset_online,
        min_group_outcomes=config.min_group_outcomes,
        group_max_tau_loss=config.group_max_tau_loss,
        group_max_log_mae_loss=config.group_max_log_mae_loss,
    )


# (head text, tail text: ``LengthFeatureRow.slices``, whose tokens are the row's; categorical keys,
#  output tokens, served p50, group: the online state's (route, normalised model, tenant) key, ``group_key``)
Entry = tuple[str, str, tuple[str, ...], int, float, str]


def group_key(features: RequestFeatures) -> str:
    """The per-group guard's group: the key the online per-key means use, as one string."""
    return f"{features.route}|{normalise_model(features.model)}|{features.tenant}"


def compact_entry(row: LengthFeatureRow, output_tokens: int, served_p50: float, group: str = "") -> Entry:
    """What the refit needs of one outcome: the row's two slices as text, not tokenized.

    Why not the tokens: a request's row has only its token keys (``features.length_features``);
    making its tokens here would tokenize every outcome on the event loop, where the worker can do
    it for the entries it fits (``entry_row``).
    """
    head, tail = row.slices()
    return (head, tail, row.categorical, output_tokens, served_p50, group)


def entry_row(entry: Entry) -> LengthFeatureRow:
    """The feature row of a stored outcome (``compact_entry``), with its token strings."""
    return row_of_slices(entry[0], entry[1], entry[2])


class RefitReservoir:
    """The newest ``holdout`` outcomes, and a uniform sample of at most ``reservoir_size`` older ones.

    Why sample entries are pickled by a job, once: pickling every kept entry as it came cost ~5 us
    per outcome among the request's own work (0.8 us in a tight loop), and pickling the whole
    sample again for every job ~30 ms of loop time per 22k entries. An entry is pickled by the
    first job that hands it over (``encode_fit``, in loop slices), which leaves the bytes in its
    slot for the next jobs. Building the entry (``compact_entry``, two slices) is done by the caller
    while the request's row is still in cache (~0.2 us); storing the row instead and compacting it
    2,000 outcomes later, only if kept, cost more (cold row, and the rows kept alive).
    """

    __slots__ = ("_params", "_recent", "_rng", "_sample", "_seen", "since_refit")

    def __init__(self, params: RefitParams, rng: random.Random) -> None:
        self._params = params
        self._rng = rng
        self._recent: deque[Entry] = deque()
        # An entry, or its pickle once a job has handed it over (``encode_fit``).
        self._sample: list[Entry | bytes] = []
        self._seen = 0  # entries that have left the recent queue (Algorithm R's count)
        self.since_refit = 0

    def __len__(self) -> int:
        return len(self._recent) + len(self._sample)

    def add(self, entry: Entry) -> bool:
        """``add_outcome`` for an outcome already in ``Entry`` form."""
        return self.add_outcomes((entry,))

    def add_outcome(self, row: LengthFeatureRow, output_tokens: int, served_p50: float, group: str) -> bool:
        """Store one outcome; True when a refit is due (``every_outcomes`` since the last, data enough)."""
        return self.add_outcomes((compact_entry(row, output_tokens, served_p50, group),))

    def add_outcomes(self, observed: Sequence[Entry]) -> bool:
        """``add_outcome`` for each, in order (one loop with its state in locals); True when a refit
        is due after the last."""
        params = self._params
        holdout = params.holdout
        size = params.reservoir_size
        recent = self._recent
        sample = self._sample
        randrange = self._rng.randrange
        seen = self._seen
        for outcome in observed:
            recent.append(outcome)
            if len(recent) > holdout:
                old = recent.popleft()
                seen += 1
                if len(sample) < size:
                    sample.append(old)
                else:
                    slot = randrange(seen)
                    if slot < len(sample):
                        sample[slot] = old
        self._seen = seen
        self.since_refit += len(observed)
        return self.since_refit >= params.every_outcomes and len(sample) >= holdout

    def outcomes_until_due(self) -> int:
        """How many more ``add_outcome`` calls until one returns True (at least 1; exact: the count
        and the sample's size follow from the number of outcomes alone). Lets a caller buffer
        outcomes and add them in batches without moving the moment a refit is due."""
        params = self._params
        by_count = params.every_outcomes - self.since_refit
        sample_short = params.holdout - len(self._sample)
        # Outcomes leave the recent queue once it holds ``holdout``; each one that leaves joins the
        # sample while it is below ``reservoir_size`` (>= holdout), so the sample gains one per outcome.
        if sample_short > 0 and params.reservoir_size < params.holdout:
            return sys.maxsize  # the sample never holds ``holdout`` outcomes: never due
        by_sample = sample_short + params.holdout - len(self._recent) if sample_short > 0 else 0
        return max(by_count, by_sample, 1)

    def job_parts(self) -> tuple[list[Entry | bytes], list[Entry]]:
        """(the sample, the holdout's outcomes), copies; restarts the ``every_outcomes`` count.
        ``encode_fit`` turns slices of the first into what the worker reads."""
        self.since_refit = 0
        return list(self._sample), list(self._recent)

    def encode_fit(self, fit: list[Entry | bytes], start: int, end: int) -> bytes:
        """``fit[start:end]`` as one pickled list of pickled entries (``run_refit_encoded``).

        An entry not yet pickled is pickled here and, if its slot still holds it (the sample moves
        on while a job is handed over), stored there as bytes: the next job copies the bytes.
        """
        sample = self._sample
        blobs: list[bytes] = []
        for i in range(start, end):
            item = fit[i]
            if isinstance(item, bytes):
                blobs.append(item)
                continue
            blob = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
            if i < len(sample) and sample[i] is item:
                sample[i] = blob
            blobs.append(blob)
        return pickle.dumps(blobs, protocol=pickle.HIGHEST_PROTOCOL)

    def job(self) -> tuple[list[Entry], list[Entry]]:
        """(fit entries, holdout entries), copies; restarts the ``every_outcomes`` count."""
        sample, recent = self.job_parts()
        fit = [item if isinstance(item, tuple) else pickle.loads(item) for item in sample]
        return fit, recent


@dataclass(frozen=True, slots=True)
class RefitResult:
    """A fitted candidate and the guard's verdict (figures on the holdout window)."""

    model: OutputLengthModel
    accepted: bool
    reason: str
    tau_refit: float | None
    tau_served: float | None
    log_mae_refit: float
    log_mae_served: float
    coverage_refit: float
    fit_n: int
    holdout_n: int
    duration_s: float
    # Per group with >= ``min_group_outcomes`` holdout outcomes: n, tau and log-MAE of refit and served.
    groups: dict[str, dict[str, float | None]] = field(default_factory=dict)


def _add_delta(
    base: OutputLengthModel,
    vocabulary: dict[str, int],
    delta_mu: np.ndarray,
    delta_intercept: float,
    delta_scale: dict[int, float],
    scale_intercept: float,
    k50: float,
    k90: float,
) -> OutputLengthModel:
    unigrams = dict(base.unigrams)
    bigrams = {a: dict(inner) for a, inner in base.bigrams.items()}
    categorical: dict[str, Weights] = dict(base.categorical)
    for term, column in vocabulary.items():
        d = float(delta_mu[column])
        kind, name = term[:2], term[2:]
        if kind == "u:":
            unigrams[name] = unigrams.get(name, 0.0) + d
        elif kind == "b:":
            a, _, b = name.partition(" ")
            inner = bigrams.setdefault(a, {})
            inner[b] = inner.get(b, 0.0) + d
        else:
            w_mu, w_s = categorical.get(name, (0.0, 0.0))
            categorical[name] = (w_mu + d, w_s + delta_scale.get(column, 0.0))
    intercept = (base.intercept[0] + delta_intercept, base.intercept[1] + scale_intercept)
    metadata = {**base.metadata, "refit": {"fit_n": None}}
    return OutputLengthModel(
        intercept=intercept,
        k50=k50,
        k90=k90,
        scale_floor=base.scale_floor,
        unigrams=unigrams,
        bigrams=bigrams,
        categorical=categorical,
        metadata=metadata,
    )


def fit_refit(base: OutputLengthModel, entries: Sequence[Entry], params: RefitParams) -> OutputLengthModel:
    """The offline model plus a ridge correction fitted on ``entries`` (module docstring)."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    from predictors.length_training import build_vocabulary, categorical_columns, design_matrix

    if len(entries) < max(10, params.n_folds):
        raise ValueError(f"need at least {max(10, params.n_folds)} outcomes to refit, got {len(entries)}")
    rows = [entry_row(e) for e in entries]
    z = np.log1p(np.asarray([max(0, e[3]) for e in entries], dtype=np.float64))
    base_scores = np.asarray([base.location_scale(r) for r in rows], dtype=np.float64)
    base_mu, base_s = base_scores[:, 0], base_scores[:, 1]
    # Every outcome its own group: the proxy does not know conversations; repeated prompts of one
    # tenant then count as several pieces of evidence, which is what they are for that tenant.
    vocabulary = build_vocabulary(rows, [str(i) for i in range(len(rows))], params.min_count)
    x = design_matrix(rows, vocabulary)
    target = z - base_mu
    location = Ridge(alpha=params.alpha).fit(x, target)
    oof = np.empty_like(z)
    for train_idx, test_idx in KFold(n_splits=params.n_folds).split(x):
        fold = Ridge(alpha=params.alpha).fit(x[train_idx], target[train_idx])
        oof[test_idx] = fold.predict(x[test_idx])
    residual = target - oof  # z - (mu_offline + delta_oof)
    columns = categorical_columns(vocabulary)
    x_scale = x[:, columns]
    scale = Ridge(alpha=params.alpha_scale).fit(x_scale, np.abs(residual) - base_s)
    s_hat = np.maximum(base_s + scale.predict(x_scale), base.scale_floor)
    k50, k90 = (float(v) for v in np.quantile(residual / s_hat, [0.5, 0.9]))
    delta_scale = dict(zip(columns.tolist(), scale.coef_.tolist(), strict=True))
    model = _add_delta(
        base,
        vocabulary,
        location.coef_,
        float(location.intercept_),
        delta_scale,
        float(scale.intercept_),
        k50,
        k90,
    )
    model.metadata["refit"] = {"fit_n": len(entries), "vocabulary": len(vocabulary), "alpha": params.alpha}
    return model


def _p50_p90(model: OutputLengthModel, row: LengthFeatureRow) -> tuple[float, float]:
    mu, s = model.location_scale(row)
    mu = min(max(mu, 0.0), MAX_LOG_TOKENS)
    scale = max(s, model.scale_floor)
    return math.expm1(mu + model.k50 * scale), math.expm1(mu + model.k90 * scale)


def _tau(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import kendalltau

    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    value = float(kendalltau(a, b)[0])
    return None if math.isnan(value) else value


def _group_figures(
    holdout: Sequence[Entry], truth: np.ndarray, served: np.ndarray, predicted: np.ndarray, min_n: int
) -> dict[str, dict[str, float | None]]:
    """Tau and log-MAE of candidate and served p50 per group with at least ``min_n`` holdout outcomes."""
    if min_n <= 0:
        return {}
    index: dict[str, list[int]] = {}
    for i, entry in enumerate(holdout):
        index.setdefault(entry[5], []).append(i)
    out: dict[str, dict[str, float | None]] = {}
    for group, rows in sorted(index.items()):
        if len(rows) < min_n:
            continue
        idx = np.asarray(rows)
        t, old, new = truth[idx], served[idx], predicted[idx]
        out[group] = {
            "n": float(len(rows)),
            "tau_refit": _tau(new, t),
            "tau_served": _tau(old, t),
            "log_mae_refit": float(np.mean(np.abs(np.log1p(new) - np.log1p(t)))),
            "log_mae_served": float(np.mean(np.abs(np.log1p(np.maximum(old, 0.0)) - np.log1p(t)))),
        }
    return out


def _group_verdict(groups: dict[str, dict[str, float | None]], params: RefitParams) -> str | None:
    """The first group the candidate makes worse beyond the margins (a reason), or None."""
    for group, g in groups.items():
        tau_new, tau_old = g["tau_refit"], g["tau_served"]
        if tau_old is not None and (tau_new is None or tau_new < tau_old - params.group_max_tau_loss):
            return f"group {group}: tau {tau_new} below served {tau_old:.4f} - {params.group_max_tau_loss}"
        mae_new, mae_old = float(g["log_mae_refit"] or 0.0), float(g["log_mae_served"] or 0.0)
        if mae_new > mae_old + params.group_max_log_mae_loss:
            return f"group {group}: log-MAE {mae_new:.4f} worse than served {mae_old:.4f}"
    return None


def judge(
    candidate: OutputLengthModel, holdout: Sequence[Entry], params: RefitParams
) -> tuple[bool, str, dict[str, float | None], dict[str, dict[str, float | None]]]:
    """The guard: does ``candidate`` beat the served p50s on the holdout window, pooled, without
    making any sizeable group worse? (verdict, reason, pooled figures, per-group figures)

    Why per group: the pooled holdout is dominated by the largest groups, so a candidate that helps
    a large tenant could be swapped in while ranking a small one worse (in-distribution hh_rlhf,
    ~6 % of the mixed stream, lost 0.021 tau that way: docs/predictors.md, "Background refit").
    """
    truth = np.asarray([e[3] for e in holdout], dtype=np.float64)
    served = np.asarray([e[4] for e in holdout], dtype=np.float64)
    predicted = np.asarray([_p50_p90(candidate, entry_row(e)) for e in holdout], dtype=np.float64)
    tau_new, tau_old = _tau(predicted[:, 0], truth), _tau(served, truth)
    mae_new = float(np.mean(np.abs(np.log1p(predicted[:, 0]) - np.log1p(truth))))
    mae_old = float(np.mean(np.abs(np.log1p(np.maximum(served, 0.0)) - np.log1p(truth))))
    coverage = float(np.mean(truth <= predicted[:, 1]))
    figures: dict[str, float | None] = {
        "tau_refit": tau_new,
        "tau_served": tau_old,
        "log_mae_refit": mae_new,
        "log_mae_served": mae_old,
        "coverage_refit": coverage,
    }
    groups = _group_figures(holdout, truth, served, predicted[:, 0], params.min_group_outcomes)
    if tau_new is None:
        return False, "refit ranks nothing (constant predictions)", figures, groups
    if tau_old is not None and tau_new < tau_old + params.min_tau_gain:
        reason = f"tau {tau_new:.4f} not above served {tau_old:.4f} + {params.min_tau_gain}"
        return False, reason, figures, groups
    if mae_new > mae_old + params.max_log_mae_loss:
        return False, f"log-MAE {mae_new:.4f} worse than served {mae_old:.4f}", figures, groups
    if abs(coverage - 0.9) > params.coverage_band:
        return False, f"P90 coverage {coverage:.3f} outside 0.9 +- {params.coverage_band}", figures, groups
    worse = _group_verdict(groups, params)
    if worse is not None:
        return False, worse, figures, groups
    return True, "better than served", figures, groups


def run_refit(
    base: OutputLengthModel, fit: Sequence[Entry], holdout: Sequence[Entry], params: RefitParams
) -> RefitResult:
    """Fit and judge one candidate: the job a worker process runs (top-level, picklable arguments)."""
    started = time.perf_counter()  # duration of the worker's own job, reported as a metric only
    candidate = fit_refit(base, fit, params)
    accepted, reason, figures, groups = judge(candidate, holdout, params)
    if accepted:
        # The guard has validated the recipe on outcomes it did not fit; what is served is the same
        # recipe on all of them. Otherwise the holdout's outcomes would be lost by the reset of the
        # online corrections (they are in neither the refit nor the reset weights).
        candidate = fit_refit(base, [*fit, *holdout], params)
    return RefitResult(
        model=candidate,
        accepted=accepted,
        reason=reason,
        tau_refit=figures["tau_refit"],
        tau_served=figures["tau_served"],
        log_mae_refit=float(figures["log_mae_refit"] or 0.0),
        log_mae_served=float(figures["log_mae_served"] or 0.0),
        coverage_refit=float(figures["coverage_refit"] or 0.0),
        fit_n=len(fit),
        holdout_n=len(holdout),
        duration_s=time.perf_counter() - started,
        groups=groups,
    )


def run_refit_encoded(
    job: Callable[[OutputLengthModel, list[Entry], list[Entry], RefitParams], RefitResult],
    base_blob: bytes,
    fit_blobs: Sequence[bytes],
    holdout_blobs: Sequence[bytes],
    params: RefitParams,
) -> RefitResult:
    """``job`` (``run_refit``) on arguments the proxy pickled itself, in slices on its loop
    (``router.length_refit``): the worker unpickles them here (bytes its own proxy pickled).

    A fit blob is a pickled list of the sample's entries, each pickled
    (``RefitReservoir.encode_fit``); a holdout blob a pickled list of entries.
    """
    base = pickle.loads(base_blob)
    fit = [pickle.loads(entry) for blob in fit_blobs for entry in pickle.loads(blob)]
    holdout = [entry for blob in holdout_blobs for entry in pickle.loads(blob)]
    result = job(base, fit, holdout, params)
    if result.accepted:
        return result
    # A rejected candidate is never served: sent back whole, its ~40k weights were unpickled in the
    # proxy's process and freed on its loop (~10-20 ms of the proxy's CPU per job) for nothing.
    return replace(result, model=without_weights(result.model))


def without_weights(model: OutputLengthModel) -> OutputLengthModel:
    """``model``'s intercept, quantile factors and metadata only (what a log line of a rejected
    refit may read)."""
    metadata = {**model.metadata, "weights": "dropped: rejected refit candidate"}
    return OutputLengthModel(
        intercept=model.intercept,
        k50=model.k50,
        k90=model.k90,
        scale_floor=model.scale_floor,
        unigrams={},
        bigrams={},
        categorical={},
        metadata=metadata,
    )


@dataclass(slots=True)
class RefitStats:
    """Counters for metrics and the debug view."""

    refits: int = 0
    swaps: int = 0
    rejected: int = 0
    failed: int = 0
    last_duration_s: float = 0.0
    last_reason: str = ""
    replayed: int = 0  # outcomes that arrived during a job, replayed into the online state after a swap
    replay_dropped: int = 0  # ... beyond the bound (``holdout``), not replayed
