"""The admission rule: table-driven cases and monotonicity properties."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.types import Admit, Queue, Shed, ShedReason
from policies.admission import AdmissionView, decide

BASE = AdmissionView(
    now_s=100.0,
    has_free_slot=False,
    kv_headroom_ok=True,
    queued_ahead_requests=0,
    queue_can_accept=True,
    service_rate_rps=10.0,
    capacity_retry_after_s=7.0,
    best_predicted_ttft_ms=200.0,
    slo_ttft_ms=2000.0,
    slo_margin_frac=0.1,
    queue_deadline_ms=2000.0,
    shed_infeasible=True,
    tenant_reason=None,
    tenant_retry_after_s=0.0,
    retry_after_min_s=1.0,
    retry_after_max_s=60.0,
)


def view(**changes: object) -> AdmissionView:
    return dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]


def test_below_capacity_admits_even_when_slo_is_hopeless() -> None:
    assert decide(view(has_free_slot=True, best_predicted_ttft_ms=1e9)) == Admit()


def test_free_slot_without_kv_headroom_queues() -> None:
    assert isinstance(decide(view(has_free_slot=True, kv_headroom_ok=False)), Queue)


def test_at_capacity_queues_until_class_deadline() -> None:
    assert decide(view()) == Queue(deadline_s=102.0)


def test_infeasible_wait_is_shed_now_with_the_promised_retry_after() -> None:
    # 30 ahead at 10 req/s = 3.1 s wait > 0.9 * 2 s budget; the Retry-After is the ledger's promise
    # (capacity left to the class), not that wait.
    decision = decide(view(queued_ahead_requests=30))
    assert decision == Shed(ShedReason.SLO_INFEASIBLE, pytest.approx(7.0))
    assert decide(view(queued_ahead_requests=30, capacity_retry_after_s=500.0)) == Shed(
        ShedReason.SLO_INFEASIBLE, 60.0
    )


def test_no_slo_or_early_rejection_off_means_queue_until_full() -> None:
    assert isinstance(decide(view(queued_ahead_requests=1000, slo_ttft_ms=None)), Queue)
    assert isinstance(decide(view(queued_ahead_requests=1000, shed_infeasible=False)), Queue)
    full = decide(view(queued_ahead_requests=1000, shed_infeasible=False, queue_can_accept=False))
    assert isinstance(full, Shed)
    assert full.reason is ShedReason.QUEUE_FULL


def test_cold_start_unknown_rate_never_sheds_as_infeasible() -> None:
    assert isinstance(decide(view(service_rate_rps=0.0, queued_ahead_requests=500)), Queue)


def test_tenant_refusal_comes_first_and_clamps_retry_after() -> None:
    blocked = decide(
        view(has_free_slot=True, tenant_reason=ShedReason.TENANT_BUDGET, tenant_retry_after_s=1e12)
    )
    assert blocked == Shed(ShedReason.TENANT_BUDGET, 60.0)
    soon = decide(view(tenant_reason=ShedReason.TENANT_BUDGET, tenant_retry_after_s=0.01))
    assert soon == Shed(ShedReason.TENANT_BUDGET, 1.0)


def test_zero_deadline_class_is_never_queued() -> None:
    assert decide(view(queue_deadline_ms=0.0)) == Shed(ShedReason.QUEUE_FULL, pytest.approx(7.0))


def _rank(decision: object) -> int:
    return {Admit: 2, Queue: 1, Shed: 0}[type(decision)]


@given(
    ahead=st.integers(0, 5000),
    more=st.integers(0, 5000),
    rate=st.floats(0.0, 1000.0),
    slo=st.one_of(st.none(), st.floats(1.0, 1e5)),
    free=st.booleans(),
)
def test_a_fuller_queue_never_makes_admission_more_likely(
    ahead: int, more: int, rate: float, slo: float | None, free: bool
) -> None:
    lighter = view(queued_ahead_requests=ahead, service_rate_rps=rate, slo_ttft_ms=slo, has_free_slot=free)
    heavier = dataclasses.replace(lighter, queued_ahead_requests=ahead + more)
    assert _rank(decide(heavier)) <= _rank(decide(lighter))


@given(slow=st.floats(0.0, 1e6), fast=st.floats(0.0, 1e6))
def test_a_slower_fleet_never_makes_admission_more_likely(slow: float, fast: float) -> None:
    lo, hi = sorted((slow, fast))
    queued = view(queued_ahead_requests=20)
    assert (
        _rank(decide(dataclasses.replace(queued, service_rate_rps=lo)))
        <= _rank(decide(dataclasses.replace(queued, service_rate_rps=hi)))
        or lo == 0.0
    )
