"""The issue-6 target table: paired ratios against the right policies, verdicts that can say "missed"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadgen.bench.aggregate import aggregate
from tests.bench_modules import load_bench_module

table = load_bench_module("_issue6_table")

ROLES = {
    "round_robin": "baseline",
    "least_outstanding": "baseline",
    "sluice_predictive": "candidate",
    "oracle": "oracle",
}


def point(policy: str, seed: int, goodput: float, ttft_p99_ms: float, load: float = 0.9) -> dict[str, Any]:
    scaling = {"target_rps": 10.0}
    return {
        "point": {
            "fleet": "f",
            "workload": "w",
            "load_level": load,
            "policy": policy,
            "seed": seed,
            "scaling": scaling,
        },
        "summary": {
            "window_goodput_rps": goodput,
            "window_offered_rps": 10.0,
            "slo_attainment_frac": goodput / 10.0,
            "ttft_ms": {"p99": ttft_p99_ms},
        },
        "by_backend": {},
        "quantiles": {"ttft_ms": None, "tpot_ms": None},
    }


def doc(points: list[dict[str, Any]]) -> dict[str, Any]:
    return {"reference": "round_robin", "results": aggregate(points, ROLES, "round_robin")}


def matrix(candidate: tuple[float, ...], best: tuple[float, ...]) -> dict[str, Any]:
    points = []
    for i, seed in enumerate((1, 2, 3)):
        points += [
            point("round_robin", seed, 4.0 + 0.1 * i, 60_000.0),
            point("least_outstanding", seed, best[i], 30_000.0),
            point("sluice_predictive", seed, candidate[i], 1_000.0 + 100 * i),
            point("oracle", seed, 9.9, 900.0),
        ]
    return doc(points)


def test_ratios_are_paired_against_round_robin_the_best_baseline_and_the_oracle() -> None:
    (c,) = table.cells(matrix(candidate=(9.0, 9.2, 9.4), best=(6.0, 6.0, 6.0)))
    t = c["targets"]
    assert c["best_baseline"] == "least_outstanding"
    assert t["goodput_vs_best"]["mean"] == pytest.approx((9.0 / 6 + 9.2 / 6 + 9.4 / 6) / 3)
    assert t["goodput_vs_rr"]["mean"] == pytest.approx((9.0 / 4.0 + 9.2 / 4.1 + 9.4 / 4.2) / 3)
    assert t["ttft_p99_lower_vs_rr"]["mean"] == pytest.approx((60 / 1.0 * 60 / 1.1 * 60 / 1.2) ** (1 / 3))
    assert t["ttft_p99_lower_vs_rr"]["ci95"][0] > 0
    assert t["goodput_vs_oracle"]["mean"] == pytest.approx((9.0 + 9.2 + 9.4) / 3 / 9.9)
    assert c["ceiling_oracle_vs_best"]["mean"] == pytest.approx(9.9 / 6.0)
    assert {name: block["verdict"] for name, block in t.items()} == {
        "goodput_vs_best": "met (CI)",
        "goodput_vs_rr": "met (CI)",
        "ttft_p99_lower_vs_rr": "met (CI)",
        "goodput_vs_oracle": "met (CI)",
    }


def test_a_target_below_its_threshold_is_missed_and_a_wide_interval_is_only_met() -> None:
    (c,) = table.cells(matrix(candidate=(6.2, 6.3, 6.1), best=(6.0, 6.0, 6.0)))
    assert c["targets"]["goodput_vs_best"]["verdict"] == "missed"
    assert c["targets"]["goodput_vs_oracle"]["verdict"] == "missed"
    assert table.verdict({"mean": 1.4, "ci95": [1.1, 1.7]}, 1.3) == "met"
    assert table.verdict({"mean": None, "ci95": None}, 1.3) == "n/a"
    tally = table.verdicts([c])
    assert tally["goodput_vs_best"]["missed"] == 1


def test_the_best_baseline_is_the_strongest_one_never_the_candidate_or_oracle() -> None:
    (c,) = table.cells(matrix(candidate=(9.0, 9.0, 9.0), best=(3.0, 3.0, 3.0)))
    assert c["best_baseline"] == "round_robin"  # least_outstanding is weaker here
    assert c["targets"]["goodput_vs_best"]["mean"] == pytest.approx(c["targets"]["goodput_vs_rr"]["mean"])


def test_markdown_has_one_row_per_workload_and_load_and_no_rows_without_the_candidate() -> None:
    d = matrix(candidate=(9.0, 9.2, 9.4), best=(6.0, 6.0, 6.0))
    text = table.markdown(table.cells(d))
    lines = text.splitlines()
    assert len(lines) == 3 and lines[2].startswith("| w | 0.9x | 10.0 (10.0) | 9.2")
    assert "(least_outstanding)" in lines[2]
    without = doc([point("round_robin", 1, 4.0, 1.0), point("oracle", 1, 9.0, 1.0)])
    assert table.cells(without) == []


def test_with_round_robin_as_the_only_baseline_there_is_no_best_baseline_target() -> None:
    points = [point("round_robin", 1, 4.0, 60_000.0), point("sluice_predictive", 1, 9.0, 1_000.0)]
    (c,) = table.cells(doc(points))
    assert c["best_baseline"] is None
    assert set(c["targets"]) == {"goodput_vs_rr", "ttft_p99_lower_vs_rr"}


def test_runs_split_by_seed_merge_into_one_aggregate_from_their_point_files(tmp_path: Path) -> None:
    def write(root: Path, policy: str, seed: int, good: int) -> None:
        path = root / "f" / "w" / "load-0.9" / policy / f"seed-{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        p = point(policy, seed, 0.0, 1_000.0)
        summary = {"requests": 100, "good": good, "slo_attainment_frac": good / 100, "ttft_ms": {"p99": 1.0}}
        path.write_text(json.dumps({"point": p["point"], "summary": summary, "by_backend": {}}))

    first, second = tmp_path / "a", tmp_path / "b"
    for policy, good in (("round_robin", 40), ("sluice_predictive", 90)):
        write(first, policy, 1, good)
        write(second, policy, 1, good)  # the same point twice is counted once
        write(second, policy, 2, good + 5)
    base = doc([point("round_robin", 1, 4.0, 1.0), point("sluice_predictive", 1, 9.0, 1.0)])
    out = table.merged({**base, "duration_s": 12.0, "warmup_s": 2.0}, [first, second])
    assert out["seeds"] == [1, 2]
    (c,) = table.cells(out)
    assert c["seeds"] == [1, 2]
    assert c["goodput_rps"]["mean"] == pytest.approx((90 / 10 + 95 / 10) / 2)
    assert c["targets"]["goodput_vs_rr"]["mean"] == pytest.approx((90 / 40 + 95 / 45) / 2)
