"""Per-backend TTFT and TPOT model, linear in load terms, with coefficients learned online per backend.

Shape (formulas.md §3 and §9; the simulated engine's step time is
``b0 + b1 * prefill tokens in the step + b2 * decode tokens in the step``)::

    TTFT_b = t0 + t1 * new_k + t2 * queued_k + t3 * waiting + t4 * running + t5 * kv_decode_k
             + t6 * slot_queue
    TPOT_b = p0 + p1 * batch + p2 * context_k

    new_k       uncached prompt tokens of this request / 1000 (prompt - prefix-index match on b)
    queued_k    prompt tokens of requests on b still awaiting their first byte / 1000
                (``awaiting_prompt_tokens``; else in-flight prompt tokens x awaiting / in-flight),
                times (1 - engine prefix hit rate) when the engine reports one
    waiting     requests ahead in b's queue: max(Sluice's awaiting-first-byte, engine waiting)
    running     decoding requests: max(Sluice's in-flight - awaiting, engine running)
    kv_decode_k predicted remaining decode tokens on b / 1000, times KV pressure
                max(0, kv_use - 0.8) / 0.2 (zero until the KV cache is 80% full)
    slot_queue  requests (this one included) that must wait for a running one to finish before
                they get a sequence slot: running + waiting + 1 - S, at least 0, with S = the
                backend's learned slot limit (``slot_limit_evidence``: the most requests the engine
                reported running while it held a standing queue; ``LatencyModel.slot_limit``;
                S <= running means the backend is full now); 0 until such a queue was seen
    batch       running + waiting + 1 (the batch this request will decode in)
    context_k   (in-flight prompt tokens + this prompt) / 1000 (attention reads per step)

``prefill_ms = t0 + t1 * new_k``, ``queue_wait_ms`` is the rest of TTFT, and
``e2e_ms = ttft_ms + (p50 output tokens - 1) * tpot_ms``.

Why ``slot_queue``: an engine runs at most ``max_num_seqs`` sequences (vLLM: 256); beyond that a new
request waits until running ones *finish*, which takes decode time, not prefill time, so its TTFT
grows by roughly one completion interval per request ahead of it. Near saturation this is most of
the TTFT (issue-6 fleet, ShareGPT at 190 req/s: H100s and A100s sit at 256 running with 50-130
waiting). ``waiting`` alone cannot express it: below the limit a waiting request waits only for
prefill budget (milliseconds), at the limit for completions (~19 ms each on an H100, ~57 ms on an
A100 there), and one slope learned mostly below the limit under-predicted an A100's TTFT 3.5x at
the limit (median 413 ms predicted, 1,429 ms actual), so the SLO filter kept sending it requests
that missed. The limit is not configured anywhere Sluice can read, but it is observable exactly when
it matters: a full backend reports it as its running count (``engine_running``) while requests
queue behind it (``engine_waiting``); see ``slot_limit_evidence`` for why only then.

Learning: each backend keeps, for TTFT and for TPOT, a ridge regression with
exponential forgetting (``forgetting`` per observation, ~1/(1-forgetting)
samples of memory) on relative error (each sample weighted ``1/y^2``, so the
fit minimises squared percentage error, which is what MAPE judges; for TTFT
``y`` is at least ``ttft_weight_floor_ms``, see ``LatencyPriors``), shrunk to
a Gaussian prior ``N(prior, (prior_sd)^2)`` per coefficient. The prior keeps a
backend with no data at generic 8B-class speeds and keeps a coefficient that
the data cannot see (e.g. KV pressure on an idle backend) from drifting.
Coefficients are constrained to be >= 0 (more load never makes a request
faster) by an active-set re-solve. An H100 and an A100 thus learn different
``t1`` and TPOT speeds from their own outcomes, without ``gpu_class`` being used.

TPOT is learnt on a shared shape: ``TPOT = per_slot * (batch + offset) +
p2 * context_k`` (``p0 = per_slot * offset``, ``p1 = per_slot``, offset 32
batch slots), against the mean of the load at dispatch and at the request's
end (``decode_load``). Learning a free intercept per backend from the load at
dispatch made sluice_predictive herd: see ``LatencyModel.observe``.

Memory is bounded: at most ``max_backends`` backends (LRU by last observation).
Prediction is plain Python arithmetic over tuples. Learning folds each
observation into the normal equations (a few multiply-adds) and re-solves the
6x6 system (~13 us as Python loops, ~3 us written out per dimension; numpy's call overhead would cost more)
after every observation for a backend's first ``warmup_samples`` and then
every ``solve_every`` observations: with ~1/(1-forgetting) = 500 samples of
memory, coefficients 7 samples late differ from fresh ones by about 1% of the
memory's weight, and the solve was the largest single cost of the learning
path at thousands of requests per second.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from core import native
from core.cost_table import CostTable
from core.types import BackendCostEstimate, BackendView, Health, RequestFeatures
from predictors.cost_columns import FleetColumns
from predictors.slots import slot_setters

TTFT_TERMS = ("overhead", "new_k", "queued_k", "waiting", "running", "kv_decode_k", "slot_queue")
TPOT_TERMS = ("overhead", "batch", "context_k")  # the prediction's form: p0 + p1 batch + p2 context_k
TPOT_LEARNT = ("per_slot", "context_k")  # what is learnt: p0 = per_slot x offset, p1 = per_slot
KV_PRESSURE_START_FRAC = 0.8
_MIN_MS = 0.01


@dataclass(frozen=True, slots=True)
class LatencyPriors:
    """Prior coefficients (ms per unit of each term) and learning constants.

    Defaults sit between the BLIS H100 and A100-80GB fits for an 8B model
    (formulas.md §9: prefill 17-48 us/token, step 5.8-16 ms, 6-18 us per decode
    token), with a prior sd of ``relative_sd`` x the prior (at least ``sd_floor``),
    i.e. weak: about twenty observations outweigh it.
    """

    ttft_ms: tuple[float, ...] = (15.0, 35.0, 35.0, 4.0, 0.05, 5.0, 20.0)
    tpot_ms: tuple[float, ...] = (0.3, 0.05)
    ttft_sd_floor: tuple[float, ...] = (5.0, 10.0, 10.0, 2.0, 0.5, 5.0, 10.0)
    tpot_sd_floor: tuple[float, ...] = (0.1, 0.2)
    tpot_batch_offset: float = 32.0
    relative_sd: float = 2.0
    noise_rel: float = 0.25
    # TTFT samples are weighted 1/max(y, floor)^2. A floor of ~300 ms fits the deep-queue regime
    # better in ms (with pure 1/y^2 weights a 20 ms sample outweighs a 1.5 s one 5,600 times; the
    # issue-6 fleet's A100s at ShareGPT 190 req/s were predicted 1.4-2.6x low at p90, 1.3-1.4x with
    # 300 ms), but admission reads the same predictions, and in the overload benchmark 300 ms cost
    # round robin + admission its critical goodput (73.6 and 80.8 % in seeds 3 and 6, 89.0 % in
    # seed 1, against 95.4-98.8 % with 1 ms; docs/policies.md). So the default stays relative
    # error (1 ms, i.e. 1/y^2 for any real TTFT); raise it for a fleet run without admission.
    ttft_weight_floor_ms: float = 1.0
    forgetting: float = 0.998
    max_backends: int = 4096
    warmup_samples: int = 32
    solve_every: int = 8

    def __post_init__(self) -> None:
        if len(self.ttft_ms) != len(TTFT_TERMS) or len(self.ttft_sd_floor) != len(TTFT_TERMS):
            raise ValueError(f"TTFT priors need {len(TTFT_TERMS)} values: {TTFT_TERMS}")
        if len(self.tpot_ms) != len(TPOT_LEARNT) or len(self.tpot_sd_floor) != len(TPOT_LEARNT):
            raise ValueError(f"TPOT priors need {len(TPOT_LEARNT)} values: {TPOT_LEARNT}")
        if not 0 < self.forgetting <= 1 or self.noise_rel <= 0 or self.relative_sd <= 0:
            raise ValueError("need 0 < forgetting <= 1, noise_rel > 0, relative_sd > 0")
        if self.ttft_weight_floor_ms < 1.0:
            raise ValueError("ttft_weight_floor_ms must be >= 1 ms")
        if self.tpot_batch_offset <= 0:
            raise ValueError("tpot_batch_offset must be > 0")
        if min(self.ttft_ms + self.tpot_ms) < 0 or self.max_backends < 1:
            raise ValueError("prior coefficients must be >= 0 and max_backends >= 1")
        if self.warmup_samples < 0 or self.solve_every < 1:
            raise ValueError("need warmup_samples >= 0 and solve_every >= 1")


def _solve_spd(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    """Solve ``matrix @ x = rhs`` for a small symmetric positive-definite matrix (Cholesky, pure Python).

    Reads only the upper triangle (``matrix[j][i]``, ``j <= i``): ``ForgettingRidge`` keeps no other.
    Plain Python floats beat numpy by ~5x at this size (numpy's per-call overhead dominates a 6x6
    solve), and the loops are written out per dimension (``_solver``).
    """
    return _solver(len(rhs))(matrix, rhs)


_Vec = tuple[float, ...]
_Fold = Callable[[list[list[float]], list[float], _Vec, float, float, float, _Vec, _Vec], None]


# Whether this module runs as the mypyc extension: ``core.native`` decided it before any compiled module
# was imported (docs/compiled.md), so its answer is the one source of truth, stale builds included.
_COMPILED = __name__ in native.STATUS.compiled


def _fold_loop(
    m: list[list[float]],
    r: list[float],
    terms: _Vec,
    observed: float,
    weight: float,
    keep: float,
    refill_precision: _Vec,
    refill_prior: _Vec,
) -> None:
    """``ForgettingRidge``'s forgetting step as loops: what ``_fold_step`` runs in the compiled build.

    The same operations in the same order as the written-out form, so the same floats
    (tests/unit/test_latency_model.py compares both with the definition).
    """
    dim = len(terms)
    for i in range(dim):
        x_i = terms[i]
        w = weight * x_i
        row = m[i]
        row[i] = row[i] * keep + w * x_i + refill_precision[i]
        for j in range(i + 1, dim):
            row[j] = row[j] * keep + w * terms[j]
        r[i] = r[i] * keep + w * observed + refill_prior[i]


@cache
def _fold_step(dim: int) -> _Fold:
    """``ForgettingRidge``'s forgetting step for ``dim`` terms, written out (no loops, no range objects).

    Per row ``i``: ``M[i][j] = M[i][j] * keep + (weight * x_i) * x_j`` for ``j >= i``, the diagonal
    then gets ``+ refill_precision[i]``, and ``r[i] = r[i] * keep + (weight * x_i) * y + refill_prior[i]``:
    the loop's operations in the loop's order, so the same floats (tests/unit/test_latency_model.py
    compares the two). The loop form cost ~3 us per 6-term sample, this one ~1.3 us. Compiled, the
    written-out function would stay interpreted (it is generated at run time), so the compiled build
    runs ``_fold_loop`` instead, as native code.
    """
    if _COMPILED:
        return _fold_loop
    names = ", ".join(f"x{i}" for i in range(dim))
    lines = [
        "def fold(m, r, terms, observed, weight, keep, refill_precision, refill_prior):",
        f"    ({names},) = terms",
    ]
    for i in range(dim):
        lines += [f"    w = weight * x{i}", f"    row = m[{i}]"]
        lines.append(f"    row[{i}] = row[{i}] * keep + w * x{i} + refill_precision[{i}]")
        lines += [f"    row[{j}] = row[{j}] * keep + w * x{j}" for j in range(i + 1, dim)]
        lines.append(f"    r[{i}] = r[{i}] * keep + w * observed + refill_prior[{i}]")
    namespace: dict[str, object] = {}
    exec("\n".join(lines), namespace)  # generated from ``dim`` alone
    fold: _Fold = namespace["fold"]  # type: ignore[assignment]
    return fold


@cache
def _solver(dim: int) -> Callable[[list[list[float]], list[float]], list[float]]:
    """``_solve_spd`` for ``dim`` unknowns, written out: the loops' operations in the loops' order.

    Cholesky entries, the forward and the back substitution each become one expression whose
    subtractions run left to right as the loop's ``total -= ...`` did, so every float is the same
    (tests/unit/test_latency_model.py compares them); a 6x6 solve ~3x faster.
    """
    lines = ["def solve(matrix, rhs):"]
    lines += [f"    m{j} = matrix[{j}]" for j in range(dim)]
    for i in range(dim):
        for j in range(i + 1):
            terms = "".join(f" - l{i}_{k} * l{j}_{k}" for k in range(j))
            lines.append(f"    total = m{j}[{i}]{terms}")
            if i == j:
                lines.append(f"    l{i}_{i} = sqrt(total if total > 1e-300 else 1e-300)")
            else:
                lines.append(f"    l{i}_{j} = total / l{j}_{j}")
    for i in range(dim):
        terms = "".join(f" - l{i}_{k} * y{k}" for k in range(i))
        lines.append(f"    y{i} = (rhs[{i}]{terms}) / l{i}_{i}")
    for i in range(dim - 1, -1, -1):
        terms = "".join(f" - l{k}_{i} * x{k}" for k in range(i + 1, dim))
        lines.append(f"    x{i} = (y{i}{terms}) / l{i}_{i}")
    lines.append("    return [" + ", ".join(f"x{i}" for i in range(dim)) + "]")
    namespace: dict[str, object] = {"sqrt": math.sqrt}
    exec("\n".join(lines), namespace)  # generated from ``dim`` alone
    solve: Callable[[list[list[float]], list[float]], list[float]] = namespace["solve"]  # type: ignore[assignment]
    return solve


class ForgettingRidge:
    """Non-negative ridge regression toward a prior, with exponential forgetting of old samples.

    Solves ``(A + P) coef = b + P prior`` after each sample, where
    ``A = sum lambda^age w x x^T`` and ``b = sum lambda^age w y x`` forget old
    samples and the prior precision ``P`` does not. It keeps ``M = A + P``
    and ``r = b + P prior`` directly: one forgetting step is
    ``M <- lambda M + (1 - lambda) P + w x x^T`` (likewise ``r``).
    The solve runs after every sample for the first ``warmup_samples`` and
    then every ``solve_every`` samples (module doc). ``M`` is symmetric and only
    its upper triangle (``M[i][j]``, ``j >= i``) is kept up to date: the update
    was mirroring 15 of its 36 entries per sample for a solve that reads one half.
    """

    __slots__ = (
        "_fold",
        "_forgetting",
        "_m",
        "_pending",
        "_prior_mean",
        "_prior_precision",
        "_r",
        "_refill_precision",
        "_refill_prior",
        "_solve_every",
        "_updates",
        "_warmup",
        "coef",
        "n",
    )

    def __init__(self, prior: tuple[float, ...], sd_floor: tuple[float, ...], priors: LatencyPriors) -> None:
        self._prior_mean = tuple(float(v) for v in prior)
        self._prior_precision = tuple(
            1.0 / max(priors.relative_sd * m, floor) ** 2 for m, floor in zip(prior, sd_floor, strict=True)
        )
        dim = len(prior)
        self._m = [[self._prior_precision[i] if i == j else 0.0 for j in range(dim)] for i in range(dim)]
        self._r = [p * m for p, m in zip(self._prior_precision, self._prior_mean, strict=True)]
        self._forgetting = priors.forgetting
        refill = 1.0 - priors.forgetting
        # Per-sample constants of the forgetting step, computed as the step wrote them inline.
        self._refill_precision = tuple(refill * p for p in self._prior_precision)
        self._refill_prior = tuple(
            refill * p * m for p, m in zip(self._prior_precision, self._prior_mean, strict=True)
        )
        self._warmup = priors.warmup_samples
        self._solve_every = priors.solve_every
        self._fold = _fold_step(dim)
        self._updates = 0  # samples folded in, ever
        self._pending = 0  # samples folded in since the last solve
        self.coef: tuple[float, ...] = self._prior_mean
        self.n = 0.0

    def update(self, terms: tuple[float, ...], observed: float, weight: float) -> bool:
        """Fold one sample in; returns whether ``coef`` was re-solved."""
        keep = self._forgetting
        refill_precision, refill_prior = self._refill_precision, self._refill_prior
        self._fold(self._m, self._r, terms, observed, weight, keep, refill_precision, refill_prior)
        self.n = self.n * keep + 1.0
        self._updates += 1
        self._pending += 1
        if self._updates > self._warmup and self._pending < self._solve_every:
            return False
        self._pending = 0
        self.coef = self._solve()
        return True

    def _solve(self) -> tuple[float, ...]:
        """Posterior mode under ``coef >= 0`` (active set: pin negatives at 0, re-solve the rest)."""
        m, r = self._m, self._r
        solution = _solve_spd(m, r)
        if min(solution) >= 0.0:
            return tuple(solution)
        free = [i for i, value in enumerate(solution) if value >= 0.0]
        coef = [0.0] * len(r)
        while free:
            sub = [[m[i][j] if i <= j else m[j][i] for j in free] for i in free]  # upper half kept
            solution = _solve_spd(sub, [r[i] for i in free])
            if min(solution) >= 0.0:
                for i, value in zip(free, solution, strict=True):
                    coef[i] = value
                break
            free = [i for i, value in zip(free, solution, strict=True) if value >= 0.0]
        return tuple(coef)


class _BackendModel:
    __slots__ = ("tpot", "ttft")

    def __init__(self, priors: LatencyPriors) -> None:
        self.ttft = ForgettingRidge(priors.ttft_ms, priors.ttft_sd_floor, priors)
        self.tpot = ForgettingRidge(priors.tpot_ms, priors.tpot_sd_floor, priors)


BackendLoad = tuple[float, float, float, float, float, float, float]


SLOT_EVIDENCE_WAITING_FRAC = 0.125


def slot_limit_evidence(view: BackendView) -> int:
    """The engine's running count when its own fresh metrics show it holding requests for a slot, else 0.

    Why not simply the most requests seen running: in front of a backend whose concurrency Sluice's
    admission limits (or whose load never reaches its limit), that is Sluice's cap or the load, not
    the engine's ``max_num_seqs``, and a slot term firing at it predicts a wait the engine does not
    have (the overload scenario's A100s: learned 193-217 against an engine limit of 256, and admission
    refused critical requests it could have served). An engine at its slot limit reports a standing
    waiting queue; one held back only by its per-step prefill token budget reports a few prompts.
    So a sample counts only with the engine's own running and waiting counts, and a waiting queue of
    at least an eighth of the running batch (the issue-6 fleet at saturation: 50-130 waiting at 256
    running; the overload scenario under admission: at most ~14 waiting at ~170 running).
    """
    if view.metrics_stale:
        return 0
    running = view.engine_running
    waiting = view.engine_waiting
    if running is None or waiting is None or running <= 0:
        return 0
    return running if waiting >= max(1.0, running * SLOT_EVIDENCE_WAITING_FRAC) else 0


def slot_queue(running: int, waiting: int, slot_limit: int) -> float:
    """Requests, a new one included, waiting for a sequence slot to free (module doc); 0 without a limit."""
    if slot_limit <= 0:
        return 0.0
    queue = running + waiting + 1 - (slot_limit if slot_limit > running else running)
    return float(queue) if queue > 0 else 0.0


def backend_load(view: BackendView, slot_limit: int = 0) -> BackendLoad:
    """The request-independent terms of a backend (see the module doc).

    ``(queued_k, waiting, running, kv_decode_k, batch, in_flight_prompt_k, slot_queue)``;
    ``request_terms`` adds the request. The single definition used both to
    predict and to learn. ``slot_limit``: the backend's learned limit
    (``LatencyModel.slot_limit``; 0 = none known).
    """
    fresh = not view.metrics_stale
    awaiting = view.awaiting_first_byte
    in_flight = view.in_flight_requests
    running = in_flight - awaiting if in_flight > awaiting else 0
    waiting = awaiting
    if fresh:
        engine_running = view.engine_running
        if engine_running is not None and engine_running > running:
            running = engine_running
        engine_waiting = view.engine_waiting
        if engine_waiting is not None and engine_waiting > waiting:
            waiting = engine_waiting
    in_flight_prompt = view.in_flight_prompt_tokens
    queued_tokens = view.awaiting_prompt_tokens
    if queued_tokens is not None:
        queued = float(queued_tokens)
    else:
        queued = in_flight_prompt * awaiting / in_flight if in_flight > 0 else 0.0
    decode = view.in_flight_predicted_decode_tokens
    kv = None
    if fresh:
        hit_rate = view.prefix_hit_rate
        if hit_rate is not None:
            queued *= 1.0 - min(max(hit_rate, 0.0), 1.0)
        kv = view.kv_usage_frac
    if kv is None:
        capacity = view.kv_capacity_tokens
        if capacity:
            kv = (in_flight_prompt + decode) / capacity
    kv_decode_k = 0.0
    if kv is not None and kv > KV_PRESSURE_START_FRAC and decode > 0:
        kv_decode_k = decode / 1000.0 * (kv - KV_PRESSURE_START_FRAC) / (1.0 - KV_PRESSURE_START_FRAC)
    return (
        queued / 1000.0,
        float(waiting),
        float(running),
        kv_decode_k,
        float(running + waiting + 1),
        in_flight_prompt / 1000.0,
        slot_queue(running, waiting, slot_limit),
    )


def request_terms(
    load: BackendLoad, prompt_tokens: int, matched_tokens: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The TTFT and TPOT regressor vectors (``TTFT_TERMS``, ``TPOT_TERMS``) of a request on a backend."""
    queued_k, waiting, running, kv_decode_k, batch, in_flight_prompt_k, slots = load
    new_k = max(0, prompt_tokens - max(0, matched_tokens)) / 1000.0
    ttft = (1.0, new_k, queued_k, waiting, running, kv_decode_k, slots)
    return ttft, (1.0, batch, in_flight_prompt_k + prompt_tokens / 1000.0)


def decode_load(tpot_terms: tuple[float, ...], load_at_end: BackendLoad) -> tuple[float, ...]:
    """TPOT regressors over a request's decode: the mean of those at dispatch and at its end.

    ``load_at_end`` is read while the request is still in flight, so it
    already counts the request itself (its batch slot and its prompt), which
    the dispatch terms add explicitly: the end point's batch is ``batch - 1``
    and its context the in-flight prompt tokens alone. The mean is a
    two-point (trapezoid) estimate of the load the request decoded with.
    """
    overhead, batch, context_k = tpot_terms
    end_batch = load_at_end[4] - 1.0 if load_at_end[4] > 1.0 else 1.0
    end_context_k = load_at_end[5]
    return (overhead, 0.5 * (batch + end_batch), 0.5 * (context_k + end_context_k))


# Built without the frozen ``__init__`` (predictors.slots): sixteen per request were a third of the
# latency budget.
_SETTERS = slot_setters(
    BackendCostEstimate,
    ("backend_id", "queue_wait_ms", "prefill_ms", "ttft_ms", "tpot_ms", "e2e_ms", "cached_prompt_tokens"),
)


def tpot_form(learnt: tuple[float, ...], batch_offset: float) -> tuple[float, ...]:
    """The prediction's ``(p0, p1, p2)`` from the learnt ``(per_slot, context_k)``: p0 = per_slot x offset."""
    per_slot, context = learnt
    return (per_slot * batch_offset, per_slot, context)


def learnt_tpot_terms(tpot_terms: tuple[float, ...], batch_offset: float) -> tuple[float, float]:
    """``(batch + offset, context_k)``: the regressors of ``TPOT_LEARNT`` from the ``TPOT_TERMS`` vector."""
    return (tpot_terms[1] + batch_offset, tpot_terms[2])


def _per_token(ttft: tuple[float, ...], tpot: tuple[float, ...], slot_limit: int) -> tuple[float, ...]:
    """``(t0, t1, t2, t3, t4, t5, p0, p1, p2, t6, slot_limit)``, the ``*_k`` coefficients divided by 1000."""
    t0, t1, t2, t3, t4, t5, t6 = ttft
    p0, p1, p2 = tpot
    return (t0, t1 / 1000.0, t2 / 1000.0, t3, t4, t5 / 1000.0, p0, p1, p2 / 1000.0, t6, float(slot_limit))


class LatencyModel:
    """Per-backend TTFT/TPOT predictor with online-learned coefficients (see the module docstring)."""

    __slots__ = ("_backends", "_coefs", "_columns", "_fast", "_fast_prior", "_prior", "_priors", "_slots")

    def __init__(self, priors: LatencyPriors | None = None) -> None:
        self._priors = priors or LatencyPriors()
        self._backends: OrderedDict[str, _BackendModel] = OrderedDict()
        # (TTFT, TPOT) coefficients per learned backend, read on the request path in one lookup.
        self._coefs: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
        self._prior = (self._priors.ttft_ms, tpot_form(self._priors.tpot_ms, self._priors.tpot_batch_offset))
        # The same coefficients per token instead of per 1000 tokens, flat: the request path's form.
        self._fast: dict[str, tuple[float, ...]] = {}
        self._fast_prior = _per_token(*self._prior, 0)
        # Each backend's learned sequence-slot limit (``slot_limit_evidence``); only ever grows.
        self._slots: dict[str, int] = {}
        # The request path's form over a whole fleet, updated per changed view (predictors.cost_columns).
        self._columns = FleetColumns(self._fast_coefficients)

    def _fast_coefficients(self, backend_id: str) -> tuple[float, ...]:
        return self._fast.get(backend_id, self._fast_prior)

    def __len__(self) -> int:
        return len(self._backends)

    def coefficients(self, backend_id: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Current (TTFT, TPOT) coefficients of a backend; the priors if it was never observed."""
        return self._coefs.get(backend_id, self._prior)

    def slot_limit(self, backend_id: str) -> int:
        """The most requests seen running on a backend (its learned sequence-slot limit; 0 = never seen)."""
        return self._slots.get(backend_id, 0)

    def estimate(
        self, view: BackendView, prompt_tokens: int, matched_tokens: int, output_p50_tokens: float
    ) -> BackendCostEstimate:
        """Cost of one request on one backend, whatever its health (``estimate_all`` for many)."""
        costs = self.estimate_all(
            (view,),
            None,
            prompt_tokens,
            {view.backend_id: matched_tokens},
            output_p50_tokens,
            selectable_only=False,
        )
        return costs[view.backend_id]

    def estimate_all(
        self,
        views: Iterable[BackendView],
        model: str | None,
        prompt_tokens: int,
        matched_tokens: Mapping[str, int],
        output_p50_tokens: float,
        *,
        selectable_only: bool = True,
    ) -> dict[str, BackendCostEstimate]:
        """Costs on every selectable view serving ``model`` (``None``: every selectable view).

        The request path: per backend one ``backend_load`` and a few
        multiplications with that backend's current coefficients.
        """
        coefs = self._fast.get
        prior = self._fast_prior
        matched_get = matched_tokens.get
        decode_steps = output_p50_tokens - 1.0 if output_p50_tokens > 1.0 else 0.0
        ready = Health.READY if selectable_only else None
        new = object.__new__
        cls = BackendCostEstimate
        set_id, set_queue, set_prefill, set_ttft, set_tpot, set_e2e, set_cached = _SETTERS
        pressure_scale = 1.0 / (1.0 - KV_PRESSURE_START_FRAC)
        out: dict[str, BackendCostEstimate] = {}
        for view in views:
            if (ready is not None and view.health is not ready) or (
                model is not None and model not in view.models
            ):
                continue
            # Inlined ``backend_load`` (kept identical by tests/unit/test_latency_model.py).
            fresh = not view.metrics_stale
            awaiting = view.awaiting_first_byte
            in_flight = view.in_flight_requests
            running = in_flight - awaiting if in_flight > awaiting else 0
            waiting = awaiting
            in_flight_prompt = view.in_flight_prompt_tokens
            queued_tokens = view.awaiting_prompt_tokens
            if queued_tokens is not None:
                queued = float(queued_tokens)
            else:
                queued = in_flight_prompt * awaiting / in_flight if in_flight > 0 else 0.0
            decode = view.in_flight_predicted_decode_tokens
            kv = None
            if fresh:
                engine = view.engine_running
                if engine is not None and engine > running:
                    running = engine
                engine = view.engine_waiting
                if engine is not None and engine > waiting:
                    waiting = engine
                hit_rate = view.prefix_hit_rate
                if hit_rate is not None and hit_rate > 0.0:
                    queued *= 1.0 - hit_rate if hit_rate < 1.0 else 0.0
                kv = view.kv_usage_frac
            if kv is None:
                capacity = view.kv_capacity_tokens
                if capacity:
                    kv = (in_flight_prompt + decode) / capacity
            backend_id = view.backend_id
            t0, t1, t2, t3, t4, t5, p0, p1, p2, t6, slot_limit = coefs(backend_id, prior)
            matched = matched_get(backend_id, 0)
            cached = 0 if matched <= 0 else (prompt_tokens if matched > prompt_tokens else matched)
            prefill_ms = t0 + t1 * (prompt_tokens - cached)
            queue_ms = t2 * queued + t3 * waiting + t4 * running
            if kv is not None and kv > KV_PRESSURE_START_FRAC and decode > 0:
                queue_ms += t5 * decode * (kv - KV_PRESSURE_START_FRAC) * pressure_scale
            if slot_limit > 0.0:
                slots = running + waiting + 1 - (slot_limit if slot_limit > running else running)
                if slots > 0:
                    queue_ms += t6 * slots
            ttft_ms = prefill_ms + queue_ms
            if ttft_ms < _MIN_MS:
                ttft_ms = _MIN_MS
            tpot_ms = p0 + p1 * (running + waiting + 1) + p2 * (in_flight_prompt + prompt_tokens)
            if tpot_ms < _MIN_MS:
                tpot_ms = _MIN_MS
            estimate = new(cls)
            set_id(estimate, backend_id)
            set_queue(estimate, queue_ms)
            set_prefill(estimate, prefill_ms)
            set_ttft(estimate, ttft_ms)
            set_tpot(estimate, tpot_ms)
            set_e2e(estimate, ttft_ms + decode_steps * tpot_ms)
            set_cached(estimate, cached)
            out[backend_id] = estimate
        return out

    def _model(self, backend_id: str) -> _BackendModel:
        model = self._backends.get(backend_id)
        if model is None:
            model = self._backends[backend_id] = _BackendModel(self._priors)
            if len(self._backends) > self._priors.max_backends:
                evicted, _ = self._backends.popitem(last=False)
                self._coefs.pop(evicted, None)
                self._fast.pop(evicted, None)
                self._slots.pop(evicted, None)
                self._columns.coefficients_changed(evicted)
        else:
            self._backends.move_to_end(backend_id)
        return model

    def observe(
        self,
        view: BackendView,
        features: RequestFeatures,
        cached_prompt_tokens: int,
        ttft_ms: float | None,
        tpot_ms: float | None,
        view_at_end: BackendView | None = None,
    ) -> None:
        """Learn from one request that ran on ``view.backend_id`` (``view`` = the state at dispatch).

        ``view_at_end`` is the same backend's latest state before the outcome
        (the decider's most recent snapshot). TTFT is learnt against the load at
        dispatch, which is what delayed it; TPOT against the mean of the load
        at dispatch and at the end (``decode_load``), because a request decodes
        alongside whatever arrives while it runs. Regressing TPOT on the load
        at dispatch alone is biased under any load-following policy: a backend
        that looks idle when a request is dispatched is the one the next
        requests are sent to, so low dispatch load goes with high TPOT, the
        fit loses its load slope, and each backend keeps a TPOT intercept set
        by its past load - the idle one looks expensive, the busy one cheap,
        and the router herds (docs/policies.md, "Herding").
        """
        if ttft_ms is None and tpot_ms is None:
            return
        backend_id = view.backend_id
        at_end = view_at_end if view_at_end is not None and view_at_end.backend_id == backend_id else None
        model = self._model(backend_id)
        known = self._slots.get(backend_id, 0)
        seen = max(slot_limit_evidence(view), slot_limit_evidence(at_end) if at_end is not None else 0)
        slots_grew = seen > known
        if slots_grew:
            known = self._slots[backend_id] = seen
        # TTFT is learnt with the limit as known now: the queue the request met at dispatch.
        load = backend_load(view, known)
        ttft_terms, tpot_terms = request_terms(load, features.prompt_tokens, cached_prompt_tokens)
        if at_end is not None:
            tpot_terms = decode_load(tpot_terms, backend_load(at_end, known))
        noise = self._priors.noise_rel
        solved = False
        if ttft_ms is not None and ttft_ms > 0:
            scale_ms = (
                ttft_ms if ttft_ms > self._priors.ttft_weight_floor_ms else self._priors.ttft_weight_floor_ms
            )
            solved = model.ttft.update(ttft_terms, ttft_ms, 1.0 / (scale_ms * noise) ** 2)
        offset = self._priors.tpot_batch_offset
        if tpot_ms is not None and tpot_ms > 0:
            learnt = learnt_tpot_terms(tpot_terms, offset)
            solved = model.tpot.update(learnt, tpot_ms, 1.0 / (max(tpot_ms, 0.5) * noise) ** 2) or solved
        if not solved and not slots_grew:
            return  # coefficients unchanged: the published ones and the cost table rows stay valid
        tpot = tpot_form(model.tpot.coef, offset)
        self._coefs[backend_id] = (model.ttft.coef, tpot)
        self._fast[backend_id] = _per_token(model.ttft.coef, tpot, known)
        self._columns.coefficients_changed(backend_id)

    def cost_table(
        self,
        views: tuple[BackendView, ...],
        model: str | None,
        prompt_tokens: int,
        matched_tokens: Mapping[str, int],
        output_p50_tokens: float,
    ) -> CostTable:
        """``estimate_all``'s values for a snapshot's backends, as a lazy table (the request path).

        Only the rows of views that changed since the previous call are
        recomputed; the request itself is a few array operations.
        """
        self._columns.sync(views)
        return self._columns.table(model, prompt_tokens, matched_tokens, output_p50_tokens)
