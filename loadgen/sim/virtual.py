"""The virtual-time fleet: many simulated engines and Sluice's decision code under one simulated clock.

A discrete-event loop replays a stream of ``loadgen.workload.WorkloadRequest`` against the engines of
a fleet file, with the proxy's logic in the loop exactly as the real proxy calls it
(``core.protocols``): for each request ``build_features`` -> ``admit`` -> (waiting room) -> ``route``
-> ``on_routed`` (again on every retry) -> the engine -> ``observe(Outcome)`` in every path. Decisions
see only what the proxy would (``loadgen.sim.proxy_model``): exact own accounting, engine metrics as
of the last poll. The simulator's ground truth (``x-sim-output-tokens``) reaches the engine only.

Events: arrivals (a dependent turn waits for its parent's end + think time), engine wake-ups at the
end of each engine plan (a single step, or a run of identical decode steps: ``SimEngine``
macro-steps, so an hour of traffic costs per batch change, not per step), metrics polls and health
checks (staggered per backend), first-byte timeouts, waiting-room deadlines and scheduled faults.
Engines advance lazily; a wake-up is computed only once every event at the current instant is
handled, so requests arriving together enter the same step, as in real time.

Proxy behaviour modelled: retries before the first byte on connect errors and on
``retries.on_status`` up to ``retries.max_per_request`` (the retry budget is not modelled); the
first-byte timeout (``timeouts.first_byte_ms`` -> 504 ``upstream_timeout``); a failure after the first
byte (crash, dropped stream) ends as 502 ``upstream_failed_mid_stream``; ``Queue`` decisions wait in a
FIFO waiting room, asked again whenever a sent request finishes (capacity freed), 429
``queue_timeout`` at the deadline. The predicted decode tokens in flight are 0 (a decision does not
expose its prediction yet).

Deterministic for a seed: every RNG is seeded and ties break in insertion order.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from core import headers
from core.clock import ManualClock
from core.config import LoadedConfig
from core.errors import SluiceError
from core.features import build_features
from core.protocols import Decider
from core.types import Admit, Queue, Shed, ShedReason
from decision.engine import DecisionEngine
from loadgen.sim.engine import SimEngine
from loadgen.sim.faults import FaultPatch
from loadgen.sim.fleet_config import Fleet
from loadgen.sim.flight import Flight
from loadgen.sim.openai_api import parse_body
from loadgen.sim.proxy_model import ProxyModel
from loadgen.sim.records import RequestRecord
from loadgen.sim.request import SimRequest
from loadgen.sim.virtual_backend import VirtualBackend
from loadgen.workload import WorkloadRequest

_ARRIVAL, _START, _SEND, _WAKE, _POLL, _HEALTH, _TIMEOUT, _QUEUE_DEADLINE, _FAULT = range(9)
_SHED_CODES = {ShedReason.TENANT_BUDGET: "tenant_budget_exceeded", ShedReason.QUEUE_TIMEOUT: "queue_timeout"}
_MID_STREAM = (502, "upstream_failed_mid_stream")
_CONNECT = (502, "upstream_connect_error")


@dataclass(frozen=True, slots=True)
class VirtualOptions:
    seed: int = 0
    one_way_delay_s: float = 0.0  # proxy <-> backend network latency, each way
    poll_interval_s: float | None = None  # default: the config's metrics_poll.interval_s


class VirtualFleet:
    def __init__(
        self,
        fleet: Fleet,
        loaded: LoadedConfig,
        *,
        decider: Decider | None = None,
        options: VirtualOptions | None = None,
    ) -> None:
        self.options = options or VirtualOptions()
        self.config = loaded.config
        self.clock = ManualClock(0.0)
        rng = random.Random(self.options.seed)
        self.decider: Decider = decider or DecisionEngine.from_config(loaded, self.clock, rng)
        specs = {s.name: s for s in fleet.backends}
        names = [b.name for b in self.config.backends]
        if sorted(names) != sorted(specs):
            raise ValueError(f"config backends {sorted(names)} differ from the fleet's {sorted(specs)}")
        self.backends = {n: VirtualBackend(specs[n]) for n in names}
        self._specs = specs
        self.proxy = ProxyModel(self.config)
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._dirty: set[str] = set()
        self._wake_at: dict[str, float | None] = dict.fromkeys(names)
        self._seen: set[str] = set()
        self._done_at: dict[str, float] = {}
        self._in_room_retry = False
        self._children: dict[str, list[WorkloadRequest]] = {}
        self._waiting_room: deque[Flight] = deque()
        self._events: list[tuple[int, Flight, float]] = []
        self._records: list[RequestRecord] = []
        self._workload: Iterator[WorkloadRequest] = iter(())
        self._open = 0  # arrived or scheduled requests without an outcome yet
        self._arrivals_left = True

    # --- public ----------------------------------------------------------------------------------

    def engine(self, backend_id: str) -> SimEngine:
        """The exact engine behind a backend (KV state for an oracle; Sluice's decisions never see it)."""
        return self.backends[backend_id].engine

    def exact_cached_prefix_tokens(self, prefix_hashes: Sequence[int]) -> dict[str, int]:
        """Per backend, the tokens of this prefix (``core.tokens`` hashes) cached right now."""
        return {n: b.engine.cached_prefix_tokens(prefix_hashes) for n, b in self.backends.items()}

    def run(self, workload: Iterable[WorkloadRequest], until_s: float | None = None) -> list[RequestRecord]:
        """Replay ``workload`` (sorted by arrival) to its end or ``until_s``; records in finish order."""
        self._workload = iter(workload)
        self._pull_arrival()
        poll_s = self.options.poll_interval_s or self.config.metrics_poll.interval_s
        n = len(self.backends)
        for i, name in enumerate(self.backends):
            spec = self._specs[name]
            self._push(0.0, _FAULT, (name, FaultPatch(**spec.faults.model_dump())))
            for event in spec.fault_schedule:
                self._push(event.at_s, _FAULT, (name, event.set))
            self._push(poll_s * i / n, _POLL, (name, poll_s))
            self._push(self.config.health.interval_s * i / n, _HEALTH, name)
        handlers = (
            self._on_arrival,
            self._on_start,
            self._on_send,
            self._on_wake,
            self._on_poll,
            self._on_health,
            self._on_timeout,
            self._on_queue_deadline,
            self._on_fault,
        )
        heap = self._heap
        while heap:
            t, _, kind, payload = heapq.heappop(heap)
            if until_s is not None and t > until_s:
                break
            self.clock.set(t)
            handlers[kind](t, payload)
            if self._dirty and (not heap or heap[0][0] > t):
                self._schedule_wakes()
        return self._records

    # --- plumbing --------------------------------------------------------------------------------

    def _push(self, t: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, payload))

    def _busy(self) -> bool:
        return self._arrivals_left or self._open > 0

    def _schedule_wakes(self) -> None:
        for name in sorted(self._dirty):
            end = self.backends[name].engine.plan_end_s()
            if end is not None and end != self._wake_at[name]:
                self._push(end, _WAKE, (name, end))
            self._wake_at[name] = end
        self._dirty.clear()

    def _advance(self, name: str, t: float) -> None:
        self.backends[name].engine.advance_until(t)
        self._dirty.add(name)
        self._drain_events()

    def _on_wake(self, t: float, payload: tuple[str, float]) -> None:
        name, end = payload
        if self._wake_at[name] == end:
            self._wake_at[name] = None
            self._advance(name, t)

    def _pull_arrival(self) -> None:
        nxt = next(self._workload, None)
        if nxt is None:
            self._arrivals_left = False
            return
        self._open += 1
        self._push(nxt.arrival_s, _ARRIVAL, nxt)

    # --- arrivals, admission, routing ------------------------------------------------------------

    def _on_arrival(self, t: float, wr: WorkloadRequest) -> None:
        self._pull_arrival()
        parent = wr.after_request_id
        self._seen.add(wr.request_id)
        if parent is not None and parent in self._seen and parent not in self._done_at:
            self._children.setdefault(parent, []).append(wr)
        elif parent is not None and parent in self._done_at:
            self._push(max(t, self._done_at[parent] + wr.think_time_s), _START, wr)
        else:
            self._on_start(t, wr)

    def _on_start(self, t: float, wr: WorkloadRequest) -> None:
        hdrs = {k.lower(): v for k, v in wr.http_headers().items() if k.lower() != headers.SIM_OUTPUT_TOKENS}
        model = wr.body.get("model")
        route = self.config.route_for(wr.path, model if isinstance(model, str) else "", hdrs)
        features = build_features(
            request_id=wr.request_id,
            endpoint=wr.endpoint,
            body=wr.body,
            route=route.name,
            tenant=wr.tenant,
            priority=wr.priority,
            arrival_s=t,
            session_key=wr.session_id,
        )
        record = RequestRecord(
            wr.request_id, wr.arrival_s, t, wr.tenant, wr.priority, route.name, wr.session_id
        )
        record.prompt_tokens = features.prompt_tokens
        self._admit(Flight(self, wr, features, record), t)

    def _admit(self, flight: Flight, t: float) -> bool:
        """Ask admission; True when the request left (or never entered) the waiting room."""
        verdict = self.decider.admit(flight.features, self.proxy.snapshot(t))
        if isinstance(verdict, Shed):
            flight.record.retry_after_s = verdict.retry_after_s
            self._finish(flight, t, 429, _SHED_CODES.get(verdict.reason, "overloaded"))
            return True
        if isinstance(verdict, Queue):
            if flight.queued_at_s is None:
                flight.queued_at_s = t
                self._waiting_room.append(flight)
                self._push(verdict.deadline_s, _QUEUE_DEADLINE, flight)
            return False
        assert isinstance(verdict, Admit)
        if flight.queued_at_s is not None:
            flight.record.queue_wait_s = t - flight.queued_at_s
        self._route(flight, t)
        return True

    def _retry_waiting_room(self, t: float) -> None:
        """Re-ask admission for the waiting room in order, until one must still wait."""
        if self._in_room_retry:
            return  # a request finishing during this pass; the pass goes on anyway
        self._in_room_retry = True
        try:
            room = self._waiting_room
            while room:
                head = room.popleft()
                if not head.done and not self._admit(head, t):
                    room.appendleft(head)
                    break
        finally:
            self._in_room_retry = False

    def _on_queue_deadline(self, t: float, flight: Flight) -> None:
        if not flight.done and flight.decision is None:
            self._finish(flight, t, 429, "queue_timeout")

    def _route(self, flight: Flight, t: float) -> None:
        decision = self.decider.route(flight.features, self.proxy.snapshot(t))
        flight.decision = decision
        flight.record.predicted_ttft_ms = decision.predicted_ttft_ms
        if not decision.ranked:
            self._finish(flight, t, 503, "no_healthy_backend")
            return
        self._try_next(flight, t)

    def _try_next(self, flight: Flight, t: float) -> None:
        """Send to the next ranked backend, retrying before the first byte as the proxy does."""
        assert flight.decision is not None
        ranked = flight.decision.ranked
        retries = self.config.retries
        while flight.attempt < len(ranked) and flight.attempt <= retries.max_per_request:
            name = ranked[flight.attempt]
            flight.attempt += 1
            flight.record.attempts = flight.attempt
            self.decider.on_routed(flight.features, flight.decision, name)
            backend = self.backends[name]
            flight.backend_id = name
            if not backend.reachable:
                flight.last_error = _CONNECT
                continue
            faults = backend.faults
            if faults.error_rate and backend.error_rng.random() < faults.error_rate:
                flight.last_error = (faults.error_status, "simulated_fault")
                if faults.error_status in retries.on_status:
                    continue
                break
            self.proxy.on_sent(name, flight.features.prompt_tokens, 0.0)
            flight.sent = True
            timeout_s = self.config.timeouts.first_byte_ms / 1000.0
            self._push(t + timeout_s, _TIMEOUT, (flight, flight.attempt))
            if self.options.one_way_delay_s > 0:
                self._push(t + self.options.one_way_delay_s, _SEND, flight)
            else:
                self._on_send(t, flight)
            return
        status, code = flight.last_error or (503, "no_healthy_backend")
        self._finish(flight, t, status, code)

    def _on_send(self, t: float, flight: Flight) -> None:
        """The request reaches its backend: validated as the server would, then queued in the engine."""
        if flight.done:
            return
        name = flight.backend_id
        assert name is not None
        backend = self.backends[name]
        if not backend.reachable:
            self._retry_or_fail(flight, t, _CONNECT)
            return
        try:
            parsed = parse_body(
                flight.wr.endpoint,
                flight.wr.body,
                {headers.SIM_OUTPUT_TOKENS: str(flight.wr.true_output_tokens)},
                served_models=backend.models,
                max_model_len=backend.max_model_len,
                rng=backend.output_rng,
                output_spec=backend.engine.profile.output_length,
            )
        except SluiceError as err:
            self._finish(flight, t, err.status, err.code)
            return
        sim = SimRequest(
            flight.wr.request_id,
            parsed.prompt_tokens,
            parsed.prompt_hashes,
            parsed.output_tokens,
            finish_reason=parsed.finish_reason,
            listener=flight,
        )
        rate = backend.faults.drop_stream_rate
        if rate and backend.drop_rng.random() < rate:
            flight.drop_after = backend.drop_rng.randint(1, max(1, parsed.output_tokens - 1))
        flight.sim = sim
        backend.engine.add_request(sim, t)
        self._dirty.add(name)

    # --- engine events and outcomes --------------------------------------------------------------

    def on_engine_event(self, kind: int, flight: Flight, t: float) -> None:
        """A flight's engine listener reports here during a commit; handled after the commit."""
        self._events.append((kind, flight, t))

    def _drain_events(self) -> None:
        events, self._events = self._events, []
        delay = self.options.one_way_delay_s
        for kind, flight, t in events:
            if flight.done:
                continue
            if kind == Flight.FIRST_TOKEN:
                flight.first_byte = True
                flight.record.ttft_s = t + delay - flight.record.sent_s
                assert flight.backend_id is not None
                self.proxy.on_first_byte(flight.backend_id, flight.record.ttft_s * 1000.0)
            elif kind == Flight.DROPPED:
                self._abort_engine(flight, t)
                self._finish(flight, t + delay, *_MID_STREAM)
            else:
                self._finish(flight, t + delay, 200, None)

    def _abort_engine(self, flight: Flight, t: float) -> None:
        sim, name = flight.sim, flight.backend_id
        if sim is not None and name is not None and not sim.done:
            engine = self.backends[name].engine
            engine.abort(sim, max(t, engine.now_s))
            self._dirty.add(name)

    def _retry_or_fail(self, flight: Flight, t: float, error: tuple[int, str]) -> None:
        """The request failed at its backend: before the first byte it moves on, else it fails."""
        self._release(flight)
        if flight.first_byte:
            self._finish(flight, t, *_MID_STREAM)
            return
        flight.last_error = error
        flight.sim = None
        self._try_next(flight, t)

    def _on_timeout(self, t: float, payload: tuple[Flight, int]) -> None:
        flight, attempt = payload
        if flight.done or flight.first_byte or flight.attempt != attempt:
            return
        self._abort_engine(flight, t)
        self._finish(flight, t, 504, "upstream_timeout")

    def _release(self, flight: Flight) -> None:
        """Undo the proxy's in-flight accounting of the current attempt."""
        if flight.sent and flight.backend_id is not None:
            self.proxy.on_done(flight.backend_id, flight.features.prompt_tokens, 0.0, flight.first_byte, None)
        flight.sent = False

    def _finish(self, flight: Flight, t: float, status: int, code: str | None) -> None:
        tpot_ms = flight.close(t, status, code, self.options.one_way_delay_s)
        if flight.sent and flight.backend_id is not None:
            self.proxy.on_done(
                flight.backend_id, flight.features.prompt_tokens, 0.0, flight.first_byte, tpot_ms
            )
        freed, flight.sent = flight.sent, False
        record = flight.record
        self._records.append(record)
        self._open -= 1
        self._done_at[record.request_id] = t
        self.decider.observe(flight.outcome(t))
        for child in self._children.pop(record.request_id, ()):
            self._push(max(t, child.arrival_s, t + child.think_time_s), _START, child)
        if freed and self._waiting_room:
            self._retry_waiting_room(t)

    # --- polls, health, faults -------------------------------------------------------------------

    def _on_poll(self, t: float, payload: tuple[str, float]) -> None:
        name, interval = payload
        self._advance(name, t)
        self.proxy.on_metrics(name, self.backends[name].scrape(t))
        if self._busy():
            self._push(t + interval, _POLL, payload)

    def _on_health(self, t: float, name: str) -> None:
        self.proxy.on_health_check(name, self.backends[name].answers)
        if self._busy():
            self._push(t + self.config.health.interval_s, _HEALTH, name)

    def _on_fault(self, t: float, payload: tuple[str, FaultPatch]) -> None:
        name, patch = payload
        self._advance(name, t)
        lost = self.backends[name].apply(patch, t)
        self._dirty.add(name)
        for sim in lost:
            flight = sim.listener
            if isinstance(flight, Flight) and not flight.done:
                self._retry_or_fail(flight, t, _CONNECT)
