"""Per-tenant token buckets and concurrency counts, with bounded memory.

A tenant's budget is a token bucket refilled at ``tokens_per_s`` up to
``bucket_tokens``. Each request is charged its *predicted* work (prompt
tokens + predicted p50 output tokens) when admitted or queued, and the charge
is settled against the real output length when it ends, so a tenant that
sends ``max_tokens: 100000`` pays for what it is likely to get, and a tenant
whose answers run long pays for them afterwards.

A request larger than the whole bucket is let through when the bucket is
full (the bucket then goes into debt that refill repays), so big requests are
slowed, never banned. ``tokens_per_s == 0`` or ``max_concurrency == 0`` block
the tenant outright.

Memory: at most ``max_tracked`` tenants are remembered; the least recently
seen idle tenant is forgotten first (it comes back with a full bucket, which
is the safe direction). The clock is passed in (``now_s``) on every call.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from core.admission_config import TenantBudgetConfig, TenantsConfig
from core.types import ShedReason


@dataclass(slots=True)
class _TenantState:
    tokens: float
    updated_s: float
    active: int = 0


@dataclass(frozen=True, slots=True)
class TenantVerdict:
    """``reason is None`` means the tenant may send this request (and has been charged)."""

    reason: ShedReason | None
    retry_after_s: float = 0.0
    charged_tokens: float = 0.0

    @property
    def allowed(self) -> bool:
        return self.reason is None


class TenantBudgets:
    def __init__(self, config: TenantsConfig) -> None:
        self._config = config
        self._states: OrderedDict[str, _TenantState] = OrderedDict()

    def budget_for(self, tenant: str) -> TenantBudgetConfig:
        return self._config.budgets.get(tenant, self._config.default)

    def __len__(self) -> int:
        return len(self._states)

    def active(self, tenant: str) -> int:
        state = self._states.get(tenant)
        return state.active if state is not None else 0

    def _state(self, tenant: str, budget: TenantBudgetConfig, now_s: float) -> _TenantState:
        state = self._states.get(tenant)
        if state is None:
            capacity = budget.bucket_tokens
            state = _TenantState(tokens=capacity if capacity is not None else 0.0, updated_s=now_s)
            self._states[tenant] = state
            self._evict_idle()
        else:
            self._states.move_to_end(tenant)
            self._refill(state, budget, now_s)
        return state

    @staticmethod
    def _refill(state: _TenantState, budget: TenantBudgetConfig, now_s: float) -> None:
        capacity = budget.bucket_tokens
        if budget.tokens_per_s is not None and capacity is not None and now_s > state.updated_s:
            state.tokens = min(capacity, state.tokens + budget.tokens_per_s * (now_s - state.updated_s))
        state.updated_s = max(state.updated_s, now_s)

    def _evict_idle(self) -> None:
        excess = len(self._states) - self._config.max_tracked
        if excess <= 0:
            return
        # Oldest first; tenants with requests in flight are kept so their release still counts.
        for tenant in list(self._states):
            if excess <= 0:
                break
            if self._states[tenant].active == 0:
                del self._states[tenant]
                excess -= 1

    def check(self, tenant: str, cost_tokens: float, now_s: float) -> TenantVerdict:
        """Whether ``tenant`` may send a request costing ``cost_tokens`` now; charges nothing."""
        budget = self.budget_for(tenant)
        state = self._state(tenant, budget, now_s)
        if budget.max_concurrency is not None and state.active >= budget.max_concurrency:
            # Retry-After for a concurrency cap is unknown here; the caller uses its queue estimate.
            wait_s = math.inf if budget.max_concurrency == 0 else 0.0
            return TenantVerdict(ShedReason.TENANT_CONCURRENCY, wait_s)
        capacity = budget.bucket_tokens
        if budget.tokens_per_s is not None and capacity is not None:
            if budget.tokens_per_s == 0 or capacity == 0:
                return TenantVerdict(ShedReason.TENANT_BUDGET, math.inf)
            needed = min(cost_tokens, capacity)
            if state.tokens < needed:
                return TenantVerdict(ShedReason.TENANT_BUDGET, (needed - state.tokens) / budget.tokens_per_s)
        return TenantVerdict(None, 0.0, cost_tokens)

    def acquire(self, tenant: str, cost_tokens: float, now_s: float) -> None:
        """Charge an admitted or queued request and count it active (after ``check`` allowed it)."""
        budget = self.budget_for(tenant)
        state = self._state(tenant, budget, now_s)
        if budget.tokens_per_s is not None and budget.bucket_tokens is not None:
            state.tokens -= cost_tokens
        state.active += 1

    def release(self, tenant: str, charged_tokens: float, actual_tokens: float, now_s: float) -> None:
        """The request ended: settle the charge with its real cost and free its concurrency slot."""
        state = self._states.get(tenant)
        if state is None:
            return
        budget = self.budget_for(tenant)
        self._refill(state, budget, now_s)
        state.active = max(0, state.active - 1)
        capacity = budget.bucket_tokens
        if budget.tokens_per_s is not None and capacity is not None:
            state.tokens = min(capacity, state.tokens + charged_tokens - actual_tokens)
