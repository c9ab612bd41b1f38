"""One engine step's scheduling decision, following vLLM v1's ``Scheduler.schedule`` (v0.8.x).

Rules per step, with a token budget of ``max_num_batched_tokens``:

1. RUNNING requests first, in order: each gets ``num_tokens - num_computed`` new tokens (1 for a
   decode, the rest of the prompt for a prefill), capped by ``long_prefill_token_threshold`` (if set)
   and by the remaining budget (chunked prefill). If its blocks cannot be allocated, the **last**
   running request is preempted (recompute: blocks freed, ``num_computed = 0``, put at the front of
   the waiting queue), repeatedly, until the allocation fits or the request preempted itself.
2. Only if nothing was preempted: WAITING requests in FCFS order while budget remains and fewer
   than ``max_num_seqs`` run. Each first takes its longest cached prefix (block-aligned; the last
   token is always recomputed), then allocates the rest; if that does not fit, admission stops
   (head-of-line, as vLLM does).

Blocks are allocated when a request is scheduled for the tokens it will compute in the step, and
blocks that become full are published to the prefix cache at that moment (vLLM caches full blocks
in ``allocate_slots``).

Prefix-cache counters count the tokens a request looked up and the tokens it got from the cache,
each time it is admitted (including re-admission after preemption). vLLM 0.8 counts a lookup also
when the allocation then fails and is retried next step; counting only admissions makes
``hits / queries`` exactly the share of looked-up tokens actually reused.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

from loadgen.sim.kv_cache import BlockPool
from loadgen.sim.profile import SchedulerLimits
from loadgen.sim.request import BLOCK, SimRequest, Status

Row = tuple[SimRequest, int]


def _blocks_for(tokens: int) -> int:
    return -(-tokens // BLOCK)


def is_decode_row(request: SimRequest, num_new: int) -> bool:
    """A row computing the single latest sampled token of a request that already produced output."""
    return num_new == 1 and request.num_output > 0 and request.num_computed + 1 == request.num_tokens


class Scheduler:
    __slots__ = (
        "max_batched_tokens",
        "max_num_seqs",
        "pool",
        "preemptions_total",
        "prefix_hits_tokens",
        "prefix_queries_tokens",
        "running",
        "threshold",
        "waiting",
    )

    def __init__(self, limits: SchedulerLimits, pool: BlockPool) -> None:
        self.pool = pool
        self.max_num_seqs = limits.max_num_seqs
        self.max_batched_tokens = limits.max_num_batched_tokens
        self.threshold = limits.long_prefill_token_threshold
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.preemptions_total = 0
        self.prefix_queries_tokens = 0
        self.prefix_hits_tokens = 0

    def schedule(self, now_s: float) -> tuple[list[Row], int]:
        """Rows ``(request, new tokens)`` for the next step and the number of preemptions it caused."""
        rows: list[Row] = []
        budget = self.max_batched_tokens
        preempted = 0
        running = self.running
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            num_new = self._cap(req.num_tokens - req.num_computed, budget)
            scheduled = True
            while not self._allocate_running(req, num_new):
                victim = running.pop()
                self._preempt(victim)
                preempted += 1
                if victim is req:
                    scheduled = False
                    break
            if not scheduled:
                break
            rows.append((req, num_new))
            budget -= num_new
            i += 1
        if preempted:
            return rows, preempted
        waiting = self.waiting
        while waiting and budget > 0 and len(running) < self.max_num_seqs:
            req = waiting[0]
            num_new = self._admit(req, budget, now_s)
            if num_new == 0:
                break
            waiting.popleft()
            running.append(req)
            rows.append((req, num_new))
            budget -= num_new
        return rows, 0

    def _cap(self, num_new: int, budget: int) -> int:
        if self.threshold and num_new > self.threshold:
            num_new = self.threshold
        return min(num_new, budget)

    def _allocate_running(self, req: SimRequest, num_new: int) -> bool:
        target = req.num_computed + num_new
        need = _blocks_for(target) - len(req.blocks)
        if need > 0:
            if need > self.pool.num_free:
                return False
            req.blocks.extend(self.pool.allocate(need))
        self._publish(req, target)
        return True

    def _admit(self, req: SimRequest, budget: int, now_s: float) -> int:
        """Schedule a waiting request if its blocks fit; returns its new tokens, 0 if it must wait."""
        pool = self.pool
        n_lookup = req.lookup_block_count()
        n_prompt = min(n_lookup, len(req.prompt_hashes))
        hit = pool.cached_prefix(islice(req.prompt_hashes, n_prompt))
        if len(hit) == n_prompt and n_lookup > n_prompt:
            hit += pool.cached_prefix(req.block_hash(i) for i in range(n_prompt, n_lookup))
        n_hit = len(hit)
        num_computed = n_hit * BLOCK
        num_new = self._cap(req.num_tokens - num_computed, budget)
        need = _blocks_for(num_computed + num_new) - n_hit
        if need > pool.num_free - pool.num_evictable(hit):
            return 0
        pool.touch(hit)
        hit.extend(pool.allocate(need))
        req.blocks = hit
        req.num_hashed_blocks = n_hit
        req.num_computed = num_computed
        self._publish(req, num_computed + num_new)
        self.prefix_queries_tokens += req.num_tokens
        self.prefix_hits_tokens += num_computed
        if req.cached_tokens < 0:
            req.cached_tokens = num_computed
        if req.first_scheduled_s is None:
            req.first_scheduled_s = now_s
        req.status = Status.RUNNING
        return num_new

    def _publish(self, req: SimRequest, tokens: int) -> None:
        """Publish the blocks that are full once ``tokens`` tokens are in the cache."""
        n_full = tokens // BLOCK
        for i in range(req.num_hashed_blocks, n_full):
            self.pool.cache(req.blocks[i], req.block_hash(i))
        if n_full > req.num_hashed_blocks:
            req.num_hashed_blocks = n_full

    def _preempt(self, req: SimRequest) -> None:
        self.pool.free(req.blocks)
        req.blocks = []
        req.num_hashed_blocks = 0
        req.num_computed = 0
        req.num_preemptions += 1
        req.status = Status.WAITING
        self.waiting.appendleft(req)
        self.preemptions_total += 1

    # --- applying a step's results ---------------------------------------------------------------

    def commit_step(self, rows: list[Row]) -> tuple[list[SimRequest], list[SimRequest]]:
        """Apply one computed step: returns (requests that sampled a token, requests that finished)."""
        produced: list[SimRequest] = []
        finished: list[SimRequest] = []
        for req, num_new in rows:
            if req.status is not Status.RUNNING:
                continue  # aborted while the step ran
            req.num_computed += num_new
            if req.num_computed >= req.num_tokens:
                req.num_output += 1
                produced.append(req)
                if req.num_output >= req.output_target:
                    finished.append(req)
        self._finish(finished)
        return produced, finished

    def max_decode_steps(self, rows: list[Row], limit: int) -> int:
        """How many identical decode steps can run from now without a finish or a failed allocation.

        Valid after ``schedule`` returned only decode rows and no preemption: the waiting queue then
        stays blocked (decode only consumes blocks), so every step until the first finish has the
        same rows, and allocations succeed while the blocks they need fit in ``num_free``.
        """
        steps = min(limit, min(req.output_target - req.num_output for req, _ in rows))
        free = self.pool.num_free

        def need(n: int) -> int:
            total = 0
            for req, _ in rows:
                extra = _blocks_for(req.num_computed + n) - len(req.blocks)
                if extra > 0:
                    total += extra
            return total

        if need(steps) <= free:
            return steps
        lo, hi = 1, steps  # need(1) == 0: step 1 is already allocated
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if need(mid) <= free:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def commit_decode(self, rows: list[Row], steps: int) -> list[SimRequest]:
        """Apply ``steps`` decode steps of a fixed batch; returns the requests that finished.

        Blocks for the committed steps are allocated here, all at once (except a step already
        allocated by ``allocate_decode_step``). That pops the same blocks from the free queue, so
        evicts the same cached blocks, as allocating step by step would: nothing else touches the
        free queue between those steps.
        """
        finished: list[SimRequest] = []
        for req, _ in rows:
            if req.status is not Status.RUNNING:
                continue
            req.num_computed += steps
            req.num_output += steps
            self._ensure_blocks(req, req.num_computed)
            if req.num_output >= req.output_target:
                finished.append(req)
        self._finish(finished)
        return finished

    def allocate_decode_step(self, rows: list[Row]) -> None:
        """Allocate the blocks of the decode step that has just started (as ``schedule`` would)."""
        for req, _ in rows:
            if req.status is Status.RUNNING:
                self._ensure_blocks(req, req.num_computed + 1)

    def _ensure_blocks(self, req: SimRequest, tokens: int) -> None:
        extra = _blocks_for(tokens) - len(req.blocks)
        if extra > 0:
            req.blocks.extend(self.pool.allocate(extra))
        self._publish(req, tokens)

    def _finish(self, finished: list[SimRequest]) -> None:
        if not finished:
            return
        for req in finished:
            self.pool.free(req.blocks)
            req.blocks = []
            req.status = Status.FINISHED
        self.running = [r for r in self.running if r.status is Status.RUNNING]

    def remove(self, req: SimRequest) -> None:
        """Abort: drop the request wherever it is and free its blocks."""
        if req.status is Status.WAITING:
            self.waiting.remove(req)
        elif req.status is Status.RUNNING:
            self.running.remove(req)
            self.pool.free(req.blocks)
            req.blocks = []
        req.status = Status.ABORTED
