"""``sluice capacity``: the goodput-capacity search on a simulated fleet, and its bad input."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sluice.cli import main

ROOT = Path(__file__).resolve().parents[2]
FLEET = str(ROOT / "configs" / "fleets" / "demo.yaml")
# Poisson, 1,024-token prompts, 128-token answers: small and deterministic for a seed.
SEARCH = ["--workload", "poisson", "--duration-s", "20", "--warmup-s", "2", "--max-runs", "24"]


def test_the_search_brackets_each_target_between_a_passing_and_a_failing_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "capacity.json"
    code = main(["capacity", "--fleet", FLEET, "--policy", "least_outstanding", *SEARCH, "--out", str(out)])
    assert code == 0
    document = orjson.loads(out.read_bytes())
    points = {p["rate_rps"]: p["attainment_frac"] for p in document["points"]}
    for target, found in document["capacity"].items():
        assert found["converged"]
        assert points[found["rate_rps"]] >= float(target)
        assert points[found["failing_rate_rps"]] < float(target)
        assert found["failing_rate_rps"] <= found["rate_rps"] * 1.05 + 1e-9
    assert document["capacity"]["0.99"]["rate_rps"] <= document["capacity"]["0.9"]["rate_rps"]
    assert "90% of requests meet the SLO up to" in capsys.readouterr().out


def test_a_speed_aware_policy_carries_more_than_round_robin_on_mixed_gpus(tmp_path: Path) -> None:
    """On H100 + A100 + L4, round robin is held to ~3x the L4's rate; a speed-aware policy is not."""
    found = {}
    for policy in ("round_robin", "least_outstanding"):
        out = tmp_path / f"{policy}.json"
        assert (
            main(
                [
                    "capacity",
                    "--fleet",
                    FLEET,
                    "--policy",
                    policy,
                    "--targets",
                    "0.9",
                    *SEARCH,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        found[policy] = orjson.loads(out.read_bytes())["capacity"]["0.9"]["rate_rps"]
    assert found["least_outstanding"] > 3 * found["round_robin"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fleet", FLEET, "--policy", "no_such_policy", "--workload", "poisson"], "unknown policy"),
        (["--fleet", "/nonexistent/fleet.yaml", "--workload", "poisson"], "fleet.yaml"),
        (["--fleet", FLEET, "--workload", "no_such_workload"], "no_such_workload"),
        (["--fleet", FLEET, "--workload", "poisson", "--warmup-s", "500"], "--warmup-s"),
    ],
)
def test_bad_input_is_a_clear_message_and_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["capacity", *argv]) == 2
    assert message in capsys.readouterr().err
