"""Guarded background refit of the length model: learns a new workload, rejects bad refits, stays
bounded, and runs in a worker process while the event loop keeps serving."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import math
import multiprocessing
import os
import pickle
import random
import threading
import time

import numpy as np
import pytest
from scipy.stats import kendalltau

from core.config import PredictorsConfig, RefitConfig
from core.types import RequestFeatures
from predictors import Predictor
from predictors.features import length_features
from predictors.length_training import TrainConfig, fit_length_model
from predictors.online import OnlineLengthCorrector
from predictors.online_features import OnlineFeatureWeights
from predictors.output_length import OutputLengthModel
from predictors.refit import (
    Entry,
    RefitParams,
    RefitReservoir,
    RefitResult,
    compact_entry,
    entry_row,
    fit_refit,
    group_key,
    run_refit,
    run_refit_encoded,
)
from router.length_refit import MAX_WORKER_SHARE, LengthRefitter, process_executor, refit_context
from tests.unit.length_fixtures import (
    NEW_LONG,
    chat_features,
    synthetic_samples,
    unseen_cue_stream,
)

PARAMS = RefitParams(every_outcomes=400, reservoir_size=600, holdout=200, min_count=2)


@pytest.fixture(scope="module")
def model() -> OutputLengthModel:
    return fit_length_model(synthetic_samples(600), TrainConfig(min_df=2, n_folds=3)).model


def _entries(model: OutputLengthModel, stream: list[tuple[str, int]]) -> list[Entry]:
    """Outcomes as the reservoir stores them, served by the offline model alone."""
    out = []
    for text, tokens in stream:
        features = chat_features(text)
        out.append(compact_entry(length_features(features), tokens, model.predict(features).p50_tokens))
    return out


def _tau(model: OutputLengthModel, stream: list[tuple[str, int]]) -> float:
    p50 = [model.predict(chat_features(text)).p50_tokens for text, _ in stream]
    return float(kendalltau(np.asarray(p50), np.asarray([t for _, t in stream]))[0])


def test_compact_entry_round_trips_the_feature_row() -> None:
    row = length_features(chat_features("Write a detailed essay about rivers, please!"))
    assert entry_row(compact_entry(row, 10, 5.0)) == row
    empty = length_features(chat_features(""))
    assert entry_row(compact_entry(empty, 1, 1.0)) == empty


def test_refit_learns_a_new_vocabulary_and_the_guard_accepts_it(model) -> None:
    fit, holdout = (
        _entries(model, unseen_cue_stream(600, seed=1)),
        _entries(model, unseen_cue_stream(200, seed=2)),
    )
    result = run_refit(model, fit, holdout, PARAMS)
    assert result.accepted, result.reason
    assert result.tau_refit is not None and result.tau_served is not None
    assert result.tau_refit > result.tau_served + 0.2
    fresh = unseen_cue_stream(300, seed=3)
    assert _tau(result.model, fresh) > 0.45  # best possible with this noise: ~0.52
    assert _tau(model, fresh) < 0.2
    # The p90 is calibrated on the new workload.
    covered = [t <= result.model.predict(chat_features(text)).p90_tokens for text, t in fresh]
    assert 0.8 <= sum(covered) / len(covered) <= 0.97


def test_a_refit_that_ranks_worse_than_what_was_served_is_rejected(model) -> None:
    """Outcomes whose lengths are noise teach the refit nothing; the holdout's served p50s were right."""
    rng = random.Random(4)
    noise = [
        (text, max(1, int(60 * rng.lognormvariate(0.0, 1.0)))) for text, _ in unseen_cue_stream(600, seed=5)
    ]
    fit = _entries(model, noise)
    right = _entries(model, unseen_cue_stream(200, seed=6))
    holdout = [(e[0], e[1], e[2], e[3], float(e[3]), e[5]) for e in right]
    result = run_refit(model, fit, holdout, PARAMS)
    assert not result.accepted
    assert "tau" in result.reason
    # The facade is untouched by a rejected refit: a predictor never sees it.


def test_refit_corrects_the_loaded_model_not_a_previous_refit(model) -> None:
    """Refitting twice on the same outcomes gives the same model: nothing is counted twice."""
    fit = _entries(model, unseen_cue_stream(400, seed=7))
    once = fit_refit(model, fit, PARAMS)
    assert fit_refit(model, fit, PARAMS).unigrams == once.unigrams
    # Terms the outcomes never show keep the loaded model's weight.
    seen = {token for e in fit for token in (*e[0].split(" "), *e[1].split(" "))}
    untouched = [t for t in model.unigrams if t not in seen]
    assert untouched
    assert all(once.unigrams[t] == model.unigrams[t] for t in untouched)


def test_reservoir_memory_stays_bounded() -> None:
    params = RefitParams(every_outcomes=50, reservoir_size=100, holdout=20)
    reservoir = RefitReservoir(params, random.Random(0))
    due = 0
    for i in range(5_000):
        entry: Entry = (f"w{i}", "", ("c:x",), i, 1.0, "")
        if reservoir.add(entry):
            due += 1
            fit, holdout = reservoir.job()
            assert len(fit) <= 100 and len(holdout) == 20
            assert all(h[3] > f[3] for h in holdout for f in fit)  # the holdout is the newest
        assert len(reservoir) <= 120
    assert due == 5_000 // 50  # one per every_outcomes (the first needs holdout outcomes in the sample)
    # The sample is uniform over what left the holdout queue, not the first 100 outcomes.
    fit, _ = reservoir.job()
    assert max(f[3] for f in fit) > 2_500


def test_swap_resets_the_online_corrections(model) -> None:
    """Feature weights and model levels are forgotten; what is served is the refit plus the key's offset."""
    weights = OnlineFeatureWeights()
    online = OnlineLengthCorrector()
    predictor = Predictor(model, online=online, feature_weights=weights)
    for text, tokens in unseen_cue_stream(100, seed=8):
        predictor.observe_length(chat_features(text), tokens)
    assert len(weights) > 0
    refit = fit_refit(model, _entries(model, unseen_cue_stream(400, seed=9)), PARAMS)
    predictor.replace_length_model(refit, reset_online=True)
    assert len(weights) == 0 and online.n_models == 0
    features = chat_features(f"{NEW_LONG[0]} tea")
    key_offset = online.correction(features.route, "m", features.tenant).location
    estimate = predictor.predict_length(features)
    expected = refit.log_quantiles(features)
    assert math.log1p(estimate.p50_tokens) == pytest.approx(expected.z50 + key_offset, abs=1e-9)


def _job_in_worker(
    gate_path: str, base: OutputLengthModel, fit: list[Entry], holdout: list[Entry], params: RefitParams
) -> RefitResult:
    """``run_refit`` held until the test opens the gate, stamped with the worker's pid (top level: picklable).

    The gate is a file the test creates once it has seen the loop serve with the job still running, so
    the test does not depend on how long a spawn or a fit takes."""
    deadline_s = time.monotonic() + 60.0
    while not os.path.exists(gate_path) and time.monotonic() < deadline_s:
        time.sleep(0.005)
    result = run_refit(base, fit, holdout, params)
    result.model.metadata["worker_pid"] = os.getpid()
    return result


async def _until_idle(refitter: LengthRefitter) -> None:
    """Let the done-callback, the slices of the new table's bind and the replay run."""
    for _ in range(100_000):
        if refitter.idle:
            return
        await asyncio.sleep(0)
    raise AssertionError("the refitter did not finish its swap")


def test_refit_runs_in_another_process_while_the_loop_keeps_serving(model, tmp_path) -> None:
    gate = tmp_path / "gate"

    async def scenario() -> tuple[LengthRefitter, Predictor, int]:
        predictor = Predictor(model, online=OnlineLengthCorrector(), feature_weights=OnlineFeatureWeights())
        executor = process_executor()
        try:
            refitter = LengthRefitter(
                predictor,
                PARAMS,
                executor,
                asyncio.get_running_loop(),
                random.Random(0),
                job=functools.partial(_job_in_worker, str(gate)),
            )
            refitter.start()
            for text, tokens in unseen_cue_stream(400, seed=10):
                predictor.observe_length(chat_features(text), tokens)
            future = refitter.in_flight
            assert future is not None and not future.done()  # observe returned with the job still running
            ticks = 0
            while ticks < 20:  # the loop keeps serving while the worker holds the job
                await asyncio.sleep(0.001)
                predictor.predict_length(chat_features("what is the capital of tea"))
                ticks += 1
            assert not future.done()
            gate.touch()
            await asyncio.wait_for(asyncio.shield(future), timeout=60.0)
            await _until_idle(refitter)
            refitter.stop()
            return refitter, predictor, ticks
        finally:
            executor.shutdown(wait=True)

    refitter, predictor, ticks = asyncio.run(scenario())
    assert ticks == 20
    assert refitter.stats.refits == 1 and refitter.stats.swaps == 1, refitter.stats
    assert predictor.length_model.metadata["worker_pid"] != os.getpid()
    assert refitter.stats.last_duration_s > 0.0


def test_refit_config_is_validated() -> None:
    assert PredictorsConfig().refit.enabled  # on by default (docs/predictors.md, "Background refit")
    # Without online refinement the default is inactive; asking for it explicitly is an error.
    assert PredictorsConfig(online_refinement=False).refit.enabled
    with pytest.raises(ValueError, match="online_refinement"):
        PredictorsConfig(online_refinement=False, refit=RefitConfig(enabled=True))
    with pytest.raises(ValueError, match="min_group_outcomes"):
        RefitConfig(min_group_outcomes=-1)
    with pytest.raises(ValueError, match="group_max_tau_loss"):
        RefitConfig(group_max_tau_loss=-0.1)
    with pytest.raises(ValueError, match="holdout"):
        RefitConfig(holdout=5)
    assert RefitConfig().max_worker_share == MAX_WORKER_SHARE  # one default, however the refitter is built
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match="max_worker_share"):
            RefitConfig(max_worker_share=share)
    with pytest.raises(ValueError, match="n_folds"):
        RefitParams(n_folds=1)


def test_a_long_answer_tenant_stays_learned_across_a_swap(model) -> None:
    """The refit has no tenant feature: the tenant's offset from its model survives the reset."""
    predictor = Predictor(model, online=OnlineLengthCorrector(), feature_weights=OnlineFeatureWeights())
    prompt = "write a detailed essay about tea rivers"
    long_f, normal_f = chat_features(prompt, tenant="long"), chat_features(prompt, tenant="normal")
    base_p50 = predictor.predict_length(long_f).p50_tokens
    rng = random.Random(11)
    entries: list[Entry] = []
    truth: dict[str, list[int]] = {"long": [], "normal": []}
    for _ in range(300):
        for tenant, features, factor in (("long", long_f, 3.0), ("normal", normal_f, 1.0)):
            tokens = int(factor * base_p50 * rng.lognormvariate(0, 0.3))
            truth[tenant].append(tokens)
            served = predictor.predict_length(features).p50_tokens
            entries.append(compact_entry(length_features(features), tokens, served))
            predictor.observe_length(features, tokens)
    refit = fit_refit(model, entries, PARAMS)
    predictor.replace_length_model(refit, reset_online=True)
    assert predictor.predict_length(long_f).p50_tokens == pytest.approx(np.median(truth["long"]), rel=0.2)
    assert predictor.predict_length(normal_f).p50_tokens == pytest.approx(np.median(truth["normal"]), rel=0.2)


def _group_entries(
    model: OutputLengthModel, stream: list[tuple[str, int]], tenant: str, invert: bool = False
) -> list[Entry]:
    """Outcomes of one tenant's group, served by the offline model; ``invert``: the cue words mean the
    opposite for this tenant (long cues answer short and the reverse)."""
    out = []
    for text, tokens in stream:
        features = chat_features(text, tenant=tenant)
        if invert:
            tokens = max(1, int(4500 / tokens))  # ~300 <-> ~15, the noise mirrored
        served = model.predict(features).p50_tokens
        out.append(compact_entry(length_features(features), tokens, served, group_key(features)))
    return out


def test_a_group_the_candidate_ranks_worse_blocks_the_swap(model) -> None:
    """A small tenant for which the new words mean the opposite: pooled the candidate wins, but the
    per-group guard keeps the served model; judged pooled only, the swap goes through."""
    fit = _group_entries(model, unseen_cue_stream(600, seed=1), "big")
    holdout = [
        *_group_entries(model, unseen_cue_stream(400, seed=2), "big"),
        *_group_entries(model, unseen_cue_stream(100, seed=3), "small", invert=True),
    ]
    # The small tenant's answers also miss the candidate's p90 (~0.81 pooled): the coverage band is
    # widened so that what is tested here is the per-group check, not the pooled coverage one.
    params = dataclasses.replace(PARAMS, coverage_band=0.2)
    guarded = run_refit(model, fit, holdout, params)
    assert not guarded.accepted
    assert "group default|m|small" in guarded.reason
    small = guarded.groups["default|m|small"]
    assert small["n"] == 100
    assert small["tau_refit"] is not None and small["tau_served"] is not None
    assert small["tau_refit"] < small["tau_served"]
    pooled_only = run_refit(model, fit, holdout, dataclasses.replace(params, min_group_outcomes=0))
    assert pooled_only.accepted, pooled_only.reason
    assert pooled_only.groups == {}
    # A group below min_group_outcomes is not judged on its own (too few outcomes to rank reliably).
    few = run_refit(model, fit, holdout, dataclasses.replace(params, min_group_outcomes=101))
    assert few.accepted, few.reason
    assert set(few.groups) == {"default|m|big"}


def test_every_group_helped_gets_the_candidate(model) -> None:
    fit = [
        *_group_entries(model, unseen_cue_stream(400, seed=4), "big"),
        *_group_entries(model, unseen_cue_stream(200, seed=5), "small"),
    ]
    holdout = [
        *_group_entries(model, unseen_cue_stream(300, seed=6), "big"),
        *_group_entries(model, unseen_cue_stream(100, seed=7), "small"),
    ]
    result = run_refit(model, fit, holdout, PARAMS)
    assert result.accepted, result.reason
    assert set(result.groups) == {"default|m|big", "default|m|small"}
    for figures in result.groups.values():
        assert figures["tau_refit"] is not None and figures["tau_served"] is not None
        assert figures["tau_refit"] > figures["tau_served"] + 0.2


def _gated_refit(
    gate: threading.Event,
    base: OutputLengthModel,
    fit: list[Entry],
    holdout: list[Entry],
    params: RefitParams,
) -> RefitResult:
    """A refit job (run in a thread by these tests) that starts only when the test opens ``gate``."""
    gate.wait(30.0)
    return run_refit(base, fit, holdout, params)


def test_outcomes_that_arrive_during_a_job_are_replayed_after_the_swap(model) -> None:
    """The swap resets the online state; what was learned while the job ran is taught to it again, so
    the proxy ends where it would be had the swap come before those outcomes (nothing dropped)."""
    gate = threading.Event()
    gated_job = functools.partial(_gated_refit, gate)

    first, during = unseen_cue_stream(400, seed=10), unseen_cue_stream(60, seed=12)

    async def scenario() -> tuple[LengthRefitter, Predictor]:
        predictor = Predictor(model, online=OnlineLengthCorrector(), feature_weights=OnlineFeatureWeights())
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
            refitter = LengthRefitter(
                predictor, PARAMS, executor, asyncio.get_running_loop(), random.Random(0), job=gated_job
            )
            refitter.start()
            for text, tokens in first:
                predictor.observe_length(chat_features(text), tokens)
            future = refitter.in_flight
            assert future is not None and not future.done()
            for text, tokens in during:  # learned by the old online state, which the swap resets
                predictor.observe_length(chat_features(text), tokens)
            gate.set()
            await asyncio.wait_for(asyncio.shield(future), timeout=30.0)
            await _until_idle(refitter)
            refitter.stop()
        return refitter, predictor

    refitter, predictor = asyncio.run(scenario())
    assert refitter.stats.swaps == 1 and refitter.stats.replayed == len(during), refitter.stats
    assert refitter.stats.replay_dropped == 0

    def reference(replayed: list[tuple[str, int]]) -> Predictor:
        ref = Predictor(model, online=OnlineLengthCorrector(), feature_weights=OnlineFeatureWeights())
        for text, tokens in first:
            ref.observe_length(chat_features(text), tokens)
        ref.replace_length_model(predictor.length_model, reset_online=True)
        for text, tokens in replayed:
            ref.observe_length(chat_features(text), tokens)
        return ref

    probes = [chat_features(text) for text, _ in unseen_cue_stream(40, seed=13)]

    def served(p: Predictor) -> list[tuple[float, float]]:
        return [(e.p50_tokens, e.p90_tokens) for e in map(p.predict_length, probes)]

    assert served(predictor) == served(reference(during))
    assert served(predictor) != served(reference([]))  # the replay is what makes them equal


def test_the_worker_process_starts_only_at_the_first_refit(model) -> None:
    """A proxy with the refit on spawns no process until a refit is due (tests and short runs pay none)."""

    async def scenario() -> tuple[int, int, int]:
        predictor = Predictor(model, online=OnlineLengthCorrector(), feature_weights=OnlineFeatureWeights())
        started: list[LengthRefitter] = []
        context = refit_context(predictor, RefitConfig(), started.append)
        await anext(context)
        at_start = len(multiprocessing.active_children())
        for text, tokens in unseen_cue_stream(300, seed=14):  # far below every_outcomes
            predictor.observe_length(chat_features(text), tokens)
        after_outcomes = len(multiprocessing.active_children())
        await context.aclose()
        return len(started), at_start, after_outcomes

    assert asyncio.run(scenario()) == (1, 0, 0)


def test_the_app_builds_the_refitter_with_the_configured_worker_share(model) -> None:
    """``predictors.refit.max_worker_share`` reaches the refitter the proxy runs."""

    async def scenario() -> float:
        predictor = Predictor(model, online=OnlineLengthCorrector(), feature_weights=OnlineFeatureWeights())
        started: list[LengthRefitter] = []
        context = refit_context(predictor, RefitConfig(max_worker_share=0.5), started.append)
        await anext(context)
        await context.aclose()
        return started[0].max_worker_share

    assert asyncio.run(scenario()) == 0.5


def test_outcomes_held_during_a_job_are_bounded(model) -> None:
    """A job that outlasts ``holdout`` outcomes keeps only the newest of them for the replay."""
    gate = threading.Event()
    gated_job = functools.partial(_gated_refit, gate)

    async def scenario() -> LengthRefitter:
        predictor = Predictor(model, online=OnlineLengthCorrector(), feature_weights=OnlineFeatureWeights())
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
            refitter = LengthRefitter(
                predictor, PARAMS, executor, asyncio.get_running_loop(), random.Random(0), job=gated_job
            )
            refitter.start()
            for text, tokens in unseen_cue_stream(400, seed=10):
                predictor.observe_length(chat_features(text), tokens)
            future = refitter.in_flight
            assert future is not None
            for text, tokens in unseen_cue_stream(PARAMS.holdout + 150, seed=15):
                predictor.observe_length(chat_features(text), tokens)
            assert len(refitter._pending) == PARAMS.holdout
            gate.set()
            await asyncio.wait_for(asyncio.shield(future), timeout=30.0)
            await _until_idle(refitter)
            refitter.stop()
        return refitter

    stats = asyncio.run(scenario()).stats
    assert stats.swaps == 1, stats
    assert (stats.replayed, stats.replay_dropped) == (PARAMS.holdout, 150)


def _request(text: str, request_id: str, **kwargs: object) -> RequestFeatures:
    return dataclasses.replace(chat_features(text, **kwargs), request_id=request_id)  # type: ignore[arg-type]


class _Unused(concurrent.futures.Executor):
    """No job is due in these tests: the refitter must not submit one."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        raise AssertionError("no refit job expected")


def test_the_reservoir_keeps_the_p50_served_at_the_decision_and_the_requests_row(model) -> None:
    """The guard's reference is what was served: the p50 ``predict`` gave the request, not what the
    predictor would say at the outcome after learning from the requests that finished meanwhile."""
    predictor = Predictor(model, online=OnlineLengthCorrector(), feature_weights=OnlineFeatureWeights())
    loop = asyncio.new_event_loop()
    try:
        refitter = LengthRefitter(predictor, PARAMS, _Unused(), loop, random.Random(0))
        refitter.start()
        served = _request("write a detailed essay about tea rivers", "served")
        served_p50 = predictor.predict_length(served).p50_tokens
        for i in range(60):  # the same key's outcomes finish while it is in flight, all much longer
            other = _request(f"write a detailed essay about tea rivers {i}", f"o{i}")
            predictor.predict_length(other)
            predictor.observe_length(other, 3_000)
        now_p50 = predictor.predict_length(_request(served.last_user_text, "probe")).p50_tokens
        assert now_p50 > 1.5 * served_p50  # the online correction moved: the two references differ
        predictor.observe_length(served, 40)
        _, recent = refitter.reservoir.job()
        assert recent[-1] == compact_entry(length_features(served), 40, served_p50, group_key(served))
        # An outcome whose prediction the predictor no longer holds: what it would serve now.
        unseen = _request("name three rivers", "unseen")
        expected = predictor.predict_length(_request("name three rivers", "probe2")).p50_tokens
        predictor.observe_length(unseen, 12)
        _, recent = refitter.reservoir.job()
        assert recent[-1] == compact_entry(length_features(unseen), 12, expected, group_key(unseen))
        refitter.stop()
    finally:
        loop.close()


def test_the_refit_listener_does_not_change_what_the_predictor_learns(model) -> None:
    """Handing the request's row and p50 to the listener leaves the online learning bit-identical."""
    stream = unseen_cue_stream(300, seed=4)
    plain = Predictor(model, online=OnlineLengthCorrector(), feature_weights=OnlineFeatureWeights())
    listened = Predictor(model, online=OnlineLengthCorrector(), feature_weights=OnlineFeatureWeights())
    loop = asyncio.new_event_loop()
    try:
        refitter = LengthRefitter(
            listened, dataclasses.replace(PARAMS, every_outcomes=10_000), _Unused(), loop, random.Random(0)
        )
        refitter.start()
        for predictor in (plain, listened):
            in_flight: list[tuple[RequestFeatures, int]] = []
            order = random.Random(5)
            for i, (text, tokens) in enumerate(stream):
                features = _request(text, f"r{i}", tenant=f"t{i % 3}")
                if i % 7 != 0:  # every 7th outcome arrives unpredicted (the predictor recomputes)
                    predictor.predict_length(features)
                if i % 11 == 0:  # and some under an id whose features changed since the prediction
                    features = dataclasses.replace(features, last_user_text=features.last_user_text + " now")
                in_flight.append((features, tokens))
                if len(in_flight) > 8:
                    predictor.observe_length(*in_flight.pop(order.randrange(len(in_flight))))
            for features, tokens in in_flight:
                predictor.observe_length(features, tokens)
        assert len(refitter.reservoir) == len(stream)
        for text, _ in unseen_cue_stream(40, seed=9):
            for tenant in ("t0", "t1", "t2"):
                probe = _request(text, "probe", tenant=tenant)
                assert plain.predict_length(probe) == listened.predict_length(probe)
        refitter.stop()
    finally:
        loop.close()


def test_the_job_gets_the_reservoirs_entries(model) -> None:
    """Stored as they come and pickled one by one when kept, the entries a job receives are the ones
    a reservoir of ready-made entries (the evaluation's) holds, with the same RNG."""
    captured: list[tuple[list[Entry], list[Entry]]] = []

    def job(base, fit, holdout, params):  # type: ignore[no-untyped-def]
        captured.append((fit, holdout))
        raise RuntimeError("captured")

    async def scenario() -> LengthRefitter:
        predictor = Predictor(model, online=OnlineLengthCorrector(), feature_weights=OnlineFeatureWeights())
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            refitter = LengthRefitter(
                predictor, PARAMS, executor, asyncio.get_running_loop(), random.Random(0), job=job
            )
            refitter.start()
            reference = RefitReservoir(PARAMS, random.Random(0))
            for i, (text, tokens) in enumerate(unseen_cue_stream(PARAMS.every_outcomes, seed=11)):
                features = _request(text, f"r{i}", tenant=f"t{i % 2}")
                served = predictor.predict_length(features).p50_tokens
                reference.add(compact_entry(length_features(features), tokens, served, group_key(features)))
                predictor.observe_length(features, tokens)
            assert refitter.in_flight is not None
            await _until_idle(refitter)
            refitter.stop()
            assert captured == [reference.job()]
            return refitter
        finally:
            executor.shutdown(wait=True)

    refitter = asyncio.run(scenario())
    assert refitter.stats.failed == 1
    fit, holdout = captured[0]
    assert len(fit) == PARAMS.every_outcomes - PARAMS.holdout and len(holdout) == PARAMS.holdout


@pytest.mark.parametrize(
    ("every", "size", "holdout"), [(50, 100, 20), (7, 30, 20), (500, 100, 20), (5, 10, 20), (1, 12, 10)]
)
def test_outcomes_until_due_matches_adding_one_by_one(every: int, size: int, holdout: int) -> None:
    """The refitter buffers outcomes and adds them in batches; the count that says when a refit is
    due must be exact, or jobs would start at other outcomes than before."""
    params = RefitParams(every_outcomes=every, reservoir_size=size, holdout=holdout)
    reservoir = RefitReservoir(params, random.Random(0))
    row = length_features(chat_features("a b c"))
    rng = random.Random(1)
    for _ in range(40):
        until = reservoir.outcomes_until_due()
        if size < holdout:  # the sample never reaches the holdout's size: never due
            assert not any(reservoir.add_outcome(row, 1, 1.0, "") for _ in range(300))
            return
        answers = [reservoir.add_outcome(row, 1, 1.0, "") for _ in range(until)]
        assert answers == [False] * (until - 1) + [True]
        if rng.random() < 0.7:
            reservoir.job_parts()  # a refit started: the count restarts (else it stays due)


def test_jobs_take_at_most_their_share_of_the_time(model) -> None:
    """At a high outcome rate the next job waits: a job that ran ``d`` seconds is followed by at
    least ``d * (1 / share - 1)`` without one, so the worker does not take a core from the proxy."""
    clock = [0.0]

    def job(base, fit, holdout, params):  # type: ignore[no-untyped-def]
        raise RuntimeError("not fitted in this test")

    async def scenario() -> None:
        predictor = Predictor(model, online=OnlineLengthCorrector(), feature_weights=OnlineFeatureWeights())
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        stream = iter(unseen_cue_stream(10 * PARAMS.every_outcomes, seed=12))

        def feed(n: int) -> None:
            for _ in range(n):
                text, tokens = next(stream)
                predictor.observe_length(chat_features(text), tokens)

        try:
            refitter = LengthRefitter(
                predictor,
                PARAMS,
                executor,
                asyncio.get_running_loop(),
                random.Random(0),
                job=job,
                max_worker_share=0.25,
                now_s=lambda: clock[0],
            )
            refitter.start()
            feed(PARAMS.every_outcomes)
            assert refitter.in_flight is not None  # the first job starts when due
            clock[0] = 10.0  # it runs 10 s
            await _until_idle(refitter)
            assert refitter.next_job_s == 40.0
            clock[0] = 39.0
            feed(PARAMS.every_outcomes + 50)  # due, but within the gap: no job
            assert refitter.in_flight is None and refitter.stats.failed == 1
            clock[0] = 40.0
            feed(1)  # the first outcome after the gap starts it
            assert refitter.in_flight is not None
            await _until_idle(refitter)
            assert refitter.stats.failed == 2
            refitter.stop()
        finally:
            executor.shutdown(wait=True)

    asyncio.run(scenario())
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="max_worker_share"):
            LengthRefitter(Predictor(model), PARAMS, _Unused(), loop, random.Random(0), max_worker_share=0.0)
    finally:
        loop.close()


def test_sample_entries_are_pickled_once_and_jobs_hand_over_the_same_entries() -> None:
    """A job's hand-over pickles the entries no earlier job pickled and keeps the bytes in their
    slots; what the worker reads is still exactly the sample, also for entries replaced meanwhile."""
    params = RefitParams(every_outcomes=50, reservoir_size=100, holdout=20)
    reservoir = RefitReservoir(params, random.Random(0))
    jobs = 0
    for i in range(3_000):
        entry: Entry = (f"w{i} x", "y", ("c:x",), i, 1.5, f"g{i % 3}")
        if reservoir.add(entry):
            expected_fit, _ = reservoir.job()
            fit, _ = reservoir.job_parts()
            fresh = sum(not isinstance(item, bytes) for item in fit)
            # the sample moves on while the slices are handed over
            reservoir.add((f"late{i}", "", (), i, 1.0, ""))
            blobs = [
                reservoir.encode_fit(fit, start, min(start + 30, len(fit)))
                for start in range(0, len(fit), 30)
            ]
            handed = [pickle.loads(b) for blob in blobs for b in pickle.loads(blob)]
            assert handed == expected_fit
            jobs += 1
            if jobs > 3:
                assert fresh < len(fit) // 2  # most entries were pickled by an earlier job
    assert jobs > 10
    fit, _ = reservoir.job()
    assert all(isinstance(e, tuple) and len(e) == 6 for e in fit)


def _verdict_job(accepted, base, fit, holdout, params):  # type: ignore[no-untyped-def]
    return dataclasses.replace(run_refit(base, fit, holdout, params), accepted=accepted)


def test_a_rejected_candidate_comes_back_without_its_weights(model) -> None:
    """The proxy unpickles what the worker returns: a candidate it will not serve is sent without
    its weights; an accepted one whole."""
    fit = _entries(model, unseen_cue_stream(600, seed=13))
    holdout = _entries(model, unseen_cue_stream(200, seed=14))
    base_blob = pickle.dumps(model)
    fit_blobs = [pickle.dumps([pickle.dumps(e) for e in fit])]
    holdout_blobs = [pickle.dumps(holdout)]
    rejected = run_refit_encoded(
        functools.partial(_verdict_job, False), base_blob, fit_blobs, holdout_blobs, PARAMS
    )
    accepted = run_refit_encoded(
        functools.partial(_verdict_job, True), base_blob, fit_blobs, holdout_blobs, PARAMS
    )
    assert not rejected.model.unigrams and not rejected.model.categorical
    assert len(pickle.dumps(rejected)) < len(pickle.dumps(accepted)) / 5
    assert accepted.model.unigrams == fit_refit(model, [*fit, *holdout], PARAMS).unigrams
    assert (rejected.tau_refit, rejected.fit_n) == (accepted.tau_refit, accepted.fit_n)
