"""The proxy's mutable fleet state and the immutable snapshots decisions are made on.

One ``FleetState`` per proxy process, owned by the event loop (no locks: every
mutation runs on the loop thread). It holds, per backend:

- Sluice's own accounting, always current: requests in flight, how many of
  them still await their first byte, in-flight prompt tokens and predicted
  decode tokens (``acquire`` returns an ``InFlightGuard`` that undoes them);
- health: active checks (``record_check``) through ``HealthMachine``, the
  passive ``CircuitBreaker`` (fed by guards), and operator ``drain``;
- EWMA TTFT and TPOT of streamed responses (``observe_latency``), smoothing
  ``EWMA_ALPHA`` = 0.2, i.e. roughly the last ten streams dominate;
- the last engine metrics scrape (``update_engine_metrics``), stale once older
  than ``metrics_poll.stale_after_s``; the prefix hit rate comes from
  ``state.engine_metrics.PrefixHitRateTracker`` (counter deltas between two
  scrapes, or the engine's own rate gauge for SGLang and vLLM V0).

``snapshot()`` is called once per request, so it is cached: a backend's
``BackendView`` is rebuilt only after that backend changed, or when a
time-driven fact may have moved (breaker open period over, metrics turning
stale, metrics age older than ``AGE_RESOLUTION_S``). The clock is injected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.clock import Clock
from core.config import SluiceConfig
from core.types import BackendId, BackendView, EngineMetrics, FleetSnapshot, Health
from state.circuit_breaker import CircuitBreaker
from state.engine_metrics.hit_rate import PrefixHitRateTracker
from state.health import HealthMachine
from state.inflight import InFlightGuard

EWMA_ALPHA = 0.2
AGE_RESOLUTION_S = 0.1
_NEVER = float("inf")


def ewma(previous: float | None, sample: float, alpha: float = EWMA_ALPHA) -> float:
    return sample if previous is None else previous + alpha * (sample - previous)


@dataclass(slots=True, eq=False)
class BackendState:
    """Everything mutable about one backend; only ``FleetState`` and its guards write it."""

    backend_id: BackendId
    models: frozenset[str]
    gpu_class: str
    weight: float
    max_concurrency: int | None
    health: HealthMachine
    breaker: CircuitBreaker
    in_flight: int = 0
    awaiting_first_byte: int = 0
    in_flight_prompt_tokens: int = 0
    in_flight_predicted_decode_tokens: float = 0.0
    ewma_ttft_ms: float | None = None
    ewma_tpot_ms: float | None = None
    first_bytes: int = 0
    first_byte_ttft_ms_total: float = 0.0
    engine: EngineMetrics | None = None
    engine_received_s: float | None = None
    view: BackendView | None = None
    view_valid_until_s: float = _NEVER


class FleetState:
    def __init__(self, config: SluiceConfig, clock: Clock) -> None:
        self._clock = clock
        self._stale_after_s = config.metrics_poll.stale_after_s
        self._backends: dict[BackendId, BackendState] = {
            b.name: BackendState(
                backend_id=b.name,
                models=frozenset(b.models),
                gpu_class=b.gpu,
                weight=b.weight,
                max_concurrency=b.max_concurrency,
                health=HealthMachine(config.health.healthy_after, config.health.unhealthy_after),
                breaker=CircuitBreaker(
                    config.circuit_breaker.consecutive_failures, config.circuit_breaker.open_s
                ),
            )
            for b in config.backends
        }
        # One tuple of ids for every snapshot (membership is fixed): ``FleetSnapshot.backend_ids``.
        self._backend_ids = tuple(self._backends)
        self._capacity_listeners: list[Callable[[], None]] = []
        self._hit_rates = PrefixHitRateTracker()
        self._version = 0
        self._snapshot: FleetSnapshot | None = None
        self._snapshot_valid_until_s = _NEVER
        self._total_in_flight = 0

    # -- reading -----------------------------------------------------------------------------

    @property
    def backend_ids(self) -> tuple[BackendId, ...]:
        return self._backend_ids

    @property
    def total_in_flight(self) -> int:
        return self._total_in_flight

    def backend(self, backend_id: BackendId) -> BackendState:
        return self._backends[backend_id]

    def health_of(self, backend_id: BackendId) -> Health:
        state = self._backends[backend_id]
        return state.health.effective(state.breaker, self._clock.now_s())

    def snapshot(self) -> FleetSnapshot:
        now_s = self._clock.now_s()
        cached = self._snapshot
        if cached is not None and now_s < self._snapshot_valid_until_s:
            return cached
        valid_until_s = _NEVER
        views = []
        for state in self._backends.values():
            view = state.view
            if view is None or now_s >= state.view_valid_until_s:
                view = self._build_view(state, now_s)
            views.append(view)
            valid_until_s = min(valid_until_s, state.view_valid_until_s)
        # Positional: by keyword, the interpreted build's constructor costs ~0.1 µs more.
        snapshot = FleetSnapshot(tuple(views), now_s, self._version, self._backend_ids)
        self._snapshot = snapshot
        self._snapshot_valid_until_s = valid_until_s
        return snapshot

    def _build_view(self, state: BackendState, now_s: float) -> BackendView:
        engine = state.engine
        age_s = None if state.engine_received_s is None else now_s - state.engine_received_s
        stale = age_s is None or age_s > self._stale_after_s
        valid_until_s = _NEVER
        if state.engine_received_s is not None:
            valid_until_s = now_s + AGE_RESOLUTION_S
            if not stale:
                valid_until_s = min(valid_until_s, state.engine_received_s + self._stale_after_s)
        breaker_change_s = state.breaker.next_change_s()
        if breaker_change_s is not None and breaker_change_s > now_s:
            valid_until_s = min(valid_until_s, breaker_change_s)
        view = BackendView(
            backend_id=state.backend_id,
            models=state.models,
            gpu_class=state.gpu_class,
            weight=state.weight,
            max_concurrency=state.max_concurrency,
            health=state.health.effective(state.breaker, now_s),
            in_flight_requests=state.in_flight,
            awaiting_first_byte=state.awaiting_first_byte,
            in_flight_prompt_tokens=state.in_flight_prompt_tokens,
            in_flight_predicted_decode_tokens=state.in_flight_predicted_decode_tokens,
            engine_running=engine.running if engine else None,
            engine_waiting=engine.waiting if engine else None,
            kv_usage_frac=engine.kv_usage_frac if engine else None,
            prefix_hit_rate=self._hit_rates.rate(state.backend_id),
            kv_capacity_tokens=engine.kv_capacity_tokens if engine else None,
            metrics_age_s=age_s,
            metrics_stale=stale,
            ewma_ttft_ms=state.ewma_ttft_ms,
            ewma_tpot_ms=state.ewma_tpot_ms,
            first_bytes=state.first_bytes,
            first_byte_ttft_ms_total=state.first_byte_ttft_ms_total,
        )
        state.view = view
        state.view_valid_until_s = valid_until_s
        return view

    # -- writing -----------------------------------------------------------------------------

    def touch(self, state: BackendState) -> None:
        """Invalidate ``state``'s cached view (called after every mutation)."""
        state.view = None
        self._snapshot = None
        self._version += 1

    def acquire(
        self, backend_id: BackendId, prompt_tokens: int, predicted_decode_tokens: float = 0.0
    ) -> InFlightGuard:
        """Count one attempt on ``backend_id``; use the returned guard in a ``with`` block."""
        state = self._backends[backend_id]
        is_probe = state.breaker.on_request_start(self._clock.now_s())
        state.in_flight += 1
        state.awaiting_first_byte += 1
        state.in_flight_prompt_tokens += prompt_tokens
        state.in_flight_predicted_decode_tokens += predicted_decode_tokens
        self._total_in_flight += 1
        self.touch(state)
        return InFlightGuard(
            self, state, prompt_tokens, predicted_decode_tokens, is_probe, self._clock.now_s()
        )

    def record_first_byte(self, state: BackendState, dispatched_s: float, at_s: float | None = None) -> None:
        """A first byte arrived (at ``at_s``, default now) for an attempt dispatched at ``dispatched_s``."""
        arrived_s = self._clock.now_s() if at_s is None else at_s
        state.first_bytes += 1
        state.first_byte_ttft_ms_total += max(0.0, arrived_s - dispatched_s) * 1000.0
        self.touch(state)

    def on_capacity_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever a slot may have freed (release, backend back up, undrain)."""
        self._capacity_listeners.append(listener)

    def _capacity_changed(self) -> None:
        for listener in self._capacity_listeners:
            listener()

    def on_guard_released(self, state: BackendState) -> None:
        self._total_in_flight -= 1
        self.touch(state)
        self._capacity_changed()

    def breaker_success(self, state: BackendState) -> None:
        state.breaker.on_success()
        self.touch(state)

    def breaker_failure(self, state: BackendState) -> None:
        state.breaker.on_failure(self._clock.now_s())
        self.touch(state)

    def record_check(self, backend_id: BackendId, passed: bool) -> bool:
        """Feed an active health check result; True when the backend's checked state changed."""
        state = self._backends[backend_id]
        changed = state.health.record_check(passed)
        if changed:
            self.touch(state)
            self._capacity_changed()
        return changed

    def drain(self, backend_id: BackendId) -> None:
        """Stop sending new requests to ``backend_id``; in-flight ones finish normally."""
        state = self._backends[backend_id]
        state.health.drain()
        self.touch(state)

    def undrain(self, backend_id: BackendId) -> None:
        state = self._backends[backend_id]
        state.health.undrain()
        self.touch(state)
        self._capacity_changed()

    def observe_latency(self, backend_id: BackendId, ttft_ms: float, tpot_ms: float | None) -> None:
        """Fold one streamed response's TTFT (and TPOT when it had >= 2 tokens) into the EWMAs."""
        state = self._backends[backend_id]
        state.ewma_ttft_ms = ewma(state.ewma_ttft_ms, ttft_ms)
        if tpot_ms is not None:
            state.ewma_tpot_ms = ewma(state.ewma_tpot_ms, tpot_ms)
        self.touch(state)

    def update_engine_metrics(self, backend_id: BackendId, metrics: EngineMetrics | None) -> None:
        """Store one scrape. ``None`` (failed scrape) keeps the last values, which then go stale."""
        state = self._backends.get(backend_id)
        if state is None or metrics is None:
            return
        self._hit_rates.update(backend_id, metrics)
        state.engine = metrics
        state.engine_received_s = self._clock.now_s()
        self.touch(state)
