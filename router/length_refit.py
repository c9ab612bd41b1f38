"""The proxy side of the guarded background refit (``predictors.refit``, docs/predictors.md).

On the event loop: each learnable outcome's length-feature row, output tokens, group key and the
p50 served for it (both computed by ``predict`` for the request and handed over by the predictor)
go, as one compact entry, into a bounded ``RefitReservoir`` (~1-2 us per outcome, in batches of
``RECORD_BATCH``). Every ``every_outcomes`` outcomes (at most ``MAX_WORKER_SHARE`` of the time)
the reservoir's copy is handed over a slice per loop callback, as bytes, to a worker
*process* (``run_refit``: featurise, ridge, judge, about 2.5 s for 20k outcomes on a quiet
machine; a thread would hold the GIL for that long, a process does not), at most one job at a
time. When the job's future completes, its done-callback runs on the loop; an accepted model's
online table is bound a slice per callback while the old model serves, then swapped in with
``Predictor.replace_length_model``, and the outcomes that arrived meanwhile are replayed into the
fresh online state (they were learned by the old one, which the swap resets). No step holds the
loop for more than a few milliseconds (``bench/refit_loop_lag.py``; docs/predictors.md).

The worker uses the ``spawn`` start method: forking a process whose loop has live sockets and
threads copies them into the child.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import multiprocessing
import os
import pickle
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from core.config import RefitConfig
from core.types import RequestFeatures
from predictors import Predictor
from predictors.features import LengthFeatureRow, length_features
from predictors.online import LevelKey
from predictors.online_features import OnlineFeatureWeights
from predictors.output_length import OutputLengthModel
from predictors.refit import (
    Entry,
    RefitParams,
    RefitReservoir,
    RefitResult,
    RefitStats,
    compact_entry,
    group_key,
    refit_params,
    run_refit,
    run_refit_encoded,
)

log = logging.getLogger(__name__)
# Holdout entries pickled per loop callback when a job is handed over, and sample entries per
# callback (pickled once, by the first job that hands them over; ``_encode_step``).
ENCODE_SLICE = 1_000
FIT_SLICE = 1_000
# Entries buffered by ``record`` before they are added to the reservoir in one go (~0.3 ms). Why:
# added one by one, each outcome's reservoir step (queue, Algorithm R draw) ran in a separate call
# among the request's own work (cold caches); the moment a refit is due is unchanged
# (``RefitReservoir.outcomes_until_due``).
RECORD_BATCH = 256
# Work per loop callback at a swap: outcomes replayed (~60 us each, ``LengthRefitter._replay``) and
# text terms bound into the new table (``OnlineFeatureWeights.bind_in_steps``).
REPLAY_SLICE = 50
BIND_SLICE_TERMS = 1_000
# The default of ``predictors.refit.max_worker_share``: at most this share of the wall time has a
# job running: after a job that took ``d`` seconds (hand-over to result), the next starts no
# sooner than ``d * (1 / share - 1)`` later. Why: at a
# high request rate ``every_outcomes`` outcomes arrive faster than a job runs, jobs ran back to
# back and the worker took a whole core, which on a small machine is the proxy's: its CPU per
# request rose by ~10 us on the overhead benchmark's load from the contention alone (docs/predictors.md).
MAX_WORKER_SHARE = 0.25
# The worker's scheduling priority offset (``os.nice``): the proxy wins a contended core.
WORKER_NICE = 10


class LengthRefitter:
    """Feeds the reservoir from the predictor's outcomes and applies finished refits on the loop."""

    def __init__(
        self,
        predictor: Predictor,
        params: RefitParams,
        executor: concurrent.futures.Executor,
        loop: asyncio.AbstractEventLoop,
        rng: random.Random,
        job: Callable[..., RefitResult] = run_refit,
        max_worker_share: float = MAX_WORKER_SHARE,
        now_s: Callable[[], float] | None = None,
    ) -> None:
        self._predictor = predictor
        self._base = predictor.length_model  # refits always correct the loaded model, never a refit
        # Pickled once (~10 ms, at start-up): each job hands the worker these bytes, not the object.
        self._base_blob = pickle.dumps(self._base, protocol=pickle.HIGHEST_PROTOCOL)
        self._params = params
        self._executor = executor
        self._loop = loop
        self._job = job
        if not 0.0 < max_worker_share <= 1.0:
            raise ValueError("max_worker_share must be in (0, 1]")
        self.max_worker_share = max_worker_share
        self._gap_per_job_s = 1.0 / max_worker_share - 1.0
        self._now_s = now_s if now_s is not None else loop.time
        self._job_started_s = 0.0
        self.next_job_s = float("-inf")  # no job starts before this (``MAX_WORKER_SHARE``)
        self._reservoir = RefitReservoir(params, rng)
        # Outcomes recorded but not yet in the reservoir, and how many more make a refit due.
        self._batch: list[Entry] = []
        self._due_in = self._reservoir.outcomes_until_due()
        self.stats = RefitStats()
        self.in_flight: asyncio.Future[RefitResult] | None = None
        # Outcomes learned while a job runs: the swap's reset of the online state would drop them
        # (the job's model never saw them), so they are replayed into the fresh state after it.
        # Bounded: a job that outlasts ``holdout`` outcomes loses the oldest (counted in the stats).
        self._pending: deque[tuple[RequestFeatures, int]] = deque(maxlen=params.holdout)
        self._pending_seen = 0
        self._replaying = False
        self._swapping = False  # an accepted model's table is being bound (``_bind_step``)
        self._replay_left = 0  # outcomes still to replay (``_replay``)
        # The online keys' offsets once the job's last outcome was learned (``_hold``).
        self._key_offsets: dict[LevelKey, tuple[float, float]] | None = None

    @property
    def idle(self) -> bool:
        """No job running, no model being bound, no replay slices left."""
        return self.in_flight is None and not self._swapping and not self._replay_left

    def start(self) -> None:
        self._predictor.set_length_listener(self.record)

    def stop(self) -> None:
        self._predictor.set_length_listener(None)
        self._swapping = False
        if self.in_flight is not None:
            self.in_flight.cancel()

    def record(
        self,
        features: RequestFeatures,
        output_tokens: int,
        row: LengthFeatureRow | None = None,
        served_p50: float | None = None,
    ) -> None:
        """One learnable outcome, called by the predictor before it learns it (on the loop).

        ``row`` and ``served_p50``: the feature row and p50 ``predict`` computed for the request,
        which the predictor hands over (``Predictor.set_length_listener``). The p50 served at the
        decision is the guard's reference: what the router acted on, and what the evaluation's
        prequential stream calls served. Only when the predictor no longer holds them (evicted, a
        swap since the request was predicted) are they computed here, from the current state.
        """
        if self._replaying:
            return  # an outcome already recorded, replayed into the fresh online state after a swap
        if self.in_flight is not None or self._swapping:
            self._hold(features, output_tokens)
        max_tokens = features.max_tokens
        if max_tokens is not None and output_tokens >= max_tokens:
            return  # cut by max_tokens: the true length is unknown
        if served_p50 is None:
            served_p50 = self._predictor.predict_length(features).p50_tokens
        if row is None:
            row = length_features(features)
        batch = self._batch
        batch.append(compact_entry(row, output_tokens, served_p50, group_key(features)))
        n = len(batch)
        if n >= self._due_in and self.in_flight is None and not self._swapping:
            if self._now_s() >= self.next_job_s and self._flush():
                self._start_job()  # the reservoir as it would be had each outcome been added at once
            return
        if n >= RECORD_BATCH:
            self._flush()

    @property
    def reservoir(self) -> RefitReservoir:
        """The reservoir with every recorded outcome in it (buffered ones are added first)."""
        self._flush()
        return self._reservoir

    def _flush(self) -> bool:
        """Add the buffered outcomes to the reservoir, in their order (``RECORD_BATCH``); True when
        a refit is due."""
        batch = self._batch
        if not batch:
            return False
        due = self._reservoir.add_outcomes(batch)
        batch.clear()
        self._due_in = self._reservoir.outcomes_until_due()
        return due

    def _start_job(self) -> None:
        self._job_started_s = self._now_s()
        fit, holdout = self._reservoir.job_parts()
        self._due_in = self._reservoir.outcomes_until_due()
        future: asyncio.Future[RefitResult] = self._loop.create_future()
        self.in_flight = future
        self._drop_held()
        future.add_done_callback(self._finished)
        self._encode_step(future, fit, holdout, [], [], 0)

    def _encode_step(
        self,
        future: asyncio.Future[RefitResult],
        fit: list[Entry | bytes],
        holdout: list[Entry],
        fit_blobs: list[bytes],
        holdout_blobs: list[bytes],
        start: int,
    ) -> None:
        """Hand the job's entries over a slice per loop callback, then submit.

        Why: handed over as objects, the ~22k entries were pickled by the executor's feeder thread
        in one C call holding the GIL, stalling the loop for 30-57 ms (bench/refit_loop_lag.py);
        a list of byte strings is a memory copy for it. ``FIT_SLICE`` sample entries per callback
        (``RefitReservoir.encode_fit``: entries a previous job handed over are bytes already, the
        others, ~1.3 us each, are pickled once); the holdout's entries ``ENCODE_SLICE`` per callback.
        """
        if future.done():
            return  # cancelled by ``stop``
        n_fit = len(fit)
        if start < n_fit:
            end = min(start + FIT_SLICE, n_fit)
            fit_blobs.append(self._reservoir.encode_fit(fit, start, end))
        else:
            end = start + ENCODE_SLICE
            entries = holdout[start - n_fit : end - n_fit]
            holdout_blobs.append(pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL))
        if end < n_fit + len(holdout):
            self._loop.call_soon(self._encode_step, future, fit, holdout, fit_blobs, holdout_blobs, end)
            return
        job = self._loop.run_in_executor(
            self._executor,
            functools.partial(run_refit_encoded, self._job),
            self._base_blob,
            fit_blobs,
            holdout_blobs,
            self._params,
        )
        job.add_done_callback(functools.partial(_forward, future))

    def _hold(self, features: RequestFeatures, output_tokens: int) -> None:
        """Keep an outcome that arrives while a job runs, for ``_replay`` after a swap.

        The first one also snapshots the online keys' offsets: every learned outcome passes through
        ``record`` before it is learned, so at that point the state holds exactly the outcomes up to
        the one that started the job (which ``record`` saw before it was learned), all in the job.
        """
        if self._key_offsets is None:
            online = self._predictor.online
            self._key_offsets = online.key_offsets() if online is not None else {}
        self._pending.append((features, output_tokens))
        self._pending_seen += 1

    def _finished(self, future: asyncio.Future[RefitResult]) -> None:
        """Done-callback of the job's future: runs on the loop, so the swap needs no lock."""
        self.in_flight = None
        now_s = self._now_s()
        self.next_job_s = now_s + (now_s - self._job_started_s) * self._gap_per_job_s
        stats = self.stats
        if future.cancelled():
            self._drop_held()
            return
        error = future.exception()
        if error is not None:
            stats.failed += 1
            stats.last_reason = f"failed: {error!r}"
            log.warning("length model refit failed: %r", error)
            self._drop_held()
            return
        result = future.result()
        stats.refits += 1
        stats.last_duration_s = result.duration_s
        stats.last_reason = result.reason
        if result.accepted:
            stats.swaps += 1
            weights = self._predictor.feature_weights
            if self._params.reset_online and weights is not None:
                # The fresh table is built a slice per loop callback; the old model serves meanwhile
                # and the outcomes that arrive are held for the replay, as during the job.
                self._swapping = True
                fresh = OnlineFeatureWeights(weights.params)
                self._bind_step(result.model, fresh, fresh.bind_in_steps(result.model, BIND_SLICE_TERMS))
            else:
                self._commit(result.model, None)
        else:
            stats.rejected += 1
            self._drop_held()
        log.info(
            "length model refit on %d outcomes: %s (holdout tau %s vs served %s, %.1f s)",
            result.fit_n,
            "swapped in" if result.accepted else f"rejected, {result.reason}",
            result.tau_refit,
            result.tau_served,
            result.duration_s,
        )

    def _drop_held(self) -> None:
        self._pending.clear()
        self._pending_seen = 0
        self._key_offsets = None

    def _bind_step(
        self, model: OutputLengthModel, fresh: OnlineFeatureWeights, steps: Iterator[None]
    ) -> None:
        if not self._swapping:
            return  # stopped
        try:
            next(steps)
        except StopIteration:
            self._commit(model, fresh)
            return
        self._loop.call_soon(self._bind_step, model, fresh, steps)

    def _commit(self, model: OutputLengthModel, fresh: OnlineFeatureWeights | None) -> None:
        """Serve ``model`` (with ``fresh``, the table already bound to it), then replay what was held."""
        pending = list(self._pending)
        self.stats.replay_dropped += self._pending_seen - len(pending)
        key_offsets = self._key_offsets
        self._swapping = False
        self._drop_held()
        reset = self._params.reset_online
        self._predictor.replace_length_model(model, reset_online=reset, feature_weights=fresh)
        online = self._predictor.online
        if reset and online is not None and key_offsets is not None:
            # The keys' offsets as the job's outcomes left them, then what came since, in order: the
            # state the proxy would have had if the swap had landed as the job started.
            online.restore_key_offsets(key_offsets)
            self._replay(pending)

    def _replay(self, pending: list[tuple[RequestFeatures, int]]) -> None:
        """Teach the fresh online state the outcomes that arrived while the job ran, in their order.

        In slices of ``REPLAY_SLICE`` per loop callback (~50 us each): a few thousand in one callback
        would hold the loop for ~0.1 s. Outcomes that finish meanwhile are learned directly, a few
        positions earlier than their turn; each outcome is still learned exactly once.
        """
        self.stats.replayed += len(pending)
        self._replay_left = len(pending)

        def run(start: int) -> None:
            chunk = pending[start : start + REPLAY_SLICE]
            self._replaying = True
            try:
                for features, output_tokens in chunk:
                    self._predictor.observe_length(features, output_tokens)
            finally:
                self._replaying = False
            self._replay_left -= len(chunk)
            if self._replay_left > 0:
                self._loop.call_soon(run, start + REPLAY_SLICE)

        if pending:
            run(0)


def _forward(target: asyncio.Future[RefitResult], source: asyncio.Future[RefitResult]) -> None:
    """The executor future's outcome onto the refitter's own (which exists from the encoding on)."""
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif (error := source.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


def _lower_priority() -> None:
    """The worker's initializer: background work yields a contended core to the proxy."""
    os.nice(WORKER_NICE)


def process_executor() -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority
    )


async def refit_context(
    predictor: Predictor | None, config: RefitConfig, on_start: Callable[[LengthRefitter], Any]
) -> AsyncIterator[None]:
    """An aiohttp ``cleanup_ctx`` body: the refitter and its worker process live as long as the app.

    The executor spawns its one worker at the first job (``ProcessPoolExecutor`` starts processes on
    submit), so a proxy that never sees ``every_outcomes`` outcomes never starts one.
    """
    if not config.enabled or predictor is None or predictor.online is None:
        yield  # off, or no online refinement to take outcomes from (refit on by default)
        return
    executor = process_executor()
    refitter = LengthRefitter(
        predictor,
        refit_params(config),
        executor,
        asyncio.get_running_loop(),
        random.Random(0),
        max_worker_share=config.max_worker_share,
    )
    refitter.start()
    on_start(refitter)
    try:
        yield
    finally:
        refitter.stop()
        executor.shutdown(wait=False, cancel_futures=True)
