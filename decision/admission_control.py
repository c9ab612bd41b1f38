"""Admission control state and decisions, shared by the proxy and the virtual-time fleet.

Owns the mutable parts of admission — tenant budgets, per-backend adaptive
concurrency limits, the waiting room, the fleet service rate — and builds
the frozen ``AdmissionView`` that the pure rule in ``policies.admission``
decides on. The data plane wraps the waiting room with futures; the
virtual-time fleet drives it from its event loop; both call the same methods
in the same order (``core.protocols.Decider``):

``decide`` -> (``enqueue`` -> ``pop_dispatchable`` | ``leave_queue`` |
``expire``) -> ``on_routed`` -> ``observe``.

Reservations: when a queued request is woken for a free slot, the slot is
reserved for it until the request is routed (``on_routed``) or ends
(``observe``), so one freed slot never wakes two requests.

Requests whose class name is unknown fall back to the route's default class
(never an error); a tenant's ``max_priority`` lowers what it may claim.

Retry-After is a promise booked in a ``RetryLedger`` (``state/retry_ledger.py``): every capacity
refusal (``slo_infeasible``, ``queue_full``, eviction, ``queue_timeout``) books its expected return,
and a request that returns on time redeems it. The waiting room has two sub-ranks per class
(``_room_rank``): returns queue ahead of fresh requests of their class (behind every more important
class), so the capacity promised to them is theirs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.admission_config import DEFAULT_QUEUE_DEADLINE_MS, ConcurrencyLimitConfig
from core.clock import Clock
from core.config import RouteConfig, SluiceConfig
from core.cost_table import CostTable
from core.types import (
    AdmissionDecision,
    Admit,
    BackendId,
    BackendView,
    EnqueueResult,
    FleetSnapshot,
    Health,
    Outcome,
    Predictions,
    Queue,
    RequestFeatures,
    Shed,
    ShedReason,
)
from policies.admission import AdmissionView, decide
from state.concurrency_limits import ConcurrencyLimits
from state.retry_ledger import RetryLedger
from state.service_rate import ServiceRate
from state.tenant_budgets import TenantBudgets, TenantVerdict
from state.waiting_room import Waiter, WaitingRoom

# Output-length prior (tokens) for budgets and KV headroom when no prediction is available:
# the median assistant reply in the ShareGPT sample (data README §2.1).
PRIOR_OUTPUT_TOKENS = 304.0
KV_BLOCK_TOKENS = 16


TTFT_TARGET_SLO_FRAC = 0.25
# The class reserve (routes[].admission.class_reserve_frac): the share of each backend's concurrency
# limit that each class leaves to the classes above it, so that at overload a burst of critical requests
# finds slots at once instead of waiting for long standard streams to end (the "reserved slots" of SMG,
# peers.md section 4). Below capacity in-flight stays far under the limits and nothing changes.
FIRST_BYTE_RATE_TAU_S = 5.0
# A backend holding prompts that has sent no first byte for this many TTFT targets is *stalled* (hung,
# or far off its target): the fleet prefill budget leaves it out (no room, no excess), as the per-backend
# gate would. Why: a backend whose requests hang without failing would otherwise count its excess
# against the whole fleet and queue everyone until the first-byte timeout (120 s by default) fails them.
# At 4 targets (2 s by default) a working backend is never taken for stalled in bench/overload.py, where
# each engine sends ~8 first bytes/s at the end of the 3x burst.
STALL_TTFT_TARGETS = 4.0
# ``prefill_budget: fleet`` applies only while the waiting room *stands*: it has held requests, without
# emptying, for longer than this many TTFT targets (1 s by default); otherwise the per-backend gate
# decides. Why: the budget is there for overload, where the pump would otherwise wake dozens of requests
# at once whenever a stream limit grows, and there the room stands for the whole burst and after it.
# Below capacity a clump of arrivals queues for a moment; under the budget it waited in class order and
# the sheddable requests of the clump reached their deadline (bench/overload.py control runs at 0.8 of
# capacity: up to 3.0 % of sheddable refused, in 5 of 9 seeds over 1 %); with the gate for such short
# queues, 0-0.7 %, as with the per-backend gate alone, and recovery is as fast as with the budget always on.
STANDING_TTFT_TARGETS = 2.0


def limit_config(config: SluiceConfig) -> ConcurrencyLimitConfig:
    """The concurrency-limit settings with ``ttft_target_ms`` filled in: when unset, a quarter of the
    smallest route TTFT SLO (the backend's share of it; the rest is left for the waiting room). The
    prefill cap keeps each backend's TTFT near it; the stream limit steers to ``stream_limit_config``'s."""
    limits = config.admission.concurrency
    if limits.ttft_target_ms is not None:
        return limits
    slos = [r.slo.ttft_ms for r in config.routes if r.slo.ttft_ms is not None]
    if not slos:
        return limits
    return limits.model_copy(update={"ttft_target_ms": TTFT_TARGET_SLO_FRAC * min(slos)})


# The stream limit's TTFT target in TTFT targets, by default, when every route bounds the prompts the
# fleet holds by the fleet prefill budget (``stream_limit_config``).
STREAM_TARGET_FACTOR_FLEET = 2.0


def stream_limit_config(config: SluiceConfig) -> ConcurrencyLimitConfig:
    """``limit_config`` with the TTFT target the stream limit steers to: ``stream_target_factor`` x the
    TTFT target; unset, ``STREAM_TARGET_FACTOR_FLEET`` when every route uses ``prefill_budget: fleet``,
    else 1 (the prefill cap's own target).

    Why two targets: a backend's TTFT is its queue of prompts (which the prefill cap bounds at the
    target) plus what its running streams cost each prefill (a larger batch, a KV cache near full). With
    the fleet budget, the prompts the whole fleet holds are bounded, so the stream limit need only
    answer a TTFT beyond what a full prefill cap explains. Steered to the target itself it also cut on
    prompt queues the budget already handles, and after each step down (the end of the 3x burst, and of
    the 1x step) sat a few slots under the ~170 streams each backend still decoded: the class reserve
    then held sheddable requests in the room while the engines had nothing to prefill, and the limit
    grew again only per 10 first bytes, which hardly came (bench/overload.py controls at 0.7x: 1-7
    sheddable refused in 10 of 30 seed-policy pairs of seeds 0-14; with 2 targets, 2 in one). Not with the
    per-backend gate (``prefill_budget: backend``): there nothing else bounds the pump's bursts, and a
    looser stream limit lets it wake dozens of requests at once (docs/admission.md, "Tried, not kept")."""
    limits = limit_config(config)
    if limits.ttft_target_ms is None:
        return limits
    factor = limits.stream_target_factor
    if factor is None:
        fleet = all(r.admission.prefill_budget == "fleet" for r in config.routes)
        factor = STREAM_TARGET_FACTOR_FLEET if fleet else 1.0
    if factor == 1.0:
        return limits
    return limits.model_copy(update={"ttft_target_ms": factor * limits.ttft_target_ms})


@dataclass(slots=True)
class _Charge:
    tenant: str
    tokens: float
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class _Queued:
    request_id: str
    model: str
    rank: int
    class_reserve_frac: float
    min_prefill_cap: float
    tenant: str = "default"
    slot_rank: int = -1  # the class whose reserve share it may fill (``_slot_rank``); -1: its own
    fleet_budget: bool = False  # the route's ``prefill_budget`` is ``fleet``

    @property
    def share_rank(self) -> int:
        return self.rank if self.slot_rank < 0 else self.slot_rank


# Sheds whose Retry-After is a capacity promise (booked in the ledger); a tenant's own budget is not.
PROMISED_REASONS = frozenset({ShedReason.SLO_INFEASIBLE, ShedReason.QUEUE_FULL, ShedReason.QUEUE_TIMEOUT})


def _room_rank(rank: int, returning: bool) -> int:
    """The waiting-room rank of class ``rank``: a returning retry just ahead of the fresh requests of
    its class, behind every more important class."""
    return 2 * rank + (0 if returning else 1)


def _slot_rank(rank: int, returning: bool) -> int:
    """The class whose share of each concurrency limit (class reserve) a request may fill: a returning
    retry that of the class above its own. Why: the capacity left to a class in a burst comes in
    clumps (whenever the classes above pause), and a return that waits for one at the head of its
    class's queue often saw its queue deadline pass first (measured: half of the returning standard
    requests timed out in the 3x burst). The reserve it borrows is one class step, for the few
    requests that were promised the slot."""
    return rank - 1 if returning and rank > 0 else rank


class AdmissionControl:
    def __init__(self, config: SluiceConfig, clock: Clock) -> None:
        self._config = config
        self._admission = config.admission
        self._clock = clock
        self._classes = config.priority_classes
        self._rank_of = {name: i for i, name in enumerate(self._classes)}
        self._tenants = TenantBudgets(config.tenants)
        self._limits = ConcurrencyLimits(
            stream_limit_config(config), [(b.name, b.max_concurrency) for b in config.backends]
        )
        # Adaptive LIFO below the most important class (``WaitingRoomConfig.lifo_below_top_class``, on
        # by default): in a burst their queue stands at its deadline, and FIFO serves exactly the requests
        # that waited longest (TTFT = deadline + the backend's own); newest first serves those that can
        # still meet the SLO, and after the burst a new request no longer queues behind the burst's
        # leftovers (bench/overload.py, with the fleet budget and its stream target, seeds 0-2: recovery
        # 5, 2, 2 s with either policy; FIFO 5, 4, 5 and 5, 3, 6 s).
        self._room: WaitingRoom[_Queued] = WaitingRoom(
            2 * len(self._classes),
            config.admission.waiting_room.max_requests,
            _room_rank(1, True) if config.admission.waiting_room.lifo_below_top_class else None,
        )
        self._ledger = RetryLedger(len(self._classes), config.admission.retry_after_max_s)
        # Requests decided Queue that redeemed a promise (their enqueue puts them ahead of fresh ones).
        self._returning: set[str] = set()
        self._waiters: dict[str, Waiter[_Queued]] = {}
        self._reserved_by_model: dict[str, int] = {}
        self._reserved_ids: dict[str, str] = {}
        self._charges: dict[str, _Charge] = {}
        self._service_rate = ServiceRate()
        self._in_flight_seen: dict[BackendId, int] = {}
        # Per backend: (first bytes, their TTFT total) last read from a snapshot; backends listed here
        # feed their limiter at the first byte, the others (no counters in their views) at the end.
        self._first_bytes_seen: dict[BackendId, tuple[int, float]] = {}
        self._first_byte_rates: dict[BackendId, ServiceRate] = {}
        self._views_read: tuple[BackendView, ...] = ()  # the views ``_read_snapshot`` last read
        # Backends holding at least the smallest prefill-cap floor of any route in prompts before their
        # first byte (their latest view): the only ones that can be over their prefill cap.
        self._crowded: dict[BackendId, BackendView] = {}
        self._crowded_floor = min((r.admission.min_prefill_cap for r in config.routes), default=1.0)
        target_ms = limit_config(config).ttft_target_ms
        self._ttft_target_s = None if target_ms is None else target_ms / 1000.0
        self._stall_s = math.inf if self._ttft_target_s is None else STALL_TTFT_TARGETS * self._ttft_target_s
        # Per backend holding prompts before their first byte: when it last showed progress (its latest
        # first byte, or the moment it started holding prompts). Absent: it holds none.
        self._progress_s: dict[BackendId, float] = {}
        self._standing_s = (
            math.inf if self._ttft_target_s is None else STANDING_TTFT_TARGETS * self._ttft_target_s
        )
        # Since when the waiting room has held requests without emptying (None: empty).
        self._room_since_s: float | None = None

    # ---- introspection (metrics, tests) -------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self._admission.enabled

    def limits(self) -> dict[BackendId, int]:
        return self._limits.limits()

    def queue_depths(self) -> dict[str, int]:
        return {
            name: self._room.count(_room_rank(rank, True)) + self._room.count(_room_rank(rank, False))
            for name, rank in self._rank_of.items()
        }

    @property
    def ledger(self) -> RetryLedger:
        return self._ledger

    def queued(self) -> int:
        return len(self._room)

    def service_rate_rps(self) -> float:
        return self._service_rate.rate_per_s(self._clock.now_s())

    # ---- classes -------------------------------------------------------------------------
    def effective_class(self, features: RequestFeatures, route: RouteConfig) -> str:
        """The request's class: its claim if known (else the route default), capped by the tenant."""
        name = features.priority if features.priority in self._rank_of else route.priority
        ceiling = self._tenants.budget_for(features.tenant).max_priority
        if ceiling is not None and self._rank_of[name] < self._rank_of[ceiling]:
            name = ceiling
        return name

    # ---- capacity ------------------------------------------------------------------------
    def _stream_slots(self, view: BackendView, rank: int, class_reserve_frac: float) -> float:
        """Slots under the backend's stream limit that class ``rank`` may take: each class below the most
        important leaves ``class_reserve_frac`` more of the limit to the classes above it."""
        limit = self._limits.limit(view.backend_id)
        if limit is None:
            return math.inf
        return limit * max(0.0, 1.0 - class_reserve_frac * rank) - view.in_flight_requests

    def _prefill_cap(self, backend_id: BackendId, min_prefill_cap: float) -> float:
        """Most requests a backend should hold before their first byte: its first-byte rate x the TTFT
        target (Little's law: then its mean TTFT stays near the target), at least ``min_prefill_cap``.

        Why besides the concurrency limit: the limit counts whole streams, and when slots free in a
        bunch (streams end together, a limit grows) the pump would hand one backend dozens of prompts
        at once; their prefills queue in the engine and the last one waits seconds for its first token
        (measured: backend TTFT p99 3.2 s at a 500 ms target in a 3x burst, 1.5 s with this cap).
        Without a TTFT target there is no cap."""
        if self._ttft_target_s is None:
            return math.inf
        rate = self._first_byte_rates.get(backend_id)
        per_s = rate.rate_per_s(self._clock.now_s()) if rate is not None else 0.0
        return max(min_prefill_cap, per_s * self._ttft_target_s)

    def queue_stands(self, now_s: float) -> bool:
        """Whether the waiting room has held requests, without emptying, for longer than
        ``STANDING_TTFT_TARGETS`` TTFT targets: overload, where ``prefill_budget: fleet`` applies."""
        if not len(self._room):
            self._room_since_s = None
            return False
        if self._room_since_s is None:
            self._room_since_s = now_s
        return now_s - self._room_since_s > self._standing_s

    def _stalled_before_s(self) -> float:
        """A backend whose last progress (``_progress_s``) is at or before this instant is stalled."""
        return self._clock.now_s() - self._stall_s

    def _stalled(self, backend_id: BackendId, stalled_before_s: float) -> bool:
        """Whether ``backend_id`` holds prompts and has shown no progress since ``stalled_before_s``."""
        progress_s = self._progress_s.get(backend_id)
        return progress_s is not None and progress_s <= stalled_before_s

    def _headroom(
        self,
        view: BackendView,
        rank: int,
        class_reserve_frac: float,
        min_prefill_cap: float,
        stalled_before_s: float,
    ) -> tuple[float, float]:
        """(stream slots for class ``rank``, prompts the backend may still take before its prefill cap;
        negative when it holds more than its cap). A backend without a limit has room for anything; a
        stalled one (``STALL_TTFT_TARGETS``) has none and counts nothing against the fleet."""
        if self._limits.limit(view.backend_id) is None:
            return math.inf, math.inf
        if self._stalled(view.backend_id, stalled_before_s):
            return 0.0, 0.0
        return (
            self._stream_slots(view, rank, class_reserve_frac),
            self._prefill_cap(view.backend_id, min_prefill_cap) - view.awaiting_first_byte,
        )

    def _free_slots(
        self, view: BackendView, rank: int, class_reserve_frac: float, min_prefill_cap: float
    ) -> float:
        """``prefill_budget: backend``: the backend's free stream slots for class ``rank``, or none while it
        holds its prefill cap of prompts before their first byte."""
        limit = self._limits.limit(view.backend_id)
        if limit is None:
            return math.inf
        awaiting = view.awaiting_first_byte
        # The cap is never below min_prefill_cap, so under it the first-byte rate need not be read.
        if awaiting >= min_prefill_cap and awaiting >= self._prefill_cap(view.backend_id, min_prefill_cap):
            return 0.0
        return limit * max(0.0, 1.0 - class_reserve_frac * rank) - view.in_flight_requests

    def free_slots(
        self,
        model: str,
        snapshot: FleetSnapshot,
        rank: int = 0,
        class_reserve_frac: float = 0.1,
        min_prefill_cap: float = 4.0,
        fleet_budget: bool = False,
    ) -> float:
        """Requests of class ``rank`` that ``model``'s healthy backends may take now, minus reservations.

        ``prefill_budget: backend``: the free stream slots of the backends under their prefill cap.
        ``fleet`` (default): the free stream slots (summed over the backends that have any), bounded by
        the fleet's prefill budget (the sum of every backend's room under its prefill cap, a backend over
        its cap counting against it).

        Why a fleet budget: the pump wakes every request the answer allows before any of them is routed,
        so the gate ("this backend is under its cap") lets it hand the engines dozens of prompts at once
        whenever a stream limit grows; and a policy that does not route by load (round robin) sends half
        of them to a backend already over its cap. Measured (bench/overload.py, seeds 0-8): critical TTFT
        p99 0.94-1.41 s instead of 1.65-2.37 s, critical goodput 100 % in every seed with either policy.
        The caller passes ``fleet_budget`` only while the waiting room stands (``queue_stands``): applied
        to every short queue of a clump near capacity, the budget refused up to 3.0 % of sheddable
        requests at 0.8 of capacity (bench/overload.py control runs; the per-backend gate: 0-0.7 %); the
        rest of those refusals came from the stream limit, now steered to twice the target under the budget
        (``stream_limit_config``). The price: a fleet whose backends mostly hold more prompts than their
        caps queues every request at overload, even where a load-aware policy would find a backend under
        its cap (the 64-backend synthetic fleet of bench/decision_cost.py, whose prompts never get a first
        byte; there the room never stands, so the budget never applies). A stalled backend
        (``STALL_TTFT_TARGETS``) counts nothing."""
        if not fleet_budget:
            free = sum(
                max(0.0, self._free_slots(v, rank, class_reserve_frac, min_prefill_cap))
                for v in snapshot.serving(model)
            )
            return free - self._reserved_by_model.get(model, 0)
        stream = prefill = 0.0
        stalled_before_s = self._stalled_before_s()
        for view in snapshot.serving(model):
            slots, room = self._headroom(view, rank, class_reserve_frac, min_prefill_cap, stalled_before_s)
            if slots > 0:
                stream += slots
            prefill += room
        return min(stream, prefill) - self._reserved_by_model.get(model, 0)

    def _capacity_backend(
        self,
        serving: tuple[BackendView, ...],
        rank: int,
        reserved: int,
        prompt_tokens: int,
        output_tokens: float,
        prefix_matched_tokens: Mapping[BackendId, int],
        class_reserve_frac: float,
        min_prefill_cap: float,
    ) -> tuple[bool, bool]:
        """``prefill_budget: backend``: (free slots for class ``rank`` beyond the reservations, some backend
        with a free slot has KV room for the prompt beyond its cached prefix plus ``output_tokens``), in one
        pass that stops once both are known. A backend under its prefill cap offers its free stream slots.

        Why one early-exit pass: free slots are positive, so their running sum only grows and the first
        backends usually settle both answers; scanning (and re-reading every limiter of) a whole fleet per
        request cost more than the rest of admission together. Same answers as summing all of them.

        The loop is ``_free_slots`` and ``_kv_fits`` written out (same expressions, same order, so the
        same floats): on a fleet whose backends mostly hold ``min_prefill_cap`` prompts awaiting their
        first byte it visits a dozen or more backends per request, and two method calls per backend
        were most of its cost."""
        free_total = 0.0
        kv_ok = False
        limit_of = self._limits.current.get
        share = max(0.0, 1.0 - class_reserve_frac * rank)
        target_s = self._ttft_target_s
        rates = self._first_byte_rates
        now_s: float | None = None
        for view in serving:
            backend_id = view.backend_id
            limit = limit_of(backend_id)
            if limit is None:
                slots = math.inf
            else:
                awaiting = view.awaiting_first_byte
                # The prefill cap (``_prefill_cap``) is never below min_prefill_cap, and is infinite
                # without a TTFT target; under the floor the first-byte rate need not be read.
                if awaiting >= min_prefill_cap and target_s is not None:
                    rate = rates.get(backend_id)
                    if rate is None:
                        continue  # cap = min_prefill_cap <= awaiting: no free slot
                    if now_s is None:
                        now_s = self._clock.now_s()
                    if awaiting >= max(min_prefill_cap, rate.rate_per_s(now_s) * target_s):
                        continue
                slots = limit * share - view.in_flight_requests
                if slots <= 0:
                    continue
            free_total += slots
            if not kv_ok:
                kv_ok = self._kv_fits(
                    view, prompt_tokens - prefix_matched_tokens.get(backend_id, 0) + output_tokens
                )
            if kv_ok and free_total > reserved:
                break
        return free_total > reserved, kv_ok

    def _capacity_fleet(
        self,
        model: str,
        serving: tuple[BackendView, ...],
        rank: int,
        reserved: int,
        prompt_tokens: int,
        output_tokens: float,
        prefix_matched_tokens: Mapping[BackendId, int],
        class_reserve_frac: float,
        min_prefill_cap: float,
    ) -> tuple[bool, bool]:
        """(``free_slots(model)`` for class ``rank`` > the reservations, some backend with a free stream
        slot and room under its prefill cap has KV room for the prompt beyond its cached prefix plus
        ``output_tokens``), in one pass that stops once both answers are known.

        Why the early exit is exact: only a backend holding more prompts than its cap counts against
        the fleet's prefill budget, and its cap is never below ``min_prefill_cap``, so it is one of the
        few backends ``_read_snapshot`` found crowded; their excess is summed first, then every other
        backend's room can only add. Scanning (and reading the first-byte rate of) a whole 64-backend
        fleet per admitted request would cost more than the rest of admission together."""
        excess = 0.0
        stalled_before_s = self._stalled_before_s()
        if self._ttft_target_s is not None:
            for backend_id, crowded in self._crowded.items():
                if self._stalled(backend_id, stalled_before_s):
                    continue  # out of the budget
                if crowded.health is Health.READY and model in crowded.models:
                    room = self._prefill_cap(backend_id, min_prefill_cap) - crowded.awaiting_first_byte
                    if room < 0 and self._limits.limit(backend_id) is not None:
                        excess += room
        stream = 0.0
        prefill = excess
        kv_ok = False
        for view in serving:
            slots, room = self._headroom(view, rank, class_reserve_frac, min_prefill_cap, stalled_before_s)
            if room > 0:
                prefill += room
            if slots <= 0:
                continue
            stream += slots
            if not kv_ok and room > 0:
                kv_ok = self._kv_fits(
                    view, prompt_tokens - prefix_matched_tokens.get(view.backend_id, 0) + output_tokens
                )
            if kv_ok and min(stream, prefill) > reserved:
                break
        return min(stream, prefill) > reserved, kv_ok

    def _kv_fits(self, view: BackendView, needed_tokens: float) -> bool:
        """Memory admission: the request's blocks fit above the watermark (unknown KV state: assume yes)."""
        if view.metrics_stale or view.kv_usage_frac is None or view.kv_capacity_tokens is None:
            return True
        free_frac = 1.0 - view.kv_usage_frac - self._admission.kv_watermark_frac
        needed_blocks = math.ceil(needed_tokens / KV_BLOCK_TOKENS)
        return needed_blocks * KV_BLOCK_TOKENS <= free_frac * view.kv_capacity_tokens

    # ---- the decision --------------------------------------------------------------------
    def decide(
        self,
        features: RequestFeatures,
        route: RouteConfig,
        snapshot: FleetSnapshot,
        predictions: Predictions | None,
        prefix_matched_tokens: Mapping[BackendId, int],
    ) -> AdmissionDecision:
        now_s = self._clock.now_s()
        self._read_snapshot(snapshot)
        if not self._admission.enabled:
            return Admit()
        class_name = self.effective_class(features, route)
        rank = self._rank_of[class_name]
        p50, p90 = PRIOR_OUTPUT_TOKENS, PRIOR_OUTPUT_TOKENS
        if predictions is not None:
            p50, p90 = predictions.output_length.p50_tokens, predictions.output_length.p90_tokens
        cost_tokens = features.prompt_tokens + p50
        verdict = self._tenants.check(features.tenant, cost_tokens, now_s)
        serving = snapshot.serving(features.model)
        reserved = self._reserved_by_model.get(features.model, 0)
        reserve_frac, min_cap = route.admission.class_reserve_frac, route.admission.min_prefill_cap
        returning = self._ledger.redeem(features.tenant, rank, features.client_retry_count, now_s)
        if route.admission.prefill_budget == "fleet" and self.queue_stands(now_s):
            has_free_slot, kv_ok = self._capacity_fleet(
                features.model,
                serving,
                _slot_rank(rank, returning),
                reserved,
                features.prompt_tokens,
                p90,
                prefix_matched_tokens,
                reserve_frac,
                min_cap,
            )
        else:
            has_free_slot, kv_ok = self._capacity_backend(
                serving,
                _slot_rank(rank, returning),
                reserved,
                features.prompt_tokens,
                p90,
                prefix_matched_tokens,
                reserve_frac,
                min_cap,
            )
        room_rank = _room_rank(rank, returning)
        queued_ahead, _ = self._room.ahead_of(room_rank)
        # Read even when unused below: the rate decays in place on every read, and reading it at the
        # same moments keeps its floats (hence later Retry-After values) exactly as they were.
        service_rate = self._service_rate.rate_per_s(now_s)
        # Nobody overtakes the queue: with requests of this class or a better one waiting, a free
        # slot (a limit just grew) is theirs; this request queues and the pump serves in order.
        free_now = (has_free_slot and queued_ahead == 0) or not serving
        kv_now = kv_ok or not serving
        decision: AdmissionDecision
        if verdict.reason is None and free_now and kv_now:
            # Below capacity: ``decide`` passes rule 1 (no tenant reason) and admits by rule 2 (a free
            # slot with KV headroom) before reading anything else, so the view is not built.
            decision = Admit()
        else:
            decision = decide(
                self._admission_view(
                    route,
                    class_name,
                    rank,
                    predictions,
                    verdict,
                    room_rank,
                    queued_ahead,
                    service_rate,
                    free_now,
                    kv_now,
                    now_s,
                )
            )
        if isinstance(decision, Shed):
            if decision.reason in PROMISED_REASONS:
                self._ledger.promise(features.tenant, rank, decision.retry_after_s, now_s)
            return decision
        self._tenants.acquire(features.tenant, cost_tokens, now_s)
        self._charges[features.request_id] = _Charge(features.tenant, cost_tokens, features.prompt_tokens)
        if isinstance(decision, Admit):
            self._ledger.on_admitted(rank, now_s)
        elif returning:
            self._returning.add(features.request_id)
        return decision

    def _admission_view(
        self,
        route: RouteConfig,
        class_name: str,
        rank: int,
        predictions: Predictions | None,
        verdict: TenantVerdict,
        room_rank: int,
        queued_ahead: int,
        service_rate: float,
        free_now: bool,
        kv_now: bool,
        now_s: float,
    ) -> AdmissionView:
        """Everything the admission rule reads, for a request that is not simply admitted."""
        best_ttft_ms: float | None = None
        if predictions is not None:
            per_backend = predictions.per_backend
            if isinstance(per_backend, CostTable):  # the predictor's table knows its minimum
                best_ttft_ms = per_backend.best_ttft_ms
            elif per_backend:
                best_ttft_ms = min(c.ttft_ms for c in per_backend.values())
        slo_ttft_ms = route.slo.ttft_ms
        deadline_ms = route.admission.queue_deadline_ms.get(
            class_name, slo_ttft_ms if slo_ttft_ms is not None else DEFAULT_QUEUE_DEADLINE_MS
        )
        return AdmissionView(
            now_s=now_s,
            has_free_slot=free_now,
            kv_headroom_ok=kv_now,
            queued_ahead_requests=queued_ahead,
            queue_can_accept=self._room.can_accept(room_rank),
            service_rate_rps=max(service_rate, self._first_byte_rate_rps(now_s))
            if route.admission.prefill_budget == "fleet"
            else service_rate,
            capacity_retry_after_s=0.0
            if free_now and kv_now
            else self._retry_after(rank, service_rate, now_s),
            best_predicted_ttft_ms=best_ttft_ms,
            slo_ttft_ms=slo_ttft_ms,
            slo_margin_frac=route.admission.slo_margin_frac,
            queue_deadline_ms=deadline_ms,
            shed_infeasible=route.admission.shed_infeasible,
            tenant_reason=verdict.reason,
            tenant_retry_after_s=verdict.retry_after_s,
            retry_after_min_s=self._admission.retry_after_min_s,
            retry_after_max_s=self._admission.retry_after_max_s,
        )

    def _first_byte_rate_rps(self, now_s: float) -> float:
        """The fleet's first bytes per second: the rate at which queued requests get into the engines.

        With ``prefill_budget: fleet`` the queue wait of rule 4 divides by the larger of this and the
        completion rate: completions lag admissions by a whole E2E (~6 s at 0.5x in bench/overload.py),
        and with the budget (which queues sooner than the gate) the completion rate alone predicted a 2 s
        wait for the third queued request early in a run and refused a standard request as infeasible
        at half of capacity. Not with the gate per backend: there the larger rate refused fewer standard
        requests early in the burst, their longer queue delayed critical (critical goodput >= 95 % and
        p99 <= 2 s in 4-5 of 9 seeds instead of 6-9)."""
        return sum(rate.rate_per_s(now_s) for rate in self._first_byte_rates.values())

    def _retry_after(self, rank: int, service_rate: float, now_s: float) -> float:
        """The Retry-After to promise class ``rank`` now: when the capacity left to it by the classes
        above covers the work queued ahead of a returning request and the returns already promised."""
        queued_ahead, _ = self._room.ahead_of(_room_rank(rank, True))
        return self._ledger.retry_after_s(
            rank, queued_ahead, service_rate, now_s, self._admission.retry_after_min_s
        )

    def _promise(self, tenant: str, rank: int) -> float:
        """A Retry-After for a request refused now (queue full, evicted, timed out), booked."""
        now_s = self._clock.now_s()
        retry_after_s = self._retry_after(rank, self._service_rate.rate_per_s(now_s), now_s)
        self._ledger.promise(tenant, rank, retry_after_s, now_s)
        return retry_after_s

    def _read_snapshot(self, snapshot: FleetSnapshot) -> None:
        """In-flight counts for the limiters, and the first bytes seen since the last snapshot: each new
        one is a TTFT sample at the moment it happened (learning it only when the request ends lags by
        the whole E2E, and a limiter that late overshoots the knee and then collapses).

        Only the views that are not the very objects read last time are visited: views are immutable
        and the fleet rebuilds only those that changed, and re-reading an unchanged one sets what it
        set before (the same in-flight count; no new first bytes). Most snapshots differ from the
        previous one in a backend or two, so this saves a pass over the fleet per request."""
        views = snapshot.backends
        last = self._views_read
        if views is last:
            return
        self._views_read = views
        if len(views) == len(last):
            changed: Sequence[BackendView] = [
                view for view, old in zip(views, last, strict=True) if view is not old
            ]
        else:
            changed = views
            self._crowded.clear()  # a backend left the fleet: forget its last view
        for view in changed:
            backend_id = view.backend_id
            self._in_flight_seen[backend_id] = view.in_flight_requests
            if view.awaiting_first_byte >= self._crowded_floor:
                self._crowded[backend_id] = view
            else:
                self._crowded.pop(backend_id, None)
            if view.awaiting_first_byte == 0:
                self._progress_s.pop(backend_id, None)
            elif backend_id not in self._progress_s:
                self._progress_s[backend_id] = self._clock.now_s()  # started holding prompts
            if view.first_bytes == 0:
                continue
            count, total_ms = self._first_bytes_seen.get(backend_id, (0, 0.0))
            new = view.first_bytes - count
            if new > 0:
                if view.awaiting_first_byte:
                    self._progress_s[backend_id] = self._clock.now_s()
                rate = self._first_byte_rates.get(backend_id)
                if rate is None:
                    rate = self._first_byte_rates[backend_id] = ServiceRate(FIRST_BYTE_RATE_TAU_S)
                rate.record(self._clock.now_s(), float(new))
                mean_ms = (view.first_byte_ttft_ms_total - total_ms) / new
                for _ in range(new):
                    self._limits.on_sample(backend_id, mean_ms, view.in_flight_requests)
            self._first_bytes_seen[backend_id] = (view.first_bytes, view.first_byte_ttft_ms_total)

    # ---- the waiting room ----------------------------------------------------------------
    def enqueue(self, features: RequestFeatures, route: RouteConfig, decision: Queue) -> EnqueueResult:
        """Put a ``Queue``-decided request in the waiting room (it may evict less important ones)."""
        now_s = self._clock.now_s()
        rank = self._rank_of[self.effective_class(features, route)]
        returning = features.request_id in self._returning
        self._returning.discard(features.request_id)
        cost = self._charges.get(features.request_id)
        work = cost.tokens if cost is not None else float(features.prompt_tokens)
        if not len(self._room):
            self._room_since_s = now_s  # the room starts to hold requests
        result = self._room.push(
            _Queued(
                features.request_id,
                features.model,
                rank,
                route.admission.class_reserve_frac,
                route.admission.min_prefill_cap,
                features.tenant,
                _slot_rank(rank, returning),
                route.admission.prefill_budget == "fleet",
            ),
            _room_rank(rank, returning),
            decision.deadline_s,
            now_s,
            work,
        )
        if result.waiter is None:
            return EnqueueResult(Shed(ShedReason.QUEUE_FULL, self._promise(features.tenant, rank)))
        self._waiters[features.request_id] = result.waiter
        evicted = tuple(w.item.request_id for w in result.evicted)
        for request_id in evicted:
            self._waiters.pop(request_id, None)
        evicted_retry_after_s = 0.0
        for w in result.evicted:
            evicted_retry_after_s = self._promise(w.item.tenant, w.item.rank)
        return EnqueueResult(None, evicted, evicted_retry_after_s)

    def retry_after_for(self, features: RequestFeatures, route: RouteConfig) -> float:
        """The Retry-After for this request, refused now (its queue deadline passed): booked as a promise."""
        return self._promise(features.tenant, self._rank_of[self.effective_class(features, route)])

    def pop_dispatchable(self, snapshot: FleetSnapshot) -> str | None:
        """The next queued request (most important class first) whose model has a free slot; reserves it."""
        self._read_snapshot(snapshot)
        if not len(self._room):
            self._room_since_s = None
            return None
        free_by_model: dict[tuple[str, int, float, float, bool], float] = {}
        stands = self.queue_stands(self._clock.now_s())

        def can_dispatch(item: _Queued) -> bool:
            fleet_budget = item.fleet_budget and stands
            key = (
                item.model,
                item.share_rank,
                item.class_reserve_frac,
                item.min_prefill_cap,
                fleet_budget,
            )
            if key not in free_by_model:
                free_by_model[key] = self.free_slots(
                    item.model,
                    snapshot,
                    item.share_rank,
                    item.class_reserve_frac,
                    item.min_prefill_cap,
                    fleet_budget,
                )
            return free_by_model[key] > 0

        waiter = self._room.pop_dispatchable(can_dispatch)
        if waiter is None:
            return None
        request_id, model = waiter.item.request_id, waiter.item.model
        self._waiters.pop(request_id, None)
        self._ledger.on_admitted(waiter.item.rank, self._clock.now_s())
        self._reserved_by_model[model] = self._reserved_by_model.get(model, 0) + 1
        self._reserved_ids[request_id] = model
        return request_id

    def leave_queue(self, request_id: str) -> bool:
        """The request stops waiting (client gone or deadline passed); False if already woken."""
        waiter = self._waiters.pop(request_id, None)
        return waiter is not None and self._room.remove(waiter)

    def expire(self) -> list[str]:
        """Remove every queued request whose deadline has passed (virtual time drives this)."""
        expired = self._room.expire(self._clock.now_s())
        for waiter in expired:
            self._waiters.pop(waiter.item.request_id, None)
        return [w.item.request_id for w in expired]

    def next_deadline_s(self) -> float | None:
        return self._room.next_deadline_s()

    def _unreserve(self, request_id: str) -> None:
        model = self._reserved_ids.pop(request_id, None)
        if model is not None:
            left = self._reserved_by_model.get(model, 0) - 1
            if left > 0:
                self._reserved_by_model[model] = left
            else:
                self._reserved_by_model.pop(model, None)

    # ---- feedback ------------------------------------------------------------------------
    def on_routed(self, request_id: str) -> None:
        self._unreserve(request_id)

    def observe(self, outcome: Outcome) -> None:
        now_s = self._clock.now_s()
        self._unreserve(outcome.request_id)
        self.leave_queue(outcome.request_id)
        self._returning.discard(outcome.request_id)
        charge = self._charges.pop(outcome.request_id, None)
        if charge is not None:
            actual = float(charge.prompt_tokens + outcome.output_tokens)
            self._tenants.release(charge.tenant, charge.tokens, actual, now_s)
        backend_id = outcome.backend_id
        if backend_id is None:
            return
        if outcome.status_code < 400 and not outcome.cancelled:
            self._service_rate.record(now_s)
        backend_ttft_ms = outcome.ttft_at_backend_ms
        if backend_ttft_ms is not None and backend_id not in self._first_bytes_seen:
            # The backend's own TTFT: time spent in the waiting room is not the backend's congestion
            # (fed back, it would shrink the limit, lengthen the queue and spiral to the minimum).
            self._limits.on_sample(backend_id, backend_ttft_ms, self._in_flight_seen.get(backend_id, 0))
        elif outcome.status_code in (429, 503, 504):
            self._limits.on_drop(backend_id)
