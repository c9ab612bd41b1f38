"""Closed-form sustainable request rate of a simulated backend, for sizing a real-time replay.

Used by ``sluice demo`` and the peer benchmark to offer a load that keeps a fleet busy without
melting it. It reads only the profile (the same step-time model the engine runs, see
``loadgen.sim.profile``) and the mean shape of the workload's requests.

In steady state at ``lambda`` requests/s, each of mean prompt ``P`` tokens (uncached part
``P_new = P * (1 - cached_frac)``) and mean output ``O`` tokens, one second of GPU time must hold
``lambda * P_new`` prefill tokens and ``lambda * O`` decode rows. With ``B`` requests decoding at
once, a step emits ``B`` tokens, so ``lambda * O / B`` steps run per second, each paying ``base_us``.
A decode row attends on average to ``P + O / 2`` context tokens. Summing the step-time terms::

    us_per_request = O * base_us / B
                   + O * decode_us_per_token
                   + P_new * prefill_us_per_token
                   + O * (P + O / 2) * decode_us_per_context_token
                   + P_new * P / 2 * prefill_us_per_token_context
    capacity_rps   = 1e6 / us_per_request

``B`` is the largest batch the engine can hold: ``min(max_num_seqs, kv_tokens / (P + O / 2))``
(the mean KV a request occupies over its life). At ``capacity_rps`` the queue is on the edge of
growing without bound, so callers offer a fraction of it (``load_frac``). The estimate ignores
chunked-prefill step splitting and preemption; at the loads it is used for (about half of
capacity) both are rare. For the bundled profiles and the Azure 2023 conversation shape
(P ~1,150, O ~260) it gives H100 ~37, A100 ~13, L4 ~1.1 requests/s.

Checked against the engine itself in virtual time (Poisson, P = 1,000, O = 200, one backend,
``tests/unit/test_capacity_sizing.py``): H100 and A100 keep a flat TTFT at 0.9x this capacity and
build an ever-growing queue at 1.1x; the KV-bound L4 starts to queue near 0.8x.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from loadgen.sim.profile import GpuProfile


@dataclass(frozen=True, slots=True)
class RequestShape:
    """Mean request of a workload, in tokens; ``cached_frac`` is the share of prompt tokens reused."""

    prompt_tokens: float
    output_tokens: float
    cached_frac: float = 0.0

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1 or self.output_tokens < 1:
            raise ValueError("a request has at least one prompt and one output token")
        if not 0.0 <= self.cached_frac < 1.0:
            raise ValueError("cached_frac must be in [0, 1)")


@dataclass(frozen=True, slots=True)
class BackendCapacity:
    name: str
    gpu: str
    batch: float
    capacity_rps: float
    tpot_at_batch_ms: float


def backend_capacity(name: str, profile: GpuProfile, shape: RequestShape) -> BackendCapacity:
    """The module docstring's formula for one backend."""
    step = profile.step_time
    p, o = shape.prompt_tokens, shape.output_tokens
    p_new = p * (1.0 - shape.cached_frac)
    mean_context_tokens = p + o / 2.0
    batch = max(
        1.0, min(float(profile.scheduler.max_num_seqs), profile.kv_capacity_tokens / mean_context_tokens)
    )
    us_per_request = (
        o * step.base_us / batch
        + o * step.decode_us_per_token
        + p_new * step.prefill_us_per_token
        + o * mean_context_tokens * step.decode_us_per_context_token
        + p_new * p / 2.0 * step.prefill_us_per_token_context
    )
    tpot_us = (
        step.base_us
        + batch * step.decode_us_per_token
        + batch * mean_context_tokens * step.decode_us_per_context_token
    )
    return BackendCapacity(name, profile.gpu, batch, 1e6 / us_per_request, tpot_us / 1000.0)


def fleet_capacity(
    backends: Iterable[tuple[str, GpuProfile]], shape: RequestShape
) -> tuple[BackendCapacity, ...]:
    """Per-backend capacities; the fleet's is their sum (a router that balances by speed can reach it)."""
    return tuple(backend_capacity(name, profile, shape) for name, profile in backends)
