"""The FALLBACK cost estimator: used only when a decision arrives without predictions.

Sluice's learned models live in ``predictors/`` (per-backend speeds learned
online, output-length quantiles from the prompt). When the DecisionEngine has
no predictor, or a prediction lacks a backend, policies that need costs use
this small analytic model so they stay usable and testable. It is deliberately
simple and never learns; it is not the product's predictor.

Step-time model per GPU class (BLIS fits, formulas.md §9):
``t_step = base_ms + prefill_ms_per_token·X + decode_ms_per_token·Y`` with X
uncached prefill tokens and Y decode tokens in the step. For a request with
``n`` uncached prompt tokens on a backend with ``B`` running sequences and
``Q`` queued prompt tokens ahead of it (chunked prefill of ``CHUNK_TOKENS``):

- ``queue_wait = f·(p·Q + ceil(Q/C)·(b + d·B))`` + a slot wait when the
  backend is at its ``max_concurrency``: ``excess · (D/B)/B · tpot`` (the k-th
  of B draining sequences frees after about k·mean_remaining/B steps; D is
  the predicted remaining decode tokens in flight);
- ``prefill = f·(p·n + ceil(n/C)·(b + d·B))`` (running decodes share the steps);
- ``tpot = f·(b + d·(B+1))``; ``e2e = ttft + (L-1)·tpot``.

``Q`` is Sluice's own in-flight prompt tokens scaled by the share of requests
still awaiting their first byte; ``B`` is the engine-reported running count
when fresh, else in-flight minus awaiting. ``f`` is the backend's observed
speed relative to its prior: ``ewma_tpot_ms / (b + d·max(B,1))`` clamped to
[0.25, 4] when the proxy has measured TPOT, else 1.

Priors: H100 (5.75 ms, 17.25 µs, 6.00 µs) and A100-80GB (16.44 ms, 47.84 µs,
18.21 µs) are BLIS's Llama-3.1-8B fits; the small class (L4-like, 62 ms,
124 µs, 124 µs) scales A100 by HBM bandwidth (300 vs 2,039 GB/s) for the
memory-bound terms and by dense FP16 TFLOPs (121 vs 312) for prefill.
Unknown GPU classes use the A100 prior. Output length without a prediction:
p50 130 / p90 425 tokens (Azure 2023 conversation trace), capped by ``max_tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from core.types import BackendCostEstimate, BackendView, OutputLengthEstimate, RequestFeatures

CHUNK_TOKENS = 2_048
PRIOR_P50_TOKENS = 130.0
PRIOR_P90_TOKENS = 425.0
_SPEED_FACTOR_MIN = 0.25
_SPEED_FACTOR_MAX = 4.0
_Z_090 = 1.2815515655446004  # standard normal 0.9 quantile
_MAX_REMEMBERED_LABELS = 256


@dataclass(frozen=True, slots=True)
class StepModel:
    """One engine step of a GPU class: ``base_ms + prefill_ms_per_token·X + decode_ms_per_token·Y``."""

    base_ms: float
    prefill_ms_per_token: float
    decode_ms_per_token: float


GPU_PRIORS: Mapping[str, StepModel] = MappingProxyType(
    {
        "h100": StepModel(5.75, 0.01725, 0.00600),
        "a100": StepModel(16.44, 0.04784, 0.01821),
        "small": StepModel(62.0, 0.124, 0.124),
    }
)
_PRIOR_BY_LABEL: dict[str, StepModel] = {}  # memo of prior_for: a pure function of the label
_CLASS_ALIASES: tuple[tuple[str, str], ...] = (
    ("h100", "h100"),
    ("h200", "h100"),
    ("h800", "h100"),
    ("a100", "a100"),
    ("a800", "a100"),
    ("l4", "small"),
    ("a10", "small"),
    ("t4", "small"),
    ("small", "small"),
)


def prior_for(gpu_class: str) -> StepModel:
    """The step-time prior of a GPU label (substring match, e.g. ``h100-8b`` -> h100); A100 if unknown."""
    model = _PRIOR_BY_LABEL.get(gpu_class)
    if model is not None:
        return model
    label = gpu_class.lower()
    model = next((GPU_PRIORS[key] for needle, key in _CLASS_ALIASES if needle in label), GPU_PRIORS["a100"])
    if len(_PRIOR_BY_LABEL) < _MAX_REMEMBERED_LABELS:  # labels come from config: a handful
        _PRIOR_BY_LABEL[gpu_class] = model
    return model


def prior_output_length(features: RequestFeatures) -> OutputLengthEstimate:
    """Output-length quantiles used when no predictor is configured."""
    cap = float(features.max_tokens) if features.max_tokens is not None and features.max_tokens > 0 else None
    p50, p90 = PRIOR_P50_TOKENS, PRIOR_P90_TOKENS
    if cap is not None:
        p50, p90 = min(p50, cap), min(p90, cap)
    return OutputLengthEstimate(p50_tokens=p50, p90_tokens=p90, source="fallback_prior")


def expected_tokens(length: OutputLengthEstimate) -> float:
    """Mean output length implied by the two quantiles, assuming a log-normal length distribution.

    ``sigma = ln(p90/p50) / z_0.9`` and ``mean = p50 · exp(sigma²/2)``: the mean,
    not the median, is what in-flight decode-work accounting must add up
    (lengths are heavy-tailed, formulas.md §1).
    """
    p50 = max(1.0, length.p50_tokens)
    p90 = max(p50, length.p90_tokens)
    sigma = math.log(p90 / p50) / _Z_090
    return p50 * math.exp(0.5 * sigma * sigma)


def estimate_terms(prompt_tokens: int, matched_tokens: int, view: BackendView) -> tuple[float, float, float]:
    """``(queue_wait_ms, prefill_ms, tpot_ms)`` of a request on ``view``'s backend (module docstring).

    The hot path of cost-based routing: plain floats, no allocation beyond the
    result tuple.
    """
    model = _PRIOR_BY_LABEL.get(view.gpu_class) or prior_for(view.gpu_class)
    base, per_prefill, per_decode = model.base_ms, model.prefill_ms_per_token, model.decode_ms_per_token
    in_flight = view.in_flight_requests
    awaiting = view.awaiting_first_byte
    running = view.engine_running
    if running is None or view.metrics_stale:
        running = in_flight - awaiting if in_flight > awaiting else 0
    step_ms = base + per_decode * running
    speed = 1.0
    ewma_tpot = view.ewma_tpot_ms
    if ewma_tpot is not None and ewma_tpot > 0:
        speed = ewma_tpot / (base + per_decode * (running if running > 1 else 1))
        speed = _SPEED_FACTOR_MIN if speed < _SPEED_FACTOR_MIN else min(speed, _SPEED_FACTOR_MAX)

    wait_ms = 0.0
    if in_flight > 0 and awaiting > 0:
        queued = view.in_flight_prompt_tokens * (awaiting / in_flight if awaiting < in_flight else 1.0)
        wait_ms = speed * (per_prefill * queued + -(-queued // CHUNK_TOKENS) * step_ms)
    limit = view.max_concurrency
    if limit is not None and in_flight >= limit:
        draining = running if running > 1 else 1
        mean_remaining = view.in_flight_predicted_decode_tokens / draining
        wait_ms += (in_flight - limit + 1) * (mean_remaining / draining) * speed * step_ms

    new_tokens = prompt_tokens - matched_tokens
    if new_tokens < 1:
        new_tokens = 1
    prefill_ms = speed * (per_prefill * new_tokens + -(-new_tokens // CHUNK_TOKENS) * step_ms)
    return wait_ms, prefill_ms, speed * (step_ms + per_decode)


def estimate_cost(
    features: RequestFeatures, matched_tokens: int, view: BackendView, output_tokens: float
) -> BackendCostEstimate:
    """Predicted cost of ``features`` on ``view``'s backend; see the module docstring for the formula."""
    wait_ms, prefill_ms, tpot_ms = estimate_terms(features.prompt_tokens, matched_tokens, view)
    ttft_ms = wait_ms + prefill_ms
    return BackendCostEstimate(
        backend_id=view.backend_id,
        queue_wait_ms=wait_ms,
        prefill_ms=prefill_ms,
        ttft_ms=ttft_ms,
        tpot_ms=tpot_ms,
        e2e_ms=ttft_ms + max(0.0, output_tokens - 1.0) * tpot_ms,
        cached_prompt_tokens=min(matched_tokens, features.prompt_tokens),
    )
