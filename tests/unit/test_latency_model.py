"""Per-backend TTFT/TPOT model: learns each backend's speed from outcomes on a queue with known speeds."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.types import BackendCostEstimate, BackendView, Health
from predictors.latency import (
    TPOT_TERMS,
    TTFT_TERMS,
    ForgettingRidge,
    LatencyModel,
    LatencyPriors,
    _fold_loop,
    _fold_step,
    _solve_spd,
    backend_load,
    request_terms,
)
from predictors.latency_eval import evaluate_latency
from tests.unit.length_fixtures import chat_features
from tests.unit.synthetic_queue import A100, H100, run_queue


def _view(backend_id: str = "b", **kw: object) -> BackendView:
    fields: dict[str, object] = {
        "backend_id": backend_id,
        "models": frozenset({"m"}),
        "gpu_class": "unknown",
        "weight": 1.0,
        "max_concurrency": None,
        "health": Health.READY,
        "in_flight_requests": 0,
        "awaiting_first_byte": 0,
        "in_flight_prompt_tokens": 0,
        "in_flight_predicted_decode_tokens": 0.0,
    }
    fields.update(kw)
    return BackendView(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fleet_samples():
    return run_queue({"h100": H100, "a100": A100}, rate_per_s=12.0, n_per_backend=500, seed=3)


def test_learns_heterogeneous_speeds_within_target_mape(fleet_samples) -> None:
    report = evaluate_latency(fleet_samples, warmup=50)
    pooled = report["pooled"]
    assert pooled["ttft"]["mape"] <= 0.20
    assert pooled["tpot"]["mape"] <= 0.20
    assert pooled["e2e"]["mape"] <= 0.20
    ttft_h100, tpot_h100 = report["coefficients"]["h100"]["ttft"], report["coefficients"]["h100"]["tpot"]
    ttft_a100, tpot_a100 = report["coefficients"]["a100"]["ttft"], report["coefficients"]["a100"]["tpot"]
    # Uncached prefill per 1000 tokens: truth 17.3 ms (H100) vs 47.8 ms (A100), never told which is which.
    assert ttft_h100[1] == pytest.approx(17.3, rel=0.3)
    assert ttft_a100[1] == pytest.approx(47.8, rel=0.3)
    assert tpot_a100[0] > 1.8 * tpot_h100[0]


def test_ranks_the_faster_backend_first_after_learning(fleet_samples) -> None:
    model = LatencyModel()
    for s in fleet_samples:
        model.observe(s.view, s.features, s.prefix_matched_tokens, s.outcome.ttft_ms, None)
    idle = [_view("h100"), _view("a100")]
    costs = model.estimate_all(idle, "m", 2000, {}, 100.0)
    assert costs["h100"].ttft_ms < 0.6 * costs["a100"].ttft_ms
    # A long cached prefix on the slow backend can beat an uncached prompt on the fast one.
    cached = model.estimate_all(idle, "m", 2000, {"a100": 2000}, 100.0)
    assert cached["a100"].prefill_ms < costs["h100"].prefill_ms


def test_priors_before_any_observation_and_more_load_never_faster() -> None:
    model = LatencyModel()
    idle = model.estimate(_view(), 1000, 0, 200.0)
    busy = model.estimate(
        _view(
            in_flight_requests=40,
            awaiting_first_byte=8,
            in_flight_prompt_tokens=40_000,
            awaiting_prompt_tokens=8000,
        ),
        1000,
        0,
        200.0,
    )
    assert 0 < idle.ttft_ms < busy.ttft_ms
    assert idle.tpot_ms <= busy.tpot_ms
    assert idle.e2e_ms == pytest.approx(idle.ttft_ms + 199 * idle.tpot_ms)
    assert idle.cached_prompt_tokens == 0
    assert model.estimate(_view(), 1000, 5000, 1.0).cached_prompt_tokens == 1000


def test_only_ready_backends_serving_the_model_are_estimated() -> None:
    model = LatencyModel()
    views = [
        _view("ok"),
        _view("down", health=Health.DOWN),
        _view("draining", health=Health.DRAINING),
        _view("other", models=frozenset({"x"})),
    ]
    assert set(model.estimate_all(views, "m", 10, {}, 5.0)) == {"ok"}
    assert set(model.estimate_all(views, None, 10, {}, 5.0)) == {"ok", "other"}


def test_stale_engine_metrics_are_ignored_fresh_ones_used() -> None:
    base = {"in_flight_requests": 2, "awaiting_first_byte": 1, "engine_running": 50, "engine_waiting": 20}
    stale = backend_load(_view(metrics_stale=True, **base))
    fresh = backend_load(_view(metrics_stale=False, **base))
    assert (stale[1], stale[2]) == (1.0, 1.0)
    assert (fresh[1], fresh[2]) == (20.0, 50.0)


views_strategy = st.builds(
    _view,
    backend_id=st.sampled_from(["a", "b"]),
    in_flight_requests=st.integers(0, 300),
    awaiting_first_byte=st.integers(0, 300),
    in_flight_prompt_tokens=st.integers(0, 500_000),
    in_flight_predicted_decode_tokens=st.floats(0, 1e6),
    engine_running=st.none() | st.integers(0, 300),
    engine_waiting=st.none() | st.integers(0, 300),
    kv_usage_frac=st.none() | st.floats(0, 1),
    prefix_hit_rate=st.none() | st.floats(-0.1, 1.1),
    kv_capacity_tokens=st.none() | st.integers(0, 1_000_000),
    metrics_stale=st.booleans(),
    awaiting_prompt_tokens=st.none() | st.integers(0, 500_000),
)


@settings(max_examples=300, deadline=None)
@given(view=views_strategy, prompt=st.integers(0, 200_000), matched=st.integers(-5, 300_000))
def test_inlined_request_path_equals_the_reference_terms(
    view: BackendView, prompt: int, matched: int
) -> None:
    model = LatencyModel()
    # Learned coefficients and a slot limit (150) on "a", priors and no limit on "b".
    model.observe(_view("a"), chat_features("hi"), 0, 120.0, 9.0)
    full = _view("a", engine_running=150, engine_waiting=40, metrics_stale=False)
    model.observe(full, chat_features("hi"), 0, 120.0, 9.0)
    assert model.slot_limit("a") == 150 and model.slot_limit("b") == 0
    est = model.estimate(view, prompt, matched, 50.0)
    tc, pc = model.coefficients(view.backend_id)
    ttft_terms, tpot_terms = request_terms(
        backend_load(view, model.slot_limit(view.backend_id)), prompt, matched
    )
    ttft = sum(c * x for c, x in zip(tc, ttft_terms, strict=True))
    tpot = sum(c * x for c, x in zip(pc, tpot_terms, strict=True))
    assert est.ttft_ms == pytest.approx(max(ttft, 0.01), rel=1e-9, abs=1e-9)
    assert est.tpot_ms == pytest.approx(max(tpot, 0.01), rel=1e-9, abs=1e-9)
    assert est.prefill_ms == pytest.approx(tc[0] + tc[1] * ttft_terms[1], rel=1e-9, abs=1e-9)
    assert est.queue_wait_ms >= 0
    assert 0 <= est.cached_prompt_tokens <= prompt


def test_fast_constructed_estimates_equal_normal_ones() -> None:
    est = LatencyModel().estimate(_view("z"), 100, 10, 20.0)
    same = BackendCostEstimate(
        est.backend_id,
        est.queue_wait_ms,
        est.prefill_ms,
        est.ttft_ms,
        est.tpot_ms,
        est.e2e_ms,
        est.cached_prompt_tokens,
    )
    assert est == same and hash(est) == hash(same)
    with pytest.raises(AttributeError):
        est.ttft_ms = 1.0  # type: ignore[misc]


def test_coefficients_stay_non_negative_and_memory_bounded() -> None:
    model = LatencyModel(LatencyPriors(max_backends=3))
    f = chat_features("x" * 4000)
    for i in range(50):
        # Nonsense data: more load, *less* time. Coefficients must not go negative.
        view = _view(
            f"b{i % 5}", in_flight_requests=i, awaiting_first_byte=i, awaiting_prompt_tokens=1000 * i
        )
        model.observe(view, f, 0, 500.0 / (1 + i), 5.0)
        assert len(model) <= 3
    for backend in ("b2", "b3", "b4"):
        ttft, tpot = model.coefficients(backend)
        assert len(ttft) == len(TTFT_TERMS) and len(tpot) == len(TPOT_TERMS)
        assert min(ttft) >= 0 and min(tpot) >= 0


def test_bad_priors_are_rejected() -> None:
    with pytest.raises(ValueError, match="TTFT priors"):
        LatencyPriors(ttft_ms=(1.0,))
    with pytest.raises(ValueError, match="forgetting"):
        LatencyPriors(forgetting=0.0)


def _decode_sample(
    model: LatencyModel, backend: str, batch_at_dispatch: int, batch_at_end: int, tpot_ms: float
) -> None:
    """One finished request: its backend's running batch at dispatch and at its end, and its TPOT."""
    f = chat_features("y" * 4000)
    at_dispatch = _view(backend, in_flight_requests=batch_at_dispatch)
    at_end = _view(backend, in_flight_requests=batch_at_end + 1)  # the request itself is still in flight
    model.observe(at_dispatch, f, 0, 100.0, tpot_ms, at_end)


def test_identical_backends_learnt_at_different_loads_rank_by_current_load() -> None:
    """The herding regression: one backend was busy while it was observed, the other quiet.

    Both follow the same physics (TPOT = 0.5 ms x (32 + batch)). A model that learns TPOT as a
    per-backend constant keeps the busy past of the first backend in its intercept, so once it is
    idle it still looks slower than the second one, now busy, and every request goes to the busy
    one. Ranking must follow the current load, not the load each backend happened to be observed at.
    """
    model = LatencyModel()
    for i in range(200):
        busy, quiet = 60 + i % 20, 5 + i % 10
        _decode_sample(model, "was_busy", busy, busy, 0.5 * (32 + busy))
        _decode_sample(model, "was_quiet", quiet, quiet, 0.5 * (32 + quiet))
    now = [_view("was_busy"), _view("was_quiet", in_flight_requests=100, in_flight_prompt_tokens=200_000)]
    costs = model.estimate_all(now, "m", 2000, {}, 200.0)
    assert costs["was_busy"].tpot_ms < 0.5 * costs["was_quiet"].tpot_ms
    assert costs["was_busy"].e2e_ms < costs["was_quiet"].e2e_ms


def test_tpot_is_learnt_against_the_load_over_the_decode_not_at_dispatch() -> None:
    """Requests dispatched to an idle backend that filled up behind them decoded in a full batch."""
    herded, steady = LatencyModel(), LatencyModel()
    for _ in range(200):
        _decode_sample(herded, "b", 0, 120, 0.5 * (32 + 60))  # idle at dispatch, 120 at the end
        _decode_sample(steady, "b", 60, 60, 0.5 * (32 + 60))  # the same mean load throughout
    per_slot_herded = herded.coefficients("b")[1][1]
    per_slot_steady = steady.coefficients("b")[1][1]
    assert per_slot_herded == pytest.approx(per_slot_steady, rel=0.05)
    assert per_slot_steady == pytest.approx(0.5, rel=0.1)


def test_amortised_solve_matches_a_solve_after_every_sample_at_each_solve() -> None:
    """Solving every ``solve_every`` samples after the warm-up loses nothing but freshness.

    The normal equations absorb every sample either way, so at each solve the
    coefficients are those of a model that solved after every sample; in between
    they are the last solve's (never a half-updated state).
    """
    import random

    from predictors.latency import ForgettingRidge

    every = LatencyPriors(warmup_samples=0, solve_every=1)
    amortised = LatencyPriors(warmup_samples=4, solve_every=8)
    fresh = ForgettingRidge(every.ttft_ms, every.ttft_sd_floor, every)
    lazy = ForgettingRidge(amortised.ttft_ms, amortised.ttft_sd_floor, amortised)
    rng = random.Random(7)
    last_solved = lazy.coef
    for sample in range(1, 61):
        terms = tuple(rng.uniform(0.0, 4.0) for _ in TTFT_TERMS)
        observed = 20.0 + 30.0 * terms[1] + rng.uniform(0.0, 5.0)
        fresh.update(terms, observed, 1.0 / observed**2)
        solved = lazy.update(terms, observed, 1.0 / observed**2)
        assert solved == (sample <= 4 or (sample - 4) % 8 == 0)
        if solved:
            assert lazy.coef == pytest.approx(fresh.coef, rel=1e-12, abs=1e-12)
            last_solved = lazy.coef
        else:
            assert lazy.coef == last_solved


def test_priors_reject_a_zero_solve_interval() -> None:
    with pytest.raises(ValueError, match="solve_every"):
        LatencyPriors(solve_every=0)


def test_ridge_solve_reads_the_upper_triangle_only() -> None:
    """``ForgettingRidge`` keeps only M's upper triangle; its solve must not read the other half,
    and with some coefficients pinned at 0 (active set) the rest solve the upper half's system."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 6))
    spd = a @ a.T + 6.0 * np.eye(6)
    rhs = rng.normal(size=6)
    upper_only = [[float(spd[i, j]) if j >= i else float("nan") for j in range(6)] for i in range(6)]
    assert np.allclose(_solve_spd(upper_only, rhs.tolist()), np.linalg.solve(spd, rhs), rtol=1e-10)
    priors = LatencyPriors(warmup_samples=0, solve_every=1)
    ridge = ForgettingRidge(priors.ttft_ms, priors.ttft_sd_floor, priors)
    for k in range(300):  # TTFT falls with "waiting": its coefficient is pinned at 0
        terms = (1.0, 0.1 * (k % 7), 0.2 * (k % 5), float(k % 9), float(k % 4), 0.0, float(k % 3))
        ridge.update(terms, 400.0 - 40.0 * terms[3], 1.0)
    dim = len(TTFT_TERMS)
    assert min(ridge.coef) >= 0.0 and ridge.coef[3] == 0.0
    m = np.array([[ridge._m[min(i, j)][max(i, j)] for j in range(dim)] for i in range(dim)])
    free = [i for i in range(dim) if ridge.coef[i] > 0.0]
    expected = np.linalg.solve(m[np.ix_(free, free)], np.array(ridge._r)[free])
    assert np.allclose([ridge.coef[i] for i in free], expected, rtol=1e-9)


def _loop_fold(
    m: list[list[float]],
    r: list[float],
    terms: tuple[float, ...],
    observed: float,
    weight: float,
    keep: float,
    refill_precision: tuple[float, ...],
    refill_prior: tuple[float, ...],
) -> None:
    """The forgetting step as loops (its definition in ``ForgettingRidge``'s docstring)."""
    dim = len(r)
    for i in range(dim):
        weighted = weight * terms[i]
        row = m[i]
        for j in range(i, dim):
            row[j] = row[j] * keep + weighted * terms[j]
        row[i] += refill_precision[i]
        r[i] = r[i] * keep + weighted * observed + refill_prior[i]


@pytest.mark.parametrize("use_loop", [False, True])
@pytest.mark.parametrize("dim", [1, 2, 6, 7])
def test_written_out_fold_gives_the_loops_floats(dim: int, use_loop: bool) -> None:
    """Both forms the model may run (written out when interpreted, ``_fold_loop`` when compiled)."""
    rng = random.Random(dim)
    fold = _fold_loop if use_loop else _fold_step(dim)
    m_a = [[rng.uniform(0, 3) for _ in range(dim)] for _ in range(dim)]
    r_a = [rng.uniform(0, 3) for _ in range(dim)]
    m_b, r_b = [row[:] for row in m_a], r_a[:]
    precision = tuple(rng.uniform(0, 1e-3) for _ in range(dim))
    prior = tuple(rng.uniform(0, 1e-2) for _ in range(dim))
    for _ in range(500):
        terms = tuple(rng.uniform(0, 20) for _ in range(dim))
        observed, weight = rng.uniform(1, 900), rng.uniform(1e-6, 1.0)
        _loop_fold(m_a, r_a, terms, observed, weight, 0.998, precision, prior)
        fold(m_b, r_b, terms, observed, weight, 0.998, precision, prior)
        assert m_a == m_b and r_a == r_b  # exactly: same operations in the same order


def _loop_solve(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    """Cholesky solve as loops, reading the upper triangle: the definition ``_solve_spd`` writes out."""
    n = len(rhs)
    low = [[0.0] * n for _ in range(n)]
    for i in range(n):
        row_i = low[i]
        for j in range(i + 1):
            row_j = low[j]
            total = matrix[j][i]
            for k in range(j):
                total -= row_i[k] * row_j[k]
            if i == j:
                row_i[i] = math.sqrt(total if total > 1e-300 else 1e-300)
            else:
                row_i[j] = total / row_j[j]
    y = [0.0] * n
    for i in range(n):
        total = rhs[i]
        for k in range(i):
            total -= low[i][k] * y[k]
        y[i] = total / low[i][i]
    x = [0.0] * n
    for i in range(n - 1, -1, -1):
        total = y[i]
        for k in range(i + 1, n):
            total -= low[k][i] * x[k]
        x[i] = total / low[i][i]
    return x


@pytest.mark.parametrize("dim", [1, 2, 3, 5, 6])
def test_written_out_solve_gives_the_loops_floats(dim: int) -> None:
    rng = np.random.default_rng(dim)
    for _ in range(300):
        a = rng.normal(size=(dim, dim))
        spd = (a @ a.T + np.eye(dim) * rng.uniform(1e-6, 2.0)).tolist()
        rhs = rng.normal(0.0, 5.0, size=dim).tolist()
        assert _solve_spd(spd, rhs) == _loop_solve(spd, rhs)  # exactly


def test_a_full_backend_adds_one_completion_wait_per_request_ahead_of_the_slot() -> None:
    """Beyond its sequence-slot limit a backend's TTFT grows by t6 per request queued for a slot; the
    limit is the most requests seen running there while the engine held a queue, and a backend never
    seen so has none."""
    model, no_limit = LatencyModel(), LatencyModel()
    full = _view("b", engine_running=8, engine_waiting=3, metrics_stale=False)
    model.observe(full, chat_features("hi"), 0, 50.0, 9.0)
    assert model.slot_limit("b") == 8 and no_limit.slot_limit("b") == 0
    t6 = model.coefficients("b")[0][TTFT_TERMS.index("slot_queue")]
    assert t6 > 0.0

    def load(running: int, waiting: int) -> BackendView:
        return _view("b", engine_running=running, engine_waiting=waiting, metrics_stale=False)

    def ttft(m: LatencyModel, running: int, waiting: int) -> float:
        return m.estimate(load(running, waiting), 100, 0, 10.0).ttft_ms

    def without_slots(m: LatencyModel, running: int, waiting: int) -> float:
        terms, _ = request_terms(backend_load(load(running, waiting)), 100, 0)
        return sum(c * x for c, x in zip(m.coefficients("b")[0], terms, strict=True))

    # Below the limit (4 running + 2 waiting + this one <= 8) nothing waits for a slot.
    assert ttft(model, 4, 2) == pytest.approx(without_slots(model, 4, 2))
    # Full: this request and the 5 ahead of it wait for completions; 10 running means the limit is higher.
    assert ttft(model, 8, 5) == pytest.approx(without_slots(model, 8, 5) + 6 * t6)
    assert ttft(model, 10, 5) == pytest.approx(without_slots(model, 10, 5) + 6 * t6)
    # A backend whose limit was never observed gets no slot term.
    assert ttft(no_limit, 8, 5) == pytest.approx(without_slots(no_limit, 8, 5))


def test_ttft_below_the_weight_floor_is_fitted_in_ms_not_relative_error() -> None:
    """Under the same load, TTFTs of 10 ms and 190 ms alternate: below ``ttft_weight_floor_ms`` both
    weigh the same and the fit is their mean in ms; with pure relative-error weights (floor 1 ms) the
    10 ms samples count 361x as much and pull the prediction to about twice the faster one. The SLO
    filter compares predictions with bounds of hundreds of ms, so errors in ms are what count."""

    def fit(priors: LatencyPriors) -> float:
        model = LatencyModel(priors)
        view = _view("b", in_flight_requests=2, awaiting_first_byte=1)
        for i in range(2_000):
            model.observe(view, chat_features("hi"), 0, 10.0 if i % 2 else 190.0, 9.0)
        return model.estimate(view, 10, 0, 10.0).ttft_ms

    assert fit(LatencyPriors(ttft_weight_floor_ms=300.0)) == pytest.approx(100.0, rel=0.05)
    assert fit(LatencyPriors()) < 25.0  # the default: relative error (see LatencyPriors)
    with pytest.raises(ValueError, match="ttft_weight_floor_ms"):
        LatencyPriors(ttft_weight_floor_ms=0.5)


def test_the_slot_limit_is_learnt_only_from_an_engine_holding_a_queue() -> None:
    """A backend whose concurrency Sluice's admission holds below the engine's limit runs at that cap
    with at most a few prompts waiting for prefill budget: that cap is not the engine's slot limit, and
    a slot term firing there would predict waits the engine does not have (critical requests refused
    in the overload benchmark). Only the engine's own counts with a standing queue teach the limit."""
    model = LatencyModel()
    features = chat_features("hi")
    capped = _view("b", engine_running=180, engine_waiting=6, metrics_stale=False)
    ours_only = _view("b", in_flight_requests=200, awaiting_first_byte=20)
    stale = _view("b", engine_running=256, engine_waiting=100, metrics_stale=True)
    for view in (capped, ours_only, stale):
        model.observe(view, features, 0, 300.0, 20.0)
    assert model.slot_limit("b") == 0
    model.observe(
        _view("b", engine_running=256, engine_waiting=90, metrics_stale=False), features, 0, 900.0, 20.0
    )
    assert model.slot_limit("b") == 256
    model.observe(capped, features, 0, 300.0, 20.0)  # a limit never shrinks from a lower count
    assert model.slot_limit("b") == 256
