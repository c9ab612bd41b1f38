"""The proxy side of the guarded background refit (``predictors.refit``, docs/predictors.md).

On the event loop: each learnable outcome's length-feature inputs, output tokens and the p50 the
predictor gives it just before learning it go into a bounded ``RefitReservoir`` (~20 us per
outcome: one more ``predict_length`` and one feature row). Every ``every_outcomes`` outcomes the
reservoir's copy is handed to a worker *process* (``run_refit``: featurise, ridge, judge, about
2.5 s for 20k outcomes; a thread would hold the GIL for that long, a process does not), at most
one job at a time. When the job's future completes, its done-callback runs on the loop and swaps
the model in with ``Predictor.replace_length_model`` if the guard accepted it. Nothing here
blocks the loop: a job still running when the next one is due is simply not doubled.

The worker uses the ``spawn`` start method: forking a process whose loop has live sockets and
threads copies them into the child.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import random
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from core.config import RefitConfig
from core.types import RequestFeatures
from predictors import Predictor
from predictors.features import length_features
from predictors.online import LevelKey
from predictors.refit import (
    RefitParams,
    RefitReservoir,
    RefitResult,
    RefitStats,
    compact_entry,
    group_key,
    refit_params,
    run_refit,
)

log = logging.getLogger(__name__)
# Outcomes replayed per loop callback after a swap (``LengthRefitter._replay``).
REPLAY_SLICE = 200


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
    ) -> None:
        self._predictor = predictor
        self._base = predictor.length_model  # refits always correct the loaded model, never a refit
        self._params = params
        self._executor = executor
        self._loop = loop
        self._job = job
        self.reservoir = RefitReservoir(params, rng)
        self.stats = RefitStats()
        self.in_flight: asyncio.Future[RefitResult] | None = None
        # Outcomes learned while a job runs: the swap's reset of the online state would drop them
        # (the job's model never saw them), so they are replayed into the fresh state after it.
        # Bounded: a job that outlasts ``holdout`` outcomes loses the oldest (counted in the stats).
        self._pending: deque[tuple[RequestFeatures, int]] = deque(maxlen=params.holdout)
        self._pending_seen = 0
        self._replaying = False
        # The online keys' offsets once the job's last outcome was learned (``_hold``).
        self._key_offsets: dict[LevelKey, tuple[float, float]] | None = None

    def start(self) -> None:
        self._predictor.set_length_listener(self.record)

    def stop(self) -> None:
        self._predictor.set_length_listener(None)
        if self.in_flight is not None:
            self.in_flight.cancel()

    def record(self, features: RequestFeatures, output_tokens: int) -> None:
        """One learnable outcome, called by the predictor before it learns it (on the loop)."""
        if self._replaying:
            return  # an outcome already recorded, replayed into the fresh online state after a swap
        if self.in_flight is not None:
            self._hold(features, output_tokens)
        max_tokens = features.max_tokens
        if max_tokens is not None and output_tokens >= max_tokens:
            return  # cut by max_tokens: the true length is unknown
        served_p50 = self._predictor.predict_length(features).p50_tokens
        entry = compact_entry(length_features(features), output_tokens, served_p50, group_key(features))
        if self.reservoir.add(entry) and self.in_flight is None:
            fit, holdout = self.reservoir.job()
            future = self._loop.run_in_executor(
                self._executor, self._job, self._base, fit, holdout, self._params
            )
            self.in_flight = future
            self._pending.clear()
            self._pending_seen = 0
            self._key_offsets = None
            future.add_done_callback(self._finished)

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
        pending = list(self._pending)
        key_offsets, self._key_offsets = self._key_offsets, None
        stats = self.stats
        stats.replay_dropped += self._pending_seen - len(pending)
        self._pending.clear()
        self._pending_seen = 0
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            stats.failed += 1
            stats.last_reason = f"failed: {error!r}"
            log.warning("length model refit failed: %r", error)
            return
        result = future.result()
        stats.refits += 1
        stats.last_duration_s = result.duration_s
        stats.last_reason = result.reason
        if result.accepted:
            stats.swaps += 1
            self._predictor.replace_length_model(result.model, reset_online=self._params.reset_online)
            online = self._predictor.online
            if self._params.reset_online and online is not None and key_offsets is not None:
                # The keys' offsets as the job's outcomes left them, then what came since, in order:
                # the state the proxy would have had if the swap had landed as the job started.
                online.restore_key_offsets(key_offsets)
                self._replay(pending)
        else:
            stats.rejected += 1
        log.info(
            "length model refit on %d outcomes: %s (holdout tau %s vs served %s, %.1f s)",
            result.fit_n,
            "swapped in" if result.accepted else f"rejected, {result.reason}",
            result.tau_refit,
            result.tau_served,
            result.duration_s,
        )

    def _replay(self, pending: list[tuple[RequestFeatures, int]]) -> None:
        """Teach the fresh online state the outcomes that arrived while the job ran, in their order.

        In slices of ``REPLAY_SLICE`` per loop callback (~50 us each): a few thousand in one callback
        would hold the loop for ~0.1 s. Outcomes that finish meanwhile are learned directly, a few
        positions earlier than their turn; each outcome is still learned exactly once.
        """
        self.stats.replayed += len(pending)

        def run(start: int) -> None:
            self._replaying = True
            try:
                for features, output_tokens in pending[start : start + REPLAY_SLICE]:
                    self._predictor.observe_length(features, output_tokens)
            finally:
                self._replaying = False
            if start + REPLAY_SLICE < len(pending):
                self._loop.call_soon(run, start + REPLAY_SLICE)

        if pending:
            run(0)


def process_executor() -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn")
    )


async def refit_context(
    predictor: Predictor | None, config: RefitConfig, on_start: Callable[[LengthRefitter], Any]
) -> AsyncIterator[None]:
    """An aiohttp ``cleanup_ctx`` body: the refitter and its worker process live as long as the app."""
    if not config.enabled or predictor is None:
        yield
        return
    executor = process_executor()
    refitter = LengthRefitter(
        predictor, refit_params(config), executor, asyncio.get_running_loop(), random.Random(0)
    )
    refitter.start()
    on_start(refitter)
    try:
        yield
    finally:
        refitter.stop()
        executor.shutdown(wait=False, cancel_futures=True)
