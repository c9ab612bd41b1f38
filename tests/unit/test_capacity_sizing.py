"""The closed-form capacity finds the simulator's knee, and sizing offers the load it says it does."""

from __future__ import annotations

import statistics

import pytest

from loadgen.sim.capacity import RequestShape, backend_capacity
from loadgen.sim.fleet_config import load_fleet, load_fleet_text, virtual_sluice_config
from loadgen.sim.records import RequestRecord
from loadgen.sim.virtual import VirtualFleet
from loadgen.sizing import size_workload
from loadgen.workloads import WorkloadError, build_workload
from tests.loadgen_support import needs_data

PROMPT, OUTPUT = 1000, 200


def _run_at(load_frac: float, profile: str, span_s: float = 120.0) -> list[RequestRecord]:
    fleet = load_fleet_text(f"backends:\n  - {{name: gpu, profile: {profile}}}\n")
    cap = backend_capacity("gpu", fleet.backends[0].profile, RequestShape(PROMPT, OUTPUT))
    workload = build_workload(
        "poisson",
        {"seed": 3},
        {
            "rate_rps": load_frac * cap.capacity_rps,
            "span_s": span_s,
            "input_tokens": PROMPT,
            "output_tokens": OUTPUT,
        },
    )
    # Admission off: this measures the engine, not Sluice's shedding.
    loaded = virtual_sluice_config(fleet, {"admission": {"enabled": False}})
    return VirtualFleet(fleet, loaded).run(workload.requests())


def _ttft_quarters_ms(records: list[RequestRecord]) -> tuple[float, float]:
    ok = sorted((r for r in records if r.ok), key=lambda r: r.sent_s)
    quarter = len(ok) // 4
    first = statistics.fmean(1000 * (r.ttft_s or 0.0) for r in ok[:quarter])
    last = statistics.fmean(1000 * (r.ttft_s or 0.0) for r in ok[-quarter:])
    return first, last


@pytest.mark.parametrize("profile", ["h100-llama3.1-8b", "l4-llama3.1-8b"])
def test_half_capacity_is_steady_and_a_quarter_over_capacity_builds_a_queue(profile: str) -> None:
    # Mean TTFT of the first and last quarter of a 120 s Poisson run on one backend.
    first, last = _ttft_quarters_ms(_run_at(0.5, profile))
    assert last < 3 * max(first, 50.0), (first, last)  # no growing queue at half capacity
    first, last = _ttft_quarters_ms(_run_at(1.25, profile))
    assert last > 5 * first and last > 10_000, (first, last)  # past the knee it grows all run long


def test_kv_bound_batch_and_decode_only_limit() -> None:
    l4 = load_fleet_text("backends:\n  - {name: l4, profile: l4-llama3.1-8b}\n").backends[0].profile
    cap = backend_capacity("l4", l4, RequestShape(4000, 1000))
    assert cap.batch == pytest.approx(l4.kv_capacity_tokens / 4500)
    h100 = load_fleet_text("backends:\n  - {name: h, profile: h100-llama3.1-8b}\n").backends[0].profile
    nearly_all_cached = backend_capacity("h", h100, RequestShape(10, 100, cached_frac=0.999))
    step = h100.step_time
    decode_bound_tokens_per_s = 256 / ((step.base_us + 256 * step.decode_us_per_token) * 1e-6)
    assert nearly_all_cached.capacity_rps * 100 == pytest.approx(decode_bound_tokens_per_s, rel=0.01)


def test_request_shape_rejects_impossible_values() -> None:
    with pytest.raises(ValueError, match="at least one"):
        RequestShape(0, 10)
    with pytest.raises(ValueError, match="cached_frac"):
        RequestShape(10, 10, cached_frac=1.0)


@needs_data
def test_time_scaled_azure_offers_the_target_rate() -> None:
    fleet = load_fleet("configs/fleets/demo.yaml")
    sizing = size_workload("azure_conv", fleet, duration_s=300.0, load_frac=0.5, knob="time")
    assert sizing.target_rps == pytest.approx(0.5 * sum(c.capacity_rps for c in sizing.capacities))
    requests = list(sizing.workload.requests())
    offered_rps = len(requests) / 300.0
    # The probe window (600 s of trace) is what the 300 s replay covers at this time scale, give or take.
    assert offered_rps == pytest.approx(sizing.target_rps, rel=0.15)
    assert max(r.arrival_s for r in requests) <= 300.0


def test_sizing_rejects_an_empty_window_and_a_silly_load() -> None:
    fleet = load_fleet("configs/fleets/demo.yaml")
    with pytest.raises(WorkloadError, match="load fraction"):
        size_workload("poisson", fleet, duration_s=10, load_frac=0.0, knob="rate")
    with pytest.raises(WorkloadError, match="no requests"):
        size_workload("poisson", fleet, duration_s=10, load_frac=0.5, knob="rate", options={"start_s": 1e6})
