from __future__ import annotations

import math

import pytest

from core.admission_config import TenantBudgetConfig, TenantsConfig
from core.types import ShedReason
from state.tenant_budgets import TenantBudgets


def budgets(**per_tenant: TenantBudgetConfig) -> TenantBudgets:
    return TenantBudgets(TenantsConfig(budgets=per_tenant, max_tracked=3))


def test_unlimited_by_default() -> None:
    b = budgets()
    for i in range(100):
        assert b.check("anyone", 1e9, float(i)).allowed
        b.acquire("anyone", 1e9, float(i))
    assert b.active("anyone") == 100


def test_token_bucket_refuses_then_refills_at_the_predicted_time() -> None:
    b = budgets(acme=TenantBudgetConfig(tokens_per_s=100, burst_tokens=1000))
    assert b.check("acme", 800, 0.0).allowed
    b.acquire("acme", 800, 0.0)
    verdict = b.check("acme", 500, 0.0)
    assert verdict.reason is ShedReason.TENANT_BUDGET
    assert verdict.retry_after_s == pytest.approx(3.0)  # needs 300 more tokens at 100/s
    assert not b.check("acme", 500, 2.9).allowed
    assert b.check("acme", 500, 3.0).allowed


def test_settling_refunds_short_answers_and_charges_long_ones() -> None:
    b = budgets(acme=TenantBudgetConfig(tokens_per_s=1, burst_tokens=1000))
    b.acquire("acme", 600, 0.0)  # predicted 600
    b.release("acme", charged_tokens=600, actual_tokens=100, now_s=0.0)  # real cost 100
    assert b.check("acme", 900, 0.0).allowed
    b.acquire("acme", 900, 0.0)
    b.release("acme", charged_tokens=900, actual_tokens=1900, now_s=0.0)  # ran long: debt
    assert not b.check("acme", 1, 0.0).allowed


def test_request_bigger_than_bucket_passes_when_bucket_is_full() -> None:
    b = budgets(acme=TenantBudgetConfig(tokens_per_s=10, burst_tokens=100))
    assert b.check("acme", 10_000, 0.0).allowed
    b.acquire("acme", 10_000, 0.0)
    # 100 - 10,000 = 9,900 tokens of debt; 10 more needed at 10 tokens/s.
    assert b.check("acme", 10, 0.0).retry_after_s == pytest.approx(991.0)


def test_zero_budgets_block() -> None:
    b = budgets(banned=TenantBudgetConfig(tokens_per_s=0), capped=TenantBudgetConfig(max_concurrency=0))
    assert b.check("banned", 1, 0.0).reason is ShedReason.TENANT_BUDGET
    assert math.isinf(b.check("banned", 1, 0.0).retry_after_s)
    assert b.check("capped", 1, 0.0).reason is ShedReason.TENANT_CONCURRENCY


def test_concurrency_cap_counts_active_requests() -> None:
    b = budgets(acme=TenantBudgetConfig(max_concurrency=2))
    for _ in range(2):
        b.acquire("acme", 1, 0.0)
    assert b.check("acme", 1, 0.0).reason is ShedReason.TENANT_CONCURRENCY
    b.release("acme", 1, 1, 0.0)
    assert b.check("acme", 1, 0.0).allowed


def test_memory_is_bounded_and_busy_tenants_are_kept() -> None:
    b = budgets()
    b.acquire("busy", 1, 0.0)
    for i in range(50):
        b.check(f"t{i}", 1, 0.0)
    assert len(b) <= 3
    assert b.active("busy") == 1
    b.release("unknown-tenant", 1, 1, 0.0)  # never seen or forgotten: ignored, no crash
