"""A simulated vLLM engine: scheduler + paged KV cache + profile step times, on an injected timeline.

No I/O and no clock reads: the caller says what time it is. ``add_request(req, now_s)``,
``abort(req, now_s)`` and ``advance_until(t_s)`` are the only ways time moves, so the same code runs in
real time (a driver calls ``advance_until(loop.time())`` at each step end) and in virtual time (a
discrete-event loop jumps from event to event).

Timeline: a step that starts at ``s`` is planned from the state at ``s`` (requests added later wait
for the next step) and ends at ``s + step_time``; its tokens exist at its end. The next step starts
when the previous one ends, or when work arrives at an idle engine.

Macro-stepping: when a step holds only decode rows and caused no preemption, the batch cannot change
until its first request finishes or its next block allocation would not fit (the waiting queue stays
blocked because decoding only consumes blocks). The engine then plans that whole run of identical
steps at once, with every step's end time computed from the profile formula, and commits any prefix
of it in one go. Anything that can change the batch (a new request, an abort, a fault) first cuts the
plan back to the step in flight. Results are identical to stepping one by one; the cost is per
batch change instead of per step.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from loadgen.sim.kv_cache import BlockPool
from loadgen.sim.profile import GpuProfile
from loadgen.sim.request import BLOCK, SimRequest, Status
from loadgen.sim.scheduler import Row, Scheduler, is_decode_row

MAX_PLAN_STEPS = 512


@dataclass(slots=True)
class _Plan:
    rows: list[Row]
    start_s: float
    ends_s: list[float]
    decode_only: bool
    done: int = 0
    allocated: int = 1  # steps whose blocks are allocated (``schedule`` allocated the first)


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Counters and gauges as vLLM reports them (token counters are cumulative)."""

    running: int
    waiting: int
    kv_usage_frac: float
    num_blocks: int
    cached_blocks: int
    prefix_cache_queries_tokens: int
    prefix_cache_hits_tokens: int
    preemptions_total: int
    prompt_tokens_total: int
    generation_tokens_total: int
    prefill_tokens_computed_total: int
    requests_finished_total: int
    requests_aborted_total: int
    steps_total: int
    busy_s: float


class SimEngine:
    def __init__(self, profile: GpuProfile, *, slowdown: float = 1.0, macro_steps: bool = True) -> None:
        self.profile = profile
        self.step_time = profile.step_time
        self.pool = BlockPool(profile.num_kv_blocks)
        self.scheduler = Scheduler(profile.scheduler, self.pool)
        self.macro_steps = macro_steps
        self._slowdown = slowdown
        self._paused = False
        self._plan: _Plan | None = None
        self._now_s = 0.0
        self._free_at_s = 0.0
        self._next_uid = 0
        self.version = 0  # moves whenever a request, a block or the batch changes (readers cache on it)
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.prefill_tokens_computed_total = 0
        self.requests_finished_total = 0
        self.requests_aborted_total = 0
        self.steps_total = 0
        self.busy_s = 0.0

    # --- inputs ----------------------------------------------------------------------------------

    def add_request(self, req: SimRequest, now_s: float) -> None:
        """Queue a request that arrived at ``now_s`` (it joins the first step that starts after)."""
        if req.uid >= 0:
            raise ValueError(f"request {req.request_id!r} was already added")
        if req.prompt_tokens + req.output_target > self.profile.scheduler.max_model_len:
            raise ValueError(
                f"request {req.request_id!r}: {req.prompt_tokens} prompt + {req.output_target} output "
                f"tokens exceed max_model_len {self.profile.scheduler.max_model_len}"
            )
        self.advance_until(now_s)
        self._cut_plan(now_s)
        self.version += 1
        req.uid = self._next_uid
        self._next_uid += 1
        req.arrival_s = now_s
        if self._plan is None and now_s > self._free_at_s:
            self._free_at_s = now_s
        self.scheduler.waiting.append(req)

    def abort(self, req: SimRequest, now_s: float) -> None:
        """Drop a request (client went away); the step in flight still takes its time."""
        if req.done or req.uid < 0:
            return
        self.advance_until(now_s)
        self._cut_plan(now_s)
        self.version += 1
        self.scheduler.remove(req)
        req.finished_s = now_s
        self.requests_aborted_total += 1

    def set_slowdown(self, factor: float, now_s: float) -> None:
        """Multiply the duration of steps planned from now on (fault injection)."""
        if factor <= 0:
            raise ValueError("slowdown factor must be positive")
        self.advance_until(now_s)
        self._cut_plan(now_s)
        self._slowdown = factor

    def set_paused(self, paused: bool, now_s: float) -> None:
        """A hung GPU: no step starts while paused; the step in flight completes."""
        self.advance_until(now_s)
        self._cut_plan(now_s)
        self._paused = paused
        if not paused and self._plan is None and now_s > self._free_at_s:
            self._free_at_s = now_s

    def drop_all(self, now_s: float) -> list[SimRequest]:
        """A crash: every request is lost and the KV cache is emptied. Returns the lost requests."""
        self._now_s = max(self._now_s, now_s)
        self.version += 1
        lost = [*self.scheduler.running, *self.scheduler.waiting]
        for req in lost:
            req.status = Status.ABORTED
            req.finished_s = now_s
            req.blocks = []
        self.requests_aborted_total += len(lost)
        self._plan = None
        self.pool = BlockPool(self.profile.num_kv_blocks)
        counters = self.scheduler
        self.scheduler = Scheduler(self.profile.scheduler, self.pool)
        self.scheduler.preemptions_total = counters.preemptions_total
        self.scheduler.prefix_queries_tokens = counters.prefix_queries_tokens
        self.scheduler.prefix_hits_tokens = counters.prefix_hits_tokens
        self._free_at_s = max(self._free_at_s, now_s)
        return lost

    # --- time ------------------------------------------------------------------------------------

    def advance_until(self, t_s: float) -> None:
        """Commit every step that ends at or before ``t_s``; listeners hear about tokens as they commit."""
        if t_s < self._now_s:
            raise ValueError(f"time went backwards: {t_s} < {self._now_s}")
        while True:
            plan = self._plan
            if plan is None:
                # a step starting at s is planned once time has passed s: arrivals at s join it
                if self._paused or not self._has_work() or self._free_at_s >= t_s:
                    break
                plan = self._plan = self._make_plan(self._free_at_s)
            ends = plan.ends_s
            k = 0
            n_left = len(ends) - plan.done
            while k < n_left and ends[plan.done + k] <= t_s:
                k += 1
            if k == 0:
                break
            self._commit(plan, k)
        self._now_s = t_s

    def next_step_end_s(self) -> float | None:
        """End of the step in flight (planning it if work is waiting); None when idle or paused."""
        plan = self._ensure_plan()
        return None if plan is None else plan.ends_s[plan.done]

    def plan_end_s(self) -> float | None:
        """End of the current run of identical steps: the next time anything but a token can happen."""
        plan = self._ensure_plan()
        return None if plan is None else plan.ends_s[-1]

    def _ensure_plan(self) -> _Plan | None:
        if self._plan is None and not self._paused and self._has_work():
            self._plan = self._make_plan(self._free_at_s)
        return self._plan

    def _has_work(self) -> bool:
        return bool(self.scheduler.running or self.scheduler.waiting)

    def _cut_plan(self, now_s: float) -> None:
        """Keep only the step in flight at ``now_s``; later steps are re-planned from the new state.

        A macro-step that would start exactly at ``now_s`` has not started (arrivals at ``now_s``
        join it), so it is dropped; one that started earlier gets its blocks now if it has none
        yet, which is when a one-step-at-a-time engine would have allocated them (nothing touched
        the pool since it started).
        """
        plan = self._plan
        if plan is None:
            return
        if plan.done > 0 and plan.ends_s[plan.done - 1] >= now_s:
            self._plan = None
            return
        del plan.ends_s[plan.done + 1 :]
        if plan.allocated <= plan.done:
            self.version += 1
            self.scheduler.allocate_decode_step(plan.rows)
            plan.allocated = plan.done + 1

    def _make_plan(self, start_s: float) -> _Plan:
        self.version += 1
        rows, preempted = self.scheduler.schedule(start_s)
        if not rows:  # everything was preempted back to waiting: nothing fits at all
            raise RuntimeError(
                f"KV cache of {self.pool.num_blocks} blocks cannot hold one request; "
                "max_model_len must not exceed the KV capacity"
            )
        decode_only = preempted == 0 and all(is_decode_row(r, n) for r, n in rows)
        model = self.step_time
        slow = self._slowdown
        if decode_only:
            n_rows = len(rows)
            ctx0 = sum(r.num_computed for r, _ in rows)
            steps = self.scheduler.max_decode_steps(rows, MAX_PLAN_STEPS) if self.macro_steps else 1
            a_us = model.base_us + model.decode_us_per_token * n_rows
            a_us += model.decode_us_per_context_token * ctx0
            d_us = model.decode_us_per_context_token * n_rows
            scale = slow * 1e-6
            ends = [start_s + scale * (a_us * j + d_us * j * (j + 1) / 2) for j in range(1, steps + 1)]
            return _Plan(rows, start_s, ends, True)
        prefill = decode = decode_ctx = prefill_ctx = 0
        for req, num_new in rows:
            if is_decode_row(req, num_new):
                decode += 1
                decode_ctx += req.num_tokens
            else:
                prefill += num_new
                prefill_ctx += num_new * (req.num_computed + num_new)
        duration = slow * model.step_s(prefill, decode, decode_ctx, prefill_ctx)
        self.prefill_tokens_computed_total += prefill
        return _Plan(rows, start_s, [start_s + duration], False)

    def _commit(self, plan: _Plan, k: int) -> None:
        self.version += 1
        first = plan.done
        plan.done += k
        end_s = plan.ends_s[plan.done - 1]
        self.busy_s += end_s - (plan.ends_s[first - 1] if first > 0 else plan.start_s)
        self.steps_total += k
        if plan.decode_only:
            times = plan.ends_s[first : plan.done]
            live = [r for r, _ in plan.rows if r.status is Status.RUNNING]
            finished = self.scheduler.commit_decode(plan.rows, k)
            plan.allocated = max(plan.allocated, plan.done)
            self.generation_tokens_total += k * len(live)
            for req in live:
                req.token_times.extend(times)
                if req.listener is not None:
                    req.listener.on_tokens(req, times)
        else:
            produced, finished = self.scheduler.commit_step(plan.rows)
            times = [end_s]
            for req in produced:
                self._first_or_next_token(req, end_s)
                if req.listener is not None:
                    req.listener.on_tokens(req, times)
        self._free_at_s = end_s
        if plan.done == len(plan.ends_s):
            self._plan = None
        for req in finished:
            req.finished_s = end_s
            self.requests_finished_total += 1
            if req.listener is not None:
                req.listener.on_finished(req)

    def _first_or_next_token(self, req: SimRequest, t_s: float) -> None:
        req.token_times.append(t_s)
        self.generation_tokens_total += 1
        if req.first_token_s is None:
            req.first_token_s = t_s
            self.prompt_tokens_total += req.prompt_tokens

    # --- observation -----------------------------------------------------------------------------

    @property
    def now_s(self) -> float:
        return self._now_s

    def steps_behind(self, t_s: float) -> int:
        """Steps of the plan in flight that end by ``t_s`` but are not committed yet (the engine is lazy).

        Within a decode-only plan the batch is fixed, so a reader that needs the state at ``t_s``
        without forcing a commit (which would split a macro-step) subtracts this many tokens.
        """
        plan = self._plan
        if plan is None:
            return 0
        return bisect.bisect_right(plan.ends_s, t_s, lo=plan.done) - plan.done

    @property
    def slowdown(self) -> float:
        """Step-time multiplier of the ``slowdown`` fault (1 = the profile's speed)."""
        return self._slowdown

    @property
    def paused(self) -> bool:
        """Whether the ``hang`` fault holds every step."""
        return self._paused

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    def running_requests(self) -> Sequence[SimRequest]:
        return tuple(self.scheduler.running)

    def waiting_requests(self) -> Sequence[SimRequest]:
        return tuple(self.scheduler.waiting)

    def cached_prefix_tokens(self, prefix_hashes: Sequence[int]) -> int:
        """Exact prompt tokens of a prefix (given as ``core.tokens`` chunk hashes) cached right now.

        Counts blocks still in the cache whether referenced or only evictable: what a request arriving
        now would hit (before the last-token rule). For an oracle policy.
        """
        return len(self.pool.cached_prefix(prefix_hashes)) * BLOCK

    def stats(self) -> EngineStats:
        sched = self.scheduler
        return EngineStats(
            running=len(sched.running),
            waiting=len(sched.waiting),
            kv_usage_frac=self.pool.usage_frac,
            num_blocks=self.pool.num_blocks,
            cached_blocks=self.pool.num_cached,
            prefix_cache_queries_tokens=sched.prefix_queries_tokens,
            prefix_cache_hits_tokens=sched.prefix_hits_tokens,
            preemptions_total=sched.preemptions_total,
            prompt_tokens_total=self.prompt_tokens_total,
            generation_tokens_total=self.generation_tokens_total,
            prefill_tokens_computed_total=self.prefill_tokens_computed_total,
            requests_finished_total=self.requests_finished_total,
            requests_aborted_total=self.requests_aborted_total,
            steps_total=self.steps_total,
            busy_s=self.busy_s,
        )
