"""Issue 6's capacity tables (``bench/_issue6_capacity.py``) and searching a bench-only oracle's capacity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench._issue6_capacity import cells, markdown, paired_ratio
from loadgen.bench.fleet_capacity import fleet_config, search_fleet_capacity
from loadgen.results import SLO
from loadgen.sim.fleet_config import load_fleet
from loadgen.workloads import build_workload

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "fleets" / "demo.yaml"


def _search(policy: str, role: str, seed: int, rps90: float | None, rps99: float | None) -> dict[str, Any]:
    return {
        "workload": "w",
        "policy": policy,
        "role": role,
        "seed": seed,
        "capacity": {"0.9": {"rate_rps": rps90}, "0.99": {"rate_rps": rps99}},
    }


SEARCHES = [
    # round robin on two seeds, a better baseline on two, a weak one on one, candidate and oracle
    _search("round_robin", "baseline", 1, 10.0, 5.0),
    _search("round_robin", "baseline", 2, 20.0, 5.0),
    _search("least_outstanding", "baseline", 1, 30.0, 12.0),
    _search("least_outstanding", "baseline", 2, 34.0, 8.0),
    _search("random", "baseline", 1, 8.0, None),
    _search("sluice_predictive", "candidate", 1, 45.0, 15.0),
    _search("sluice_predictive", "candidate", 2, 34.0, 16.0),
    _search("oracle", "oracle", 1, 60.0, 20.0),
]


def test_the_best_baseline_is_the_highest_mean_and_ratios_are_paired_by_seed() -> None:
    rows = {row["target"]: row for row in cells(SEARCHES, "sluice_predictive", "round_robin", "oracle")}
    at90 = rows["0.9"]
    assert at90["best_baseline"] == "least_outstanding"
    assert at90["policies"]["least_outstanding"]["mean_rps"] == pytest.approx(32.0)
    vs_best = at90["ratios"]["vs_best_baseline"]
    assert vs_best["per_seed"] == {1: pytest.approx(1.5), 2: pytest.approx(1.0)}
    assert vs_best["ratio_of_means"] == pytest.approx(79.0 / 64.0)
    assert at90["verdicts"] == {"vs_best_baseline >= 1.3": False, "vs_reference >= 2": True}
    vs_rr = at90["ratios"]["vs_reference"]
    assert vs_rr["per_seed"] == {1: pytest.approx(4.5), 2: pytest.approx(1.7)}
    # the oracle ran seed 1 only: its ratios use that seed alone
    assert at90["ratios"]["vs_oracle"]["seeds"] == [1]
    assert at90["ratios"]["vs_oracle"]["ratio_of_means"] == pytest.approx(0.75)
    assert at90["ratios"]["oracle_vs_best_baseline"]["ratio_of_means"] == pytest.approx(2.0)


def test_a_search_that_failed_even_the_floor_is_left_out_not_counted_as_zero() -> None:
    rows = {row["target"]: row for row in cells(SEARCHES, "sluice_predictive", "round_robin", "oracle")}
    random99 = rows["0.99"]["policies"]["random"]
    assert random99["per_seed"] == {} and random99["mean_rps"] is None
    assert rows["0.99"]["best_baseline"] == "least_outstanding"
    assert paired_ratio(rows["0.99"]["policies"]["sluice_predictive"], random99) is None
    table = markdown(list(rows.values()), "sluice_predictive", "round_robin", "oracle")
    assert "| random | 8.0 (8.0) | - () |" in table


def test_targets_a_workload_was_not_searched_at_get_no_row() -> None:
    extra = [{**_search("round_robin", "baseline", 1, 3.0, 1.0), "workload": "v"}]
    extra[0]["capacity"]["0.8"] = {"rate_rps": 4.0}
    rows = cells([*SEARCHES, *extra], "sluice_predictive", "round_robin", "oracle")
    assert [(r["workload"], r["target"]) for r in rows] == [
        ("w", "0.9"),
        ("w", "0.99"),
        ("v", "0.8"),
        ("v", "0.9"),
        ("v", "0.99"),
    ]


def test_the_searched_route_carries_the_slo_it_is_judged_by() -> None:
    fleet = load_fleet(DEMO)
    loaded = fleet_config(fleet, "sluice_predictive", False, SLO(1500.0, 80.0, None))
    route = loaded.config.routes[0]
    assert route.policy.name == "sluice_predictive"
    assert (route.slo.ttft_ms, route.slo.tpot_ms, route.slo.e2e_ms) == (1500.0, 80.0, None)


def test_the_bench_only_oracle_can_be_searched_and_carries_more_than_round_robin() -> None:
    """The oracle routes by true speed and lengths; round robin is held back by the L4."""
    fleet = load_fleet(DEMO)
    workload = build_workload("poisson")
    found = {
        policy: search_fleet_capacity(
            fleet,
            workload,
            policy,
            slo=SLO(2000.0, 100.0, None),
            targets=[0.9],
            scale_by="rate",
            seed=3,
            duration_s=20.0,
            warmup_s=2.0,
            max_runs=24,
        )
        for policy in ("round_robin", "oracle")
    }
    oracle = found["oracle"]["capacity"]["0.9"]
    assert oracle["converged"]
    points = {p["rate_rps"]: p for p in found["oracle"]["points"]}
    assert points[oracle["rate_rps"]]["attainment_frac"] >= 0.9
    assert 0 < points[oracle["rate_rps"]]["measured"] <= points[oracle["rate_rps"]]["requests"]
    assert oracle["rate_rps"] > 2 * found["round_robin"]["capacity"]["0.9"]["rate_rps"]


def test_low_rates_are_replayed_longer_for_enough_measured_requests() -> None:
    fleet = load_fleet(DEMO)
    found = search_fleet_capacity(
        fleet,
        build_workload("poisson"),
        "round_robin",
        slo=SLO(2000.0, 100.0, None),
        targets=[0.9],
        scale_by="rate",
        seed=3,
        duration_s=10.0,
        warmup_s=1.0,
        max_runs=24,
        min_measured=300,
        max_duration_s=60.0,
    )
    points = found["points"]
    assert {p["duration_s"] for p in points} != {10.0}  # some rate needed a longer replay
    for p in points:
        assert 10.0 <= p["duration_s"] <= 60.0
        if p["duration_s"] < 60.0:  # not capped: the window was sized for ~300 requests (Poisson noise)
            assert p["measured"] >= 0.8 * 300


@pytest.mark.parametrize(("scale_by", "window_s"), [("rate", 30.0), ("time", None)])
def test_a_time_scaled_trace_is_counted_over_its_whole_length_like_the_matrix(
    monkeypatch: pytest.MonkeyPatch, scale_by: str, window_s: float | None
) -> None:
    """Cut to the replay window first, a trace could not be compressed and got rate-scaled instead."""
    import loadgen.bench.fleet_capacity as fc

    seen: list[float | None] = []
    real = fc.native_shape

    def spy(workload: Any, seed: int, duration_s: float | None) -> Any:
        seen.append(duration_s)
        return real(workload, seed, duration_s)

    monkeypatch.setattr(fc, "native_shape", spy)
    monkeypatch.setattr(fc, "replay_virtual", lambda *args: [])  # every rate fails: a short search
    search_fleet_capacity(
        load_fleet(DEMO),
        build_workload("poisson"),
        "round_robin",
        slo=SLO(2000.0, 100.0, None),
        targets=[0.9],
        scale_by=scale_by,
        seed=1,
        duration_s=30.0,
        warmup_s=3.0,
        max_runs=3,
    )
    assert seen and set(seen) == {window_s}
