"""The virtual-time fleet: many simulated engines and Sluice's decision code under one simulated clock.

A discrete-event loop replays a stream of ``loadgen.workload.WorkloadRequest`` against the engines of
a fleet file, with the proxy's logic in the loop exactly as the real proxy calls it
(``core.protocols``): for each request ``build_features`` -> ``admit`` -> (``enqueue``, woken by
``pop_dispatchable`` or leaving at its deadline) -> ``route`` -> ``on_routed`` (again on every retry)
-> the engine -> ``observe(Outcome)`` in every path. The snapshots decisions see are built by the
proxy's own ``state.fleet.FleetState`` on a ``ManualClock``: each attempt holds an ``InFlightGuard``
(in-flight counts, awaiting-first-byte, prompt tokens, the decision's predicted decode tokens, the
circuit-breaker verdict), EWMA TTFT/TPOT are folded in at the end of every successful stream, engine
metrics arrive only through polls (``metrics_poll.interval_s``, staggered per backend; stale after
``stale_after_s``) and health through active checks. The simulator's ground truth
(``x-sim-output-tokens``) reaches the engine only; benchmark oracles read it through
``true_output_tokens`` and ``engine``, never Sluice's own decisions.

Events: arrivals (a dependent turn waits for its parent's end + think time), engine wake-ups at the
end of each engine plan (a single step, or a run of identical decode steps: ``SimEngine``
macro-steps, so an hour of traffic costs per batch change, not per step), metrics polls, health
checks (every backend at once, as ``router.health`` checks them), first-byte timeouts, waiting-room
deadlines and pump ticks, and scheduled faults. Engines advance lazily; a wake-up is computed only
once every event at the current instant is handled, so requests arriving together enter the same
step, as in real time.

The proxy's request path (admission, waiting room, retries, timeouts, the end of a request) is
``loadgen.sim.virtual_proxy``; this module is the event loop and the backend side. The fleet starts
ready: before the first arrival every backend has had ``health.healthy_after`` checks, the state a
load test reaches by waiting for ``/ready``.

Deterministic for a seed: every RNG is seeded and ties break in insertion order.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from core import headers
from core.clock import ManualClock
from core.config import LoadedConfig
from core.errors import SluiceError
from core.features import build_features, client_retry_count
from core.protocols import Decider
from decision.engine import DecisionEngine
from loadgen.records import BackendSample
from loadgen.sim.engine import SimEngine
from loadgen.sim.faults import FaultPatch
from loadgen.sim.fleet_config import Fleet
from loadgen.sim.flight import Flight
from loadgen.sim.openai_api import parse_body
from loadgen.sim.records import RequestRecord
from loadgen.sim.request import SimRequest
from loadgen.sim.virtual_backend import VirtualBackend
from loadgen.sim.virtual_proxy import CONNECT, Handler, VirtualProxy, verdict
from loadgen.workload import WorkloadRequest
from state.fleet import FleetState


@dataclass(frozen=True, slots=True)
class VirtualOptions:
    seed: int = 0
    one_way_delay_s: float = 0.0  # proxy <-> backend network latency, each way
    poll_interval_s: float | None = None  # default: the config's metrics_poll.interval_s
    record_samples: bool = False  # keep every poll's KV use / running / waiting in ``samples``


DeciderFactory = Callable[["VirtualFleet"], Decider]


class VirtualFleet:
    def __init__(
        self,
        fleet: Fleet,
        loaded: LoadedConfig,
        *,
        decider: Decider | None = None,
        decider_factory: DeciderFactory | None = None,
        options: VirtualOptions | None = None,
    ) -> None:
        """``decider_factory`` builds the decider once the fleet exists (it may need ``clock`` or the
        ground truth); default: ``DecisionEngine.from_config`` on the fleet's clock, as ``sluice serve``."""
        self.options = options or VirtualOptions()
        self.config = loaded.config
        self.clock = ManualClock(0.0)
        specs = {s.name: s for s in fleet.backends}
        names = [b.name for b in self.config.backends]
        if sorted(names) != sorted(specs):
            raise ValueError(f"config backends {sorted(names)} differ from the fleet's {sorted(specs)}")
        self.backends = {n: VirtualBackend(specs[n]) for n in names}
        self._specs = specs
        self.state = FleetState(self.config, self.clock)
        if decider_factory is not None:
            decider = decider_factory(self)
        elif decider is None:
            decider = DecisionEngine.from_config(loaded, self.clock, random.Random(self.options.seed))
        self.decider: Decider = decider
        self.proxy = VirtualProxy(self.config, self.state, decider, self, self.options.one_way_delay_s)
        self.samples: list[BackendSample] = []
        self._heap: list[tuple[float, int, Handler, Any]] = []
        self._seq = 0
        self._dirty: set[str] = set()
        self._wake_at: dict[str, float | None] = dict.fromkeys(names)
        self._seen: set[str] = set()
        self._done_at: dict[str, float] = {}
        self._flights: dict[str, Flight] = {}  # started and not finished
        self._children: dict[str, list[WorkloadRequest]] = {}
        self._events: list[tuple[int, Flight, float]] = []
        self._records: list[RequestRecord] = []
        self._workload: Iterator[WorkloadRequest] = iter(())
        self._open = 0  # arrived or scheduled requests without an outcome yet
        self._arrivals_left = True

    # --- public ----------------------------------------------------------------------------------

    def engine(self, backend_id: str) -> SimEngine:
        """The exact engine behind a backend (ground truth for an oracle; Sluice never sees it)."""
        return self.backends[backend_id].engine

    def exact_cached_prefix_tokens(self, prefix_hashes: Sequence[int]) -> dict[str, int]:
        """Per backend, the tokens of this prefix (``core.tokens`` hashes) cached right now."""
        return {n: b.engine.cached_prefix_tokens(prefix_hashes) for n, b in self.backends.items()}

    def true_output_tokens(self, request_id: str) -> int | None:
        """The workload's ground-truth output length of a request in progress (oracles only)."""
        flight = self._flights.get(request_id)
        return None if flight is None else flight.wr.true_output_tokens

    def run(self, workload: Iterable[WorkloadRequest], until_s: float | None = None) -> list[RequestRecord]:
        """Replay ``workload`` (sorted by arrival) to its end or ``until_s``; records in finish order."""
        self._workload = iter(workload)
        self._start_fleet()
        heap = self._heap
        proxy = self.proxy
        while heap:
            t, _, handler, payload = heapq.heappop(heap)
            if until_s is not None and t > until_s:
                break
            self.clock.set(t)
            handler(t, payload)
            if self._events:
                self._drain_events()
            if proxy.pump_due:
                proxy.pump(t)
            if self._dirty and (not heap or heap[0][0] > t):
                self._schedule_wakes()
        return self._records

    # --- the event loop --------------------------------------------------------------------------

    def schedule(self, t: float, handler: Handler, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, handler, payload))

    def _start_fleet(self) -> None:
        """Initial faults, the health checks a load test waits for, then the periodic events."""
        poll_s = self.options.poll_interval_s or self.config.metrics_poll.interval_s
        n = len(self.backends)
        for i, (name, backend) in enumerate(self.backends.items()):
            spec = self._specs[name]
            backend.apply(FaultPatch(**spec.faults.model_dump()), 0.0)
            for _ in range(self.config.health.healthy_after):
                self.state.record_check(name, backend.answers)
            for event in spec.fault_schedule:
                self.schedule(event.at_s, self._on_fault, (name, event.set))
            self.schedule(poll_s * i / n, self._on_poll, (name, poll_s))
        self.schedule(self.config.health.interval_s, self._on_health, None)
        self._pull_arrival()

    def _busy(self) -> bool:
        return self._arrivals_left or self._open > 0

    def _schedule_wakes(self) -> None:
        for name in sorted(self._dirty):
            end = self.backends[name].engine.plan_end_s()
            if end is not None and end != self._wake_at[name]:
                self.schedule(end, self._on_wake, (name, end))
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

    # --- arrivals --------------------------------------------------------------------------------

    def _pull_arrival(self) -> None:
        nxt = next(self._workload, None)
        if nxt is None:
            self._arrivals_left = False
            return
        self._open += 1
        self.schedule(nxt.arrival_s, self._on_arrival, nxt)

    def _on_arrival(self, t: float, wr: WorkloadRequest) -> None:
        self._pull_arrival()
        parent = wr.after_request_id
        self._seen.add(wr.request_id)
        if parent is not None and parent in self._seen and parent not in self._done_at:
            self._children.setdefault(parent, []).append(wr)
        elif parent is not None and parent in self._done_at:
            self.schedule(max(t, self._done_at[parent] + wr.think_time_s), self._on_start, wr)
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
            client_retry_count=client_retry_count(hdrs.get(headers.CLIENT_RETRY_COUNT)),
        )
        record = RequestRecord(
            wr.request_id, wr.arrival_s, t, wr.tenant, wr.priority, route.name, wr.session_id
        )
        record.prompt_tokens = features.prompt_tokens
        record.true_output_tokens = wr.true_output_tokens
        record.source = wr.source
        record.trace_prompt_tokens = wr.trace_prompt_tokens
        flight = Flight(self, wr, features, record)
        self._flights[wr.request_id] = flight
        self.proxy.admit(flight, t)

    # --- the backend side (``virtual_proxy.BackendSide``) ----------------------------------------

    def refusal(self, flight: Flight, backend_id: str) -> tuple[int, str] | None:
        backend = self.backends[backend_id]
        if not backend.reachable:
            return CONNECT
        faults = backend.faults
        if faults.error_rate and backend.error_rng.random() < faults.error_rate:
            return (faults.error_status, "simulated_fault")
        return None

    def deliver(self, flight: Flight, t: float) -> None:
        if self.options.one_way_delay_s > 0:
            self.schedule(t + self.options.one_way_delay_s, self._on_send, flight)
        else:
            self._on_send(t, flight)

    def _on_send(self, t: float, flight: Flight) -> None:
        """The request reaches its backend: validated as the server would, then queued in the engine."""
        if flight.done:
            return
        name, guard = flight.backend_id, flight.guard
        assert name is not None and guard is not None
        backend = self.backends[name]
        if not backend.reachable:
            self.proxy.connection_lost(flight, t)
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
            verdict(guard, err.status)
            self.proxy.finish(flight, t, err.status, err.code)
            return
        guard.succeeded()  # the backend accepted the stream: its response headers are on their way
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

    def abort(self, flight: Flight, t: float) -> None:
        sim, name = flight.sim, flight.backend_id
        if sim is not None and name is not None and not sim.done:
            engine = self.backends[name].engine
            engine.abort(sim, max(t, engine.now_s))
            self._dirty.add(name)

    def ended(self, flight: Flight, t: float) -> None:
        record = flight.record
        self._records.append(record)
        self._open -= 1
        self._flights.pop(record.request_id, None)
        self._done_at[record.request_id] = t
        for child in self._children.pop(record.request_id, ()):
            self.schedule(max(t, child.arrival_s, t + child.think_time_s), self._on_start, child)

    # --- engine events ---------------------------------------------------------------------------

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
                flight.record.ttft_s = t + delay - flight.record.sent_s
                self.proxy.first_byte(flight)
            elif kind == Flight.DROPPED:
                self.abort(flight, t)
                self.proxy.stream_broken(flight, t + delay)
            else:
                self.proxy.finish(flight, t + delay, 200, None)

    # --- polls, health, faults -------------------------------------------------------------------

    def _on_poll(self, t: float, payload: tuple[str, float]) -> None:
        name, interval = payload
        self._advance(name, t)
        metrics = self.backends[name].scrape(t)
        self.state.update_engine_metrics(name, metrics)
        if self.options.record_samples and metrics is not None:
            self.samples.append(
                BackendSample(t, name, metrics.kv_usage_frac, metrics.running, metrics.waiting)
            )
        if self._busy():
            self.schedule(t + interval, self._on_poll, payload)

    def _on_health(self, t: float, _: None) -> None:
        for name, backend in self.backends.items():
            self.state.record_check(name, backend.answers)
        if self._busy():
            self.schedule(t + self.config.health.interval_s, self._on_health, None)

    def _on_fault(self, t: float, payload: tuple[str, FaultPatch]) -> None:
        name, patch = payload
        self._advance(name, t)
        lost = self.backends[name].apply(patch, t)
        self._dirty.add(name)
        for sim in lost:
            flight = sim.listener
            if isinstance(flight, Flight) and not flight.done:
                self.proxy.connection_lost(flight, t)
