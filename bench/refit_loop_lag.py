"""Event-loop stalls caused by the background length refit (``router/length_refit.py``).

The refit job runs in a worker process, but three things happen in the proxy's own process and hold
the GIL: handing the job over (its arguments are pickled by the executor's feeder thread: the
reservoir's ~22k entries and the loaded model), receiving the result (unpickled by the executor's
manager thread), and the swap on the loop (the new model bound into the online table, the outcomes
that arrived during the job replayed). This script measures what the loop feels of them.

Setup: the bundled model, default online refinement, ShareGPT prompts from ``shared/data``; the
reservoir is filled to its bound (20,000 sample + 2,000 holdout), then ``--jobs`` refits run one
after the other (the first spawns the worker). A ticker coroutine sleeps 1 ms in a loop and records
how late each wake-up is; while a job runs, outcomes keep arriving at ``--rate`` per second.
Reported per job: max and p99 lateness while the job ran (from submit to the end of the swap),
the same over an equally long window with no job, and the durations measured directly: the
submitting call (pickling of the arguments is timed separately in this process), the done-callback
(swap + replay), and the job in the worker.

Run: ``flock /tmp/sluice-realtime.lock python bench/refit_loop_lag.py [--jobs 3] [--out NAME]``;
writes ``bench/results/refit_loop_lag.json`` (command, configuration, git revision, load average).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import pickle
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._results import write_result
from predictors import Predictor
from predictors.online import OnlineLengthCorrector
from predictors.online_features import FeatureWeightParams, OnlineFeatureWeights
from predictors.persistence import load_default_model
from predictors.refit import RefitParams
from predictors.training_data import load_samples
from router.length_refit import LengthRefitter, process_executor

TICK_S = 0.001


async def ticker(
    lateness_s: list[float], stop: asyncio.Event, late: list[tuple[float, float]] | None = None
) -> None:
    """Sleeps ``TICK_S`` in a loop; ``late`` gets (perf_counter, lateness) of wake-ups > 10 ms late."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + TICK_S
        await asyncio.sleep(TICK_S)
        lateness = loop.time() - due
        lateness_s.append(lateness)
        if late is not None and lateness > 0.01:
            late.append((time.perf_counter(), lateness))


def lag_figures(lateness_s: list[float]) -> dict[str, float]:
    ms = sorted(v * 1e3 for v in lateness_s)
    return {
        "ticks": len(ms),
        "max_ms": round(ms[-1], 2) if ms else 0.0,
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 2) if ms else 0.0,
        "median_ms": round(statistics.median(ms), 3) if ms else 0.0,
    }


def observe_cost_us(predictor: Predictor, refitter: LengthRefitter, samples: list[Any]) -> dict[str, Any]:
    """``observe_length`` per outcome with the refit's listener (its reservoir entry, from the row and
    p50 the request's prediction kept; a batch added to the reservoir every 256) and without,
    alternating blocks of 100 outcomes
    (the timed outcomes are learned as any other; those of the listening blocks enter the reservoir)."""
    with_us: list[float] = []
    without_us: list[float] = []
    for block in range(0, len(samples), 100):
        listening = (block // 100) % 2 == 0
        predictor.set_length_listener(refitter.record if listening else None)
        for s in samples[block : block + 100]:
            predictor.predict_length(s.features)  # as at the request: observe reuses what it kept
            started = time.perf_counter_ns()
            predictor.observe_length(s.features, s.output_tokens)
            (with_us if listening else without_us).append((time.perf_counter_ns() - started) / 1e3)
    predictor.set_length_listener(None)

    def pct(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "n": len(ordered),
            "p50": round(ordered[len(ordered) // 2], 1),
            "p99": round(ordered[int(0.99 * (len(ordered) - 1))], 1),
        }

    return {"with_listener": pct(with_us), "without": pct(without_us)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    samples = load_samples(["sharegpt"])
    random.Random(0).shuffle(samples)
    # A guard that accepts every candidate: the swap is part of what is measured.
    params = RefitParams(
        every_outcomes=args.every,
        min_tau_gain=-1.0,
        max_log_mae_loss=10.0,
        coverage_band=0.85,
        min_group_outcomes=0,
    )
    model = load_default_model()
    if args.freeze_data:
        # The 91k loaded samples are this script's, not a proxy's: out of the collector's sight, a full
        # collection walks what a proxy holds (tables, reservoir, rows), not the data set.
        gc.freeze()
    predictor = Predictor(model, online=OnlineLengthCorrector(), feature_weights=OnlineFeatureWeights())
    executor = process_executor()
    loop = asyncio.get_running_loop()
    # Jobs back to back (no ``MAX_WORKER_SHARE`` gap): each job's stalls are what is measured here.
    no_gap = (
        {"max_worker_share": 1.0}
        if "max_worker_share" in inspect.signature(LengthRefitter).parameters
        else {}
    )
    refitter = LengthRefitter(predictor, params, executor, loop, random.Random(0), **no_gap)
    callback_s: list[float] = []
    finished = refitter._finished

    def timed_finished(future: asyncio.Future[Any]) -> None:
        started = time.perf_counter()
        finished(future)
        callback_s.append(time.perf_counter() - started)

    refitter._finished = timed_finished  # type: ignore[method-assign]
    # The swap's other loop callbacks, timed the same way: (name, perf_counter at the end, duration).
    calls: list[tuple[str, float, float]] = []

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args)
            finally:
                ended = time.perf_counter()
                calls.append((name, ended, ended - started))

        return wrapper

    for name in ("bind_step", "commit", "encode_step"):  # absent at 41045c8 (A/B against it)
        if hasattr(refitter, "_" + name):
            setattr(refitter, "_" + name, timed(name, getattr(refitter, "_" + name)))
    done_at: list[float] = []
    # Full (generation 2) garbage collections: (perf_counter at the end, duration).
    collections: list[tuple[float, float]] = []
    gc_started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            ended = time.perf_counter()
            collections.append((ended, ended - gc_started[0]))

    gc.callbacks.append(on_gc)
    observe_cost = observe_cost_us(predictor, refitter, samples[: args.cost_outcomes])
    print("observe_length with / without the refit's listener", observe_cost, flush=True)
    refitter.start()
    stream = iter(samples * 10)
    jobs: list[dict[str, Any]] = []
    try:
        # Fill the reservoir (the first job is due after ``every`` outcomes: sample 20k + holdout 2k).
        while refitter.reservoir.since_refit < args.every - 1:
            s = next(stream)
            predictor.observe_length(s.features, s.output_tokens)
        for job in range(args.jobs):
            fit, holdout = list(refitter.reservoir._sample), list(refitter.reservoir._recent)
            started = time.perf_counter()
            pickled = pickle.dumps((model, fit, holdout, params), protocol=pickle.HIGHEST_PROTOCOL)
            pickle_s = time.perf_counter() - started
            quiet: list[float] = []
            stop = asyncio.Event()
            task = asyncio.create_task(ticker(quiet, stop))
            await asyncio.sleep(args.quiet_s)
            stop.set()
            await task
            lateness: list[float] = []
            late: list[tuple[float, float]] = []
            calls.clear()
            collections.clear()
            stop = asyncio.Event()
            task = asyncio.create_task(ticker(lateness, stop, late))
            await asyncio.sleep(0.05)
            while refitter.in_flight is None:  # the outcome that makes the job due submits it
                s = next(stream)
                started = time.perf_counter()
                predictor.observe_length(s.features, s.output_tokens)
                submit_s = time.perf_counter() - started
            future = refitter.in_flight
            job_started = time.perf_counter()
            future.add_done_callback(lambda _: done_at.append(time.perf_counter()))
            arrived = 0
            while not future.done():
                await asyncio.sleep(1.0 / args.rate)
                s = next(stream)
                predictor.observe_length(s.features, s.output_tokens)
                arrived += 1
            await asyncio.sleep(0.2)  # the done-callback and the replay slices
            stop.set()
            await task
            result = future.result()
            jobs.append(
                {
                    "job": job,
                    "accepted": result.accepted,
                    "fit_n": result.fit_n,
                    "holdout_n": result.holdout_n,
                    "worker_duration_s": round(result.duration_s, 2),
                    "wall_s": round(time.perf_counter() - job_started, 2),
                    "outcomes_during_job": arrived,
                    "pickled_arguments_mb": round(len(pickled) / 1e6, 2),
                    # What the executor's feeder thread pickles in one call if handed the entries as
                    # objects (before ``_encode_step``), timed here on the same data.
                    "pickle_arguments_ms": round(pickle_s * 1e3, 2),
                    "submitting_call_ms": round(submit_s * 1e3, 2),
                    "done_callback_ms": round(callback_s[-1] * 1e3, 2) if callback_s else None,
                    "lag_during_job": lag_figures(lateness),
                    "lag_quiet": lag_figures(quiet),
                    # Wake-ups > 10 ms late: seconds after the submit and after the future's
                    # done-callback (negative: before it), lateness in ms.
                    "late_ticks": [
                        {
                            "after_submit_s": round(t - job_started, 3),
                            "after_done_s": round(t - done_at[-1], 3),
                            "late_ms": round(v * 1e3, 1),
                        }
                        for t, v in late
                    ],
                    "bind_steps": sum(1 for c in calls if c[0] == "bind_step"),
                    "bind_step_max_ms": round(
                        max((c[2] for c in calls if c[0] == "bind_step"), default=0) * 1e3, 2
                    ),
                    "encode_steps": sum(1 for c in calls if c[0] == "encode_step"),
                    "encode_step_max_ms": round(
                        max((c[2] for c in calls if c[0] == "encode_step"), default=0) * 1e3, 2
                    ),
                    "commit_ms": [round(c[2] * 1e3, 2) for c in calls if c[0] == "commit"],
                    "full_gc": [
                        {"after_submit_s": round(t - job_started, 3), "ms": round(d * 1e3, 1)}
                        for t, d in collections
                    ],
                }
            )
            print(jobs[-1], flush=True)
            # Until the next job is due (outcomes learned without a ticker: not measured).
            while refitter.reservoir.since_refit < args.every - 1:
                s = next(stream)
                predictor.observe_length(s.features, s.output_tokens)
    finally:
        refitter.stop()
        executor.shutdown(wait=True, cancel_futures=True)
    return {
        "observe_length_us": observe_cost,
        "jobs": jobs,
        "stats": {"replayed": refitter.stats.replayed, "dropped": refitter.stats.replay_dropped},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--every", type=int, default=22_000, help="outcomes between refits")
    parser.add_argument("--rate", type=float, default=200.0, help="outcomes per second during a job")
    parser.add_argument(
        "--cost-outcomes", type=int, default=4_000, help="outcomes timed for the listener's cost"
    )
    parser.add_argument("--quiet-s", type=float, default=2.0, help="length of the no-job window")
    parser.add_argument(
        "--no-freeze-data", dest="freeze_data", action="store_false", help="leave the samples to the GC"
    )
    parser.add_argument("--out", default="refit_loop_lag")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    config = {**vars(args), "feature_weights": str(FeatureWeightParams())}
    path = write_result(args.out, config, figures)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
