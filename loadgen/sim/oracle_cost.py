"""What one request would cost on one simulated engine, computed from the engine's exact state.

The benchmark oracle's cost model (``loadgen.sim.oracle``). It reads what no router can know: every
queued and running request's true remaining output, the exact prefix cache, free KV blocks, the
profile's step-time coefficients and any slowdown fault. Arrivals after the decision are unknown to
it too (it is clairvoyant about the present, not the future). With ``t(rows, ctx) = base_us +
decode_us_per_token * rows + decode_us_per_context_token * ctx`` the decode part of a step:

* **prefill ahead** ``P`` = remaining prompt tokens of running requests still in prefill + the
  uncached prompt of every waiting request (cache lookups for the first ``MAX_WAITING_LOOKUPS``
  waiting requests, the rest counted whole); mine ``U = prompt - cached`` (at least one token, the
  last is always recomputed). Chunked prefill gives ``budget - D`` tokens per step to prefill
  (``D`` = running rows), so ``n = ceil((P + U) / (budget - D))`` steps and
  ``TTFT_compute = n * t(D, ctx) + prefill_us * (P + U) + prefill_ctx_us * U * (cached + U / 2)``;
* **memory**: if the blocks of everything ahead plus mine exceed the free blocks, the request also
  waits for enough running requests to finish (ordered by their true remaining output, each step
  ``t(D, ctx)``), then for its own prefill; likewise for ``max_num_seqs``;
* **TPOT**: one decode step with the rows that overlap my decode, weighted by how many of my ``L``
  steps each of them still runs: ``rows = 1 + sum_j min(d_j, L) / L``, context alike;
* ``E2E = TTFT + (L - 1) * TPOT``. All step times are multiplied by the engine's slowdown; a hung
  engine costs infinity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from loadgen.sim.engine import SimEngine
from loadgen.sim.request import BLOCK, SimRequest

MAX_WAITING_LOOKUPS = 64


@dataclass(frozen=True, slots=True)
class CostEstimate:
    ttft_s: float
    tpot_s: float
    e2e_s: float
    cached_tokens: int


def _blocks(tokens: int) -> int:
    return -(-tokens // BLOCK)


def _remaining_output(req: SimRequest) -> int:
    return max(0, req.output_target - req.num_output)


def _wait_for_finishes(
    running: Sequence[SimRequest], step_s: float, freed_needed: int, by_blocks: bool
) -> float:
    """Time until finishing running requests free ``freed_needed`` blocks (or sequence slots)."""
    if freed_needed <= 0:
        return 0.0
    freed = 0
    for req in sorted(running, key=_remaining_output):
        freed += len(req.blocks) + _blocks(_remaining_output(req)) if by_blocks else 1
        if freed >= freed_needed:
            return _remaining_output(req) * step_s
    return math.inf


def estimate(
    engine: SimEngine, prefix_hashes: Sequence[int], prompt_tokens: int, output_tokens: int
) -> CostEstimate:
    """TTFT, TPOT and E2E of a request of these sizes sent to ``engine`` now (module docstring)."""
    if engine.paused:
        return CostEstimate(math.inf, math.inf, math.inf, 0)
    profile = engine.profile
    model, limits, slow = profile.step_time, profile.scheduler, engine.slowdown
    us = 1e-6 * slow
    running, waiting = engine.running_requests(), engine.waiting_requests()
    cached = min(engine.cached_prefix_tokens(prefix_hashes[: prompt_tokens // BLOCK]), prompt_tokens - 1)
    mine = prompt_tokens - cached
    prefill_ahead = sum(max(0, r.prompt_tokens - r.num_computed) for r in running if r.num_output == 0)
    blocks_ahead = 0
    for i, w in enumerate(waiting):
        hit = engine.cached_prefix_tokens(w.prompt_hashes) if i < MAX_WAITING_LOOKUPS else 0
        uncached = max(1, w.num_tokens - hit)
        prefill_ahead += uncached
        blocks_ahead += _blocks(uncached)
    rows = len(running)
    ctx = sum(r.num_tokens for r in running)
    decode_step_s = us * (
        model.base_us + model.decode_us_per_token * rows + model.decode_us_per_context_token * ctx
    )
    per_step_tokens = max(1, limits.max_num_batched_tokens - rows)
    n_steps = math.ceil((prefill_ahead + mine) / per_step_tokens)
    prefill_s = us * (
        model.prefill_us_per_token * (prefill_ahead + mine)
        + model.prefill_us_per_token_context * mine * (cached + mine / 2)
    )
    ttft_s = n_steps * decode_step_s + prefill_s
    growth_blocks = _blocks(rows * n_steps) if rows else 0
    need_blocks = blocks_ahead + _blocks(mine + 1) + growth_blocks
    my_prefill_s = (
        us * (model.base_us + model.prefill_us_per_token * mine) * max(1, math.ceil(mine / per_step_tokens))
    )
    kv_wait_s = _wait_for_finishes(running, decode_step_s, need_blocks - engine.pool.num_free, by_blocks=True)
    seq_wait_s = _wait_for_finishes(
        running, decode_step_s, rows + len(waiting) + 1 - limits.max_num_seqs, False
    )
    ttft_s = max(ttft_s, max(kv_wait_s, seq_wait_s) + my_prefill_s)
    tpot_s = _tpot_s(engine, running, waiting, n_steps, prompt_tokens, output_tokens, us)
    return CostEstimate(ttft_s, tpot_s, ttft_s + max(0, output_tokens - 1) * tpot_s, cached)


def _tpot_s(
    engine: SimEngine,
    running: Sequence[SimRequest],
    waiting: Sequence[SimRequest],
    wait_steps: int,
    prompt_tokens: int,
    output_tokens: int,
    us: float,
) -> float:
    """A decode step's time averaged over my decode, with the rows that still run alongside me."""
    model = engine.profile.step_time
    steps = max(1, output_tokens)
    rows = 1.0
    ctx = prompt_tokens + steps / 2
    for req in running:
        left = max(0, _remaining_output(req) - wait_steps)
        share = min(left, steps) / steps
        rows += share
        ctx += share * (req.num_tokens + wait_steps + min(left, steps) / 2)
    for req in waiting:
        left = _remaining_output(req)
        share = min(left, steps) / steps
        rows += share
        ctx += share * (req.num_tokens + min(left, steps) / 2)
    return us * (model.base_us + model.decode_us_per_token * rows + model.decode_us_per_context_token * ctx)
