"""What one request would cost on one simulated engine, computed from the engine's exact state.

The benchmark oracle's cost model (``loadgen.sim.oracle``). It reads what no router can know: every
queued and running request's true remaining output, the exact prefix cache, free KV blocks, the
profile's step-time coefficients and any slowdown fault. Arrivals after the decision are unknown to
it too (it is clairvoyant about the present, not the future). The state is read as of ``now_s``
without forcing the lazy engine to commit: tokens of a macro-step already due are subtracted
(``SimEngine.steps_behind``).

With ``D`` running rows, ``t_dec = base_us + decode_us_per_token * D + decode_us_per_context_token *
(their context)`` the time of a step's fixed and decode part, and ``budget`` the batched-token limit:

* **prefill ahead** ``P`` = the remaining prompt of running requests still in prefill + the uncached
  prompt of every waiting request (its cache lookup made once, when first seen waiting); mine
  ``U = prompt - cached`` (the last token is always recomputed);
* **steps before my first token**: the most of three limits, each counted in decode steps:
  chunked prefill (``ceil((P + U) / (budget - D))``), sequence slots (when ``D + waiting + 1 >
  max_num_seqs``: the true remaining output of the k-th running request to finish) and KV blocks
  (the same, until finished requests free the blocks everything ahead and mine need);
* ``TTFT = steps * t_dec + prefill_us_per_token * (P + U) + prefill_us_per_token_context * U *
  (cached + U / 2)``: every prefill token ahead is computed once, interleaved with those steps;
* ``TPOT``: one decode step with the rows that overlap my decode, each weighted by how many of my
  ``L`` steps it still runs (``rows = 1 + sum_j min(d_j, L) / L``); their context is taken at the
  running requests' mean;
* ``E2E = TTFT + (L - 1) * TPOT``; everything times the engine's slowdown; a hung engine costs
  infinity.

Cost: everything that depends only on the engine is summarised once per engine state
(``SimEngine.version``: sorted remaining outputs with prefix sums), so a decision costs a cache
lookup of its own prefix and a few binary searches per backend.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

from loadgen.sim.engine import SimEngine
from loadgen.sim.request import BLOCK

MAX_REMEMBERED_LOOKUPS = 100_000


@dataclass(frozen=True, slots=True)
class CostEstimate:
    ttft_s: float
    tpot_s: float
    e2e_s: float
    cached_tokens: int


def _blocks(tokens: int) -> int:
    return -(-tokens // BLOCK)


@dataclass(frozen=True, slots=True)
class EngineSummary:
    """One engine state, as the cost model needs it (valid while ``SimEngine.version`` is ``version``)."""

    version: int
    rows: int
    context_tokens: int
    prefill_ahead: int  # running requests' remaining prompt + waiting requests' uncached prompt
    waiting: int
    waiting_blocks: int
    remaining: tuple[int, ...]  # running requests' remaining outputs, ascending
    remaining_sums: tuple[int, ...]  # prefix sums of ``remaining``
    freed_blocks_sums: tuple[int, ...]  # blocks freed once the first k of them finish
    waiting_outputs: tuple[int, ...]  # ascending
    waiting_output_sums: tuple[int, ...]


def _sums(values: Sequence[int]) -> tuple[int, ...]:
    return (0, *itertools.accumulate(values))


def summarise(engine: SimEngine, lookups: MutableMapping[int, int]) -> EngineSummary:
    """``lookups`` remembers each waiting request's cache lookup (by uid) across engine states."""
    if len(lookups) > MAX_REMEMBERED_LOOKUPS:
        lookups.clear()
    running, waiting = engine.running_requests(), engine.waiting_requests()
    finishing = sorted((r.output_target - r.num_output, len(r.blocks)) for r in running)
    remaining = tuple(left for left, _ in finishing)
    prefill_ahead = sum(max(0, r.prompt_tokens - r.num_computed) for r in running if r.num_output == 0)
    waiting_blocks = 0
    for w in waiting:
        hit = lookups.get(w.uid)
        if hit is None:
            hit = lookups[w.uid] = engine.cached_prefix_tokens(w.prompt_hashes)
        uncached = max(1, w.num_tokens - hit)
        prefill_ahead += uncached
        waiting_blocks += _blocks(uncached)
    outputs = sorted(w.output_target - w.num_output for w in waiting)
    return EngineSummary(
        version=engine.version,
        rows=len(running),
        context_tokens=sum(r.num_tokens for r in running),
        prefill_ahead=prefill_ahead,
        waiting=len(waiting),
        waiting_blocks=waiting_blocks,
        remaining=remaining,
        remaining_sums=_sums(remaining),
        freed_blocks_sums=_sums([held + _blocks(left) for left, held in finishing]),
        waiting_outputs=tuple(outputs),
        waiting_output_sums=_sums(outputs),
    )


def _overlap(values: Sequence[int], sums: Sequence[int], shift: float, steps: int) -> float:
    """``sum_i clamp(values[i] - shift, 0, steps)`` over ascending ``values`` with prefix ``sums``."""
    lo = bisect.bisect_right(values, shift)
    hi = bisect.bisect_left(values, shift + steps)
    return (sums[hi] - sums[lo]) - shift * (hi - lo) + steps * (len(values) - hi)


def estimate(
    engine: SimEngine,
    summary: EngineSummary,
    now_s: float,
    prefix_hashes: Sequence[int],
    prompt_tokens: int,
    output_tokens: int,
) -> CostEstimate:
    """TTFT, TPOT and E2E of a request of these sizes sent to ``engine`` at ``now_s`` (module docstring)."""
    if engine.paused:
        return CostEstimate(math.inf, math.inf, math.inf, 0)
    model, limits = engine.profile.step_time, engine.profile.scheduler
    us = 1e-6 * engine.slowdown
    behind = engine.steps_behind(now_s)
    s = summary
    cached = min(engine.cached_prefix_tokens(prefix_hashes[: prompt_tokens // BLOCK]), prompt_tokens - 1)
    mine = prompt_tokens - cached
    context = s.context_tokens + behind * s.rows
    t_dec = us * (
        model.base_us + model.decode_us_per_token * s.rows + model.decode_us_per_context_token * context
    )
    steps_prefill = math.ceil((s.prefill_ahead + mine) / max(1, limits.max_num_batched_tokens - s.rows))
    steps = float(steps_prefill)
    slots_needed = s.rows + s.waiting + 1 - limits.max_num_seqs
    if slots_needed > 0:
        steps = max(steps, s.remaining[slots_needed - 1] - behind if slots_needed <= s.rows else math.inf)
    blocks_needed = (
        s.waiting_blocks + _blocks(mine + 1) + _blocks(s.rows * steps_prefill) - engine.pool.num_free
    )
    if blocks_needed > 0:
        k = bisect.bisect_left(s.freed_blocks_sums, blocks_needed)
        steps = max(steps, s.remaining[k - 1] - behind if k <= s.rows else math.inf)
    prefill_s = us * (
        model.prefill_us_per_token * (s.prefill_ahead + mine)
        + model.prefill_us_per_token_context * mine * (cached + mine / 2)
    )
    ttft_s = steps * t_dec + prefill_s
    if not math.isfinite(ttft_s):
        return CostEstimate(math.inf, math.inf, math.inf, cached)
    length = max(1, output_tokens)
    shift = behind + steps
    others = _overlap(s.remaining, s.remaining_sums, shift, length)
    others += _overlap(s.waiting_outputs, s.waiting_output_sums, 0.0, length)
    rows = 1.0 + others / length
    mean_context = context / s.rows if s.rows else 0.0
    ctx = prompt_tokens + length / 2 + (rows - 1.0) * (mean_context + steps + length / 4)
    tpot_s = us * (model.base_us + model.decode_us_per_token * rows + model.decode_us_per_context_token * ctx)
    return CostEstimate(ttft_s, tpot_s, ttft_s + (length - 1) * tpot_s, cached)
