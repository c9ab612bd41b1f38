"""Per-backend TTFT and TPOT model, linear in load terms, with coefficients learned online per backend.

Shape (formulas.md §3 and §9; the simulated engine's step time is
``b0 + b1 * prefill tokens in the step + b2 * decode tokens in the step``)::

    TTFT_b = t0 + t1 * new_k + t2 * queued_k + t3 * waiting + t4 * running + t5 * kv_decode_k
    TPOT_b = p0 + p1 * batch + p2 * context_k

    new_k       uncached prompt tokens of this request / 1000 (prompt - prefix-index match on b)
    queued_k    prompt tokens of requests on b still awaiting their first byte / 1000
                (``awaiting_prompt_tokens``; else in-flight prompt tokens x awaiting / in-flight),
                times (1 - engine prefix hit rate) when the engine reports one
    waiting     requests ahead in b's queue: max(Sluice's awaiting-first-byte, engine waiting)
    running     decoding requests: max(Sluice's in-flight - awaiting, engine running)
    kv_decode_k predicted remaining decode tokens on b / 1000, times KV pressure
                max(0, kv_use - 0.8) / 0.2 (zero until the KV cache is 80% full)
    batch       running + waiting + 1 (the batch this request will decode in)
    context_k   (in-flight prompt tokens + this prompt) / 1000 (attention reads per step)

``prefill_ms = t0 + t1 * new_k``, ``queue_wait_ms`` is the rest of TTFT, and
``e2e_ms = ttft_ms + (p50 output tokens - 1) * tpot_ms``.

Learning: each backend keeps, for TTFT and for TPOT, a ridge regression with
exponential forgetting (``forgetting`` per observation, ~1/(1-forgetting)
samples of memory) on relative error (each sample weighted ``1/y^2``, so the
fit minimises squared percentage error, which is what MAPE judges), shrunk to
a Gaussian prior ``N(prior, (prior_sd)^2)`` per coefficient. The prior keeps a
backend with no data at generic 8B-class speeds and keeps a coefficient that
the data cannot see (e.g. KV pressure on an idle backend) from drifting.
Coefficients are constrained to be >= 0 (more load never makes a request
faster) by an active-set re-solve. An H100 and an A100 thus learn different
``t1`` and ``p0`` from their own outcomes, without ``gpu_class`` being used.

Memory is bounded: at most ``max_backends`` backends (LRU by last observation).
Prediction is plain Python arithmetic over tuples (no numpy on the request
path); numpy solves a 6x6 system once per observation.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from core.types import BackendCostEstimate, BackendView, RequestFeatures

TTFT_TERMS = ("overhead", "new_k", "queued_k", "waiting", "running", "kv_decode_k")
TPOT_TERMS = ("overhead", "batch", "context_k")
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

    ttft_ms: tuple[float, ...] = (15.0, 35.0, 35.0, 4.0, 0.05, 5.0)
    tpot_ms: tuple[float, ...] = (10.0, 0.015, 0.05)
    ttft_sd_floor: tuple[float, ...] = (5.0, 10.0, 10.0, 2.0, 0.5, 5.0)
    tpot_sd_floor: tuple[float, ...] = (3.0, 0.05, 0.2)
    relative_sd: float = 2.0
    noise_rel: float = 0.25
    forgetting: float = 0.998
    max_backends: int = 4096

    def __post_init__(self) -> None:
        if len(self.ttft_ms) != len(TTFT_TERMS) or len(self.ttft_sd_floor) != len(TTFT_TERMS):
            raise ValueError(f"TTFT priors need {len(TTFT_TERMS)} values: {TTFT_TERMS}")
        if len(self.tpot_ms) != len(TPOT_TERMS) or len(self.tpot_sd_floor) != len(TPOT_TERMS):
            raise ValueError(f"TPOT priors need {len(TPOT_TERMS)} values: {TPOT_TERMS}")
        if not 0 < self.forgetting <= 1 or self.noise_rel <= 0 or self.relative_sd <= 0:
            raise ValueError("need 0 < forgetting <= 1, noise_rel > 0, relative_sd > 0")
        if min(self.ttft_ms + self.tpot_ms) < 0 or self.max_backends < 1:
            raise ValueError("prior coefficients must be >= 0 and max_backends >= 1")


class ForgettingRidge:
    """Non-negative ridge regression toward a prior, with exponential forgetting of old samples."""

    __slots__ = ("_a", "_b", "_forgetting", "_prior_mean", "_prior_precision", "coef", "n")

    def __init__(self, prior: tuple[float, ...], sd_floor: tuple[float, ...], priors: LatencyPriors) -> None:
        mean = np.asarray(prior, dtype=np.float64)
        sd = np.maximum(priors.relative_sd * mean, np.asarray(sd_floor, dtype=np.float64))
        self._prior_mean = mean
        self._prior_precision = np.diag(1.0 / sd**2)
        dim = len(prior)
        self._a = np.zeros((dim, dim))
        self._b = np.zeros(dim)
        self._forgetting = priors.forgetting
        self.coef: tuple[float, ...] = tuple(float(v) for v in prior)
        self.n = 0.0

    def update(self, terms: tuple[float, ...], observed: float, weight: float) -> None:
        x = np.asarray(terms, dtype=np.float64)
        self._a *= self._forgetting
        self._b *= self._forgetting
        self._a += weight * np.outer(x, x)
        self._b += weight * observed * x
        self.n = self.n * self._forgetting + 1.0
        self.coef = self._solve()

    def _solve(self) -> tuple[float, ...]:
        """Posterior mode under ``coef >= 0`` (active set: pin negatives at 0, re-solve the rest)."""
        lhs = self._a + self._prior_precision
        rhs = self._b + self._prior_precision @ self._prior_mean
        free = np.ones(len(rhs), dtype=bool)
        coef = np.zeros(len(rhs))
        for _ in range(len(rhs)):
            coef[:] = 0.0
            coef[free] = np.linalg.solve(lhs[np.ix_(free, free)], rhs[free])
            negative = free & (coef < 0)
            if not negative.any():
                break
            free &= ~negative
        return tuple(float(v) for v in np.maximum(coef, 0.0))


class _BackendModel:
    __slots__ = ("tpot", "ttft")

    def __init__(self, priors: LatencyPriors) -> None:
        self.ttft = ForgettingRidge(priors.ttft_ms, priors.ttft_sd_floor, priors)
        self.tpot = ForgettingRidge(priors.tpot_ms, priors.tpot_sd_floor, priors)


def load_terms(
    view: BackendView, prompt_tokens: int, matched_tokens: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The TTFT and TPOT terms of one request on one backend (the single definition, see module doc)."""
    fresh = not view.metrics_stale
    awaiting = view.awaiting_first_byte
    in_flight = view.in_flight_requests
    running = max(0, in_flight - awaiting)
    waiting = awaiting
    if fresh:
        if view.engine_running is not None:
            running = max(running, view.engine_running)
        if view.engine_waiting is not None:
            waiting = max(waiting, view.engine_waiting)
    if view.awaiting_prompt_tokens is not None:
        queued = float(view.awaiting_prompt_tokens)
    else:
        queued = view.in_flight_prompt_tokens * awaiting / in_flight if in_flight > 0 else 0.0
    if fresh and view.prefix_hit_rate is not None:
        queued *= 1.0 - min(max(view.prefix_hit_rate, 0.0), 1.0)
    kv = view.kv_usage_frac if fresh else None
    if kv is None and view.kv_capacity_tokens:
        kv = (view.in_flight_prompt_tokens + view.in_flight_predicted_decode_tokens) / view.kv_capacity_tokens
    pressure = (kv - KV_PRESSURE_START_FRAC) / (1.0 - KV_PRESSURE_START_FRAC) if kv is not None else 0.0
    decode_k = max(0.0, view.in_flight_predicted_decode_tokens) / 1000.0
    new_tokens = max(0, prompt_tokens - max(0, matched_tokens))
    ttft_terms = (
        1.0,
        new_tokens / 1000.0,
        queued / 1000.0,
        float(waiting),
        float(running),
        decode_k * pressure if pressure > 0.0 else 0.0,
    )
    context_k = (view.in_flight_prompt_tokens + prompt_tokens) / 1000.0
    return ttft_terms, (1.0, float(running + waiting + 1), context_k)


class LatencyModel:
    """Per-backend TTFT/TPOT predictor with online-learned coefficients (see the module docstring)."""

    __slots__ = ("_backends", "_prior_tpot", "_prior_ttft", "_priors")

    def __init__(self, priors: LatencyPriors | None = None) -> None:
        self._priors = priors or LatencyPriors()
        self._backends: OrderedDict[str, _BackendModel] = OrderedDict()
        self._prior_ttft = self._priors.ttft_ms
        self._prior_tpot = self._priors.tpot_ms

    def __len__(self) -> int:
        return len(self._backends)

    def coefficients(self, backend_id: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Current (TTFT, TPOT) coefficients of a backend; the priors if it was never observed."""
        model = self._backends.get(backend_id)
        if model is None:
            return self._prior_ttft, self._prior_tpot
        return model.ttft.coef, model.tpot.coef

    def estimate(
        self, view: BackendView, prompt_tokens: int, matched_tokens: int, output_p50_tokens: float
    ) -> BackendCostEstimate:
        model = self._backends.get(view.backend_id)
        if model is None:
            tc, pc = self._prior_ttft, self._prior_tpot
        else:
            tc, pc = model.ttft.coef, model.tpot.coef
        (_, new_k, queued_k, waiting, running, kv_k), (_, batch, context_k) = load_terms(
            view, prompt_tokens, matched_tokens
        )
        prefill_ms = tc[0] + tc[1] * new_k
        queue_ms = tc[2] * queued_k + tc[3] * waiting + tc[4] * running + tc[5] * kv_k
        ttft_ms = max(prefill_ms + queue_ms, _MIN_MS)
        tpot_ms = max(pc[0] + pc[1] * batch + pc[2] * context_k, _MIN_MS)
        decode_steps = output_p50_tokens - 1.0 if output_p50_tokens > 1.0 else 0.0
        return BackendCostEstimate(
            view.backend_id,
            queue_ms,
            prefill_ms,
            ttft_ms,
            tpot_ms,
            ttft_ms + decode_steps * tpot_ms,
            min(max(matched_tokens, 0), prompt_tokens),
        )

    def _model(self, backend_id: str) -> _BackendModel:
        model = self._backends.get(backend_id)
        if model is None:
            model = self._backends[backend_id] = _BackendModel(self._priors)
            if len(self._backends) > self._priors.max_backends:
                self._backends.popitem(last=False)
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
    ) -> None:
        """Learn from one request that ran on ``view.backend_id`` (``view`` = the state at dispatch)."""
        if ttft_ms is None and tpot_ms is None:
            return
        ttft_terms, tpot_terms = load_terms(view, features.prompt_tokens, cached_prompt_tokens)
        model = self._model(view.backend_id)
        noise = self._priors.noise_rel
        if ttft_ms is not None and ttft_ms > 0:
            model.ttft.update(ttft_terms, ttft_ms, 1.0 / (max(ttft_ms, 1.0) * noise) ** 2)
        if tpot_ms is not None and tpot_ms > 0:
            model.tpot.update(tpot_terms, tpot_ms, 1.0 / (max(tpot_ms, 0.5) * noise) ** 2)
