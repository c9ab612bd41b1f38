"""One simulated vLLM server in real time: an HTTP listener in front of a ``SimEngine``.

The engine's timeline is the event loop's clock (``loop.time()``). A single timer per backend fires
at the end of the step in flight; it commits every step that has ended (``advance_until(now)``),
whose listeners write the tokens, and re-arms for the next step end (or the next coalescing flush).
If the loop is late, the engine still runs at the GPU's pace: tokens carry the time they were
produced and are delivered late, and the lag is recorded (``lag_max_s``, ``lag_sum_s``), which is
how ``bench/sim_capacity.py`` finds where the simulator itself becomes the bottleneck.

Endpoints: ``POST /v1/chat/completions`` and ``/v1/completions`` (streaming or not), ``GET /v1/models``,
``/health`` (200, empty body, as vLLM), ``/metrics`` (vLLM names, ``loadgen.sim.metrics``),
``/get_load`` (``{"load": running + waiting}``, what vllm-router's ``power_of_two`` reads),
``/version``, and the optional probes of sglang-router (``/model_info``, ``/server_info`` and their
``/get_*`` aliases); ``GET``/``POST /admin/faults`` (``loadgen.sim.faults``); any other path 404 and a known
path with the wrong method 405, in the OpenAI error format of ``core.errors``.

``output_lengths`` (``sluice sim --output-lengths FILE``) maps ``x-request-id`` to a true output
length, used only when a request arrives without ``x-sim-output-tokens``: sglang-router forwards
``X-Request-ID`` but drops every custom header, so this is how a peer-router comparison keeps the
trace's output lengths behind it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Mapping

import orjson
from pydantic import ValidationError

from core.errors import MethodNotAllowed, RouteNotFound, SluiceError, error_body
from core.headers import REQUEST_ID, SIM_OUTPUT_TOKENS
from core.types import Endpoint
from loadgen.sim.engine import SimEngine
from loadgen.sim.faults import FaultPatch, FaultSpec
from loadgen.sim.fleet_config import BackendSpec
from loadgen.sim.http11 import HttpConnection, HttpRequest
from loadgen.sim.metrics import BackendMetrics, DriverStats, render
from loadgen.sim.openai_api import decode_body, parse_request
from loadgen.sim.request import SimRequest
from loadgen.sim.responses import StreamEncoder, models_body
from loadgen.sim.streams import StreamResponder, UnaryResponder

_COMPLETIONS = {"/v1/chat/completions": Endpoint.CHAT, "/v1/completions": Endpoint.COMPLETIONS}
_GETS = (
    "/health",
    "/v1/models",
    "/metrics",
    "/get_load",
    "/version",
    "/model_info",
    "/get_model_info",
    "/server_info",
    "/get_server_info",
)
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
VERSION = "0.8.4+sluice-sim"
_EARLY_S = 0.002


class SimBackend:
    def __init__(
        self, spec: BackendSpec, host: str = "127.0.0.1", output_lengths: Mapping[str, int] | None = None
    ) -> None:
        self.spec = spec
        self.output_lengths = output_lengths or {}
        self.name = spec.name
        self.host = host
        self.port = spec.port
        self.profile = spec.profile
        self.models = spec.models
        self.engine = SimEngine(spec.profile)
        self.metrics = BackendMetrics(spec.profile.scheduler.max_model_len)
        self.faults = FaultSpec()
        self.coalesce_s = spec.stream_coalesce_ms / 1000.0
        self._rng_output = random.Random(spec.seed)
        self._rng_faults = random.Random(spec.seed + 1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[HttpConnection] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._flush_at: float | None = None
        self._dirty: list[StreamResponder] = []
        self._parked: list[tuple[HttpRequest, HttpConnection]] = []
        self._tasks: set[asyncio.Future[None]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._ids = itertools.count()
        self._created_s = int(time.time())
        self.chunks_total = 0
        self.ticks = 0
        self.lag_sum_s = 0.0
        self.lag_max_s = 0.0

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._listen()
        t0 = self._loop.time()
        for event in self.spec.fault_schedule:
            self._timers.append(self._loop.call_at(t0 + event.at_s, self._schedule_patch, event.set))
        await self.set_faults(FaultPatch(**self.spec.faults.model_dump()))

    async def _listen(self) -> None:
        assert self._loop is not None
        self._server = await self._loop.create_server(
            self._new_connection, self.host, self.port, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def _new_connection(self) -> HttpConnection:
        conn = HttpConnection(self._handle, self._conns.discard)
        self._conns.add(conn)
        return conn

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for handle in self._timers:
            handle.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._conns):
            conn.abort()
        if server is not None:
            await server.wait_closed()

    # --- faults ----------------------------------------------------------------------------------

    def _schedule_patch(self, patch: FaultPatch) -> None:
        async def apply() -> None:
            await self.set_faults(patch)

        task = asyncio.ensure_future(apply())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def set_faults(self, patch: FaultPatch) -> FaultSpec:
        old, new = self.faults, self.faults.apply(patch)
        self.faults = new
        now = self._now()
        if new.slowdown != old.slowdown:
            self.engine.set_slowdown(new.slowdown, now)
        if new.crashed and not old.crashed:
            await self._crash(now)
        elif old.crashed and not new.crashed and not new.refuse_connections:
            await self._listen()
        if new.refuse_connections != old.refuse_connections and not new.crashed:
            if new.refuse_connections:
                await self._close_listener()
            elif self._server is None:
                await self._listen()
        if new.hang != old.hang:
            self.engine.set_paused(new.hang, now)
            if not new.hang:
                parked, self._parked = self._parked, []
                for request, conn in parked:
                    if conn.writable:
                        self._handle(request, conn)
        self._reschedule()
        return new

    async def _crash(self, now: float) -> None:
        await self._close_listener()
        self.engine.drop_all(now)
        self._parked.clear()
        self._dirty.clear()
        for conn in list(self._conns):
            conn.abort()

    def drop_connection(self, request: SimRequest, conn: HttpConnection) -> None:
        """Fault: cut a response mid-way; the engine aborts the request when the loss is noticed."""
        conn.abort()

    # --- the engine driver -----------------------------------------------------------------------

    def _now(self) -> float:
        # never behind the engine: a tick may commit a step up to _EARLY_S before the loop clock
        assert self._loop is not None
        now = self._loop.time()
        return now if now >= self.engine.now_s else self.engine.now_s

    def _reschedule(self) -> None:
        if self._loop is None:
            return
        due = self.engine.next_step_end_s()
        if self._flush_at is not None and (due is None or self._flush_at < due):
            due = self._flush_at
        if due is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None:
            if self._timer_at == due:
                return
            self._timer.cancel()
        self._timer_at = due
        self._timer = self._loop.call_at(due, self._tick)

    def _tick(self) -> None:
        self._timer = None
        assert self._loop is not None
        loop_now = self._loop.time()
        lag = loop_now - self._timer_at
        # libuv rounds timers to the millisecond and may fire slightly early: commit the step that
        # is due instead of arming the same timer again
        now = self._timer_at if 0 < -lag <= _EARLY_S else max(loop_now, self.engine.now_s)
        self.ticks += 1
        self.lag_sum_s += lag
        if lag > self.lag_max_s:
            self.lag_max_s = lag
        self.engine.advance_until(now)
        if self._flush_at is not None and now >= self._flush_at:
            self._flush_at = None
            dirty, self._dirty = self._dirty, []
            for stream in dirty:
                stream.flush()
        self._reschedule()

    def mark_dirty(self, stream: StreamResponder) -> None:
        self._dirty.append(stream)
        if self._flush_at is None:
            self._flush_at = self._now() + self.coalesce_s

    # --- HTTP ------------------------------------------------------------------------------------

    def _handle(self, request: HttpRequest, conn: HttpConnection) -> None:
        path = request.path
        if path.startswith("/admin/"):
            self._admin(request, conn)
            return
        if self.faults.hang:
            self._parked.append((request, conn))
            return
        endpoint = _COMPLETIONS.get(path)
        if endpoint is not None:
            if request.method != "POST":
                respond_error(conn, MethodNotAllowed(f"Method {request.method} not allowed for {path}"))
            else:
                self._completion(request, conn, endpoint)
        elif path in _GETS:
            if request.method != "GET":
                respond_error(conn, MethodNotAllowed(f"Method {request.method} not allowed for {path}"))
            else:
                self._get(path, conn)
        else:
            respond_error(conn, RouteNotFound(f"Route {path} not found"))

    def _get(self, path: str, conn: HttpConnection) -> None:
        if path == "/health":
            conn.respond(200, b"", content_type="text/plain")
        elif path == "/v1/models":
            max_len = self.profile.scheduler.max_model_len
            conn.respond(200, models_body(self.models, max_len, self._created_s))
        elif path == "/metrics":
            conn.respond(200, self.metrics_text(), content_type=_METRICS_TYPE)
            self._reschedule()
        elif path == "/get_load":
            conn.respond(200, orjson.dumps({"load": self.engine.num_running + self.engine.num_waiting}))
        elif path in ("/model_info", "/get_model_info"):
            info = {"model_path": self.models[0], "tokenizer_path": None, "is_generation": True}
            conn.respond(200, orjson.dumps(info))
        elif path in ("/server_info", "/get_server_info"):
            server = {
                "dp_size": 1,
                "tp_size": self.profile.tensor_parallel,
                "max_total_num_tokens": self.profile.kv_capacity_tokens,
                "max_running_requests": self.profile.scheduler.max_num_seqs,
                "context_length": self.profile.scheduler.max_model_len,
            }
            conn.respond(200, orjson.dumps(server))
        else:
            conn.respond(200, orjson.dumps({"version": VERSION}))

    def metrics_text(self) -> bytes:
        self.engine.advance_until(self._now())
        info = {
            "block_size": "16",
            "num_gpu_blocks": str(self.profile.num_kv_blocks),
            "enable_prefix_caching": "True",
            "gpu_memory_utilization": str(self.profile.kv_cache.gpu_memory_utilization),
        }
        driver = DriverStats(self.ticks, self.lag_sum_s, self.lag_max_s, self.chunks_total)
        return render(self.models[0], self.engine.stats(), self.metrics, info, driver)

    def _completion(self, request: HttpRequest, conn: HttpConnection, endpoint: Endpoint) -> None:
        faults = self.faults
        if faults.error_rate and self._rng_faults.random() < faults.error_rate:
            body = error_body("simulated fault", "server_error", "simulated_fault")
            conn.respond(faults.error_status, body)
            return
        try:
            parsed = parse_request(
                endpoint,
                request.body,
                self._with_ground_truth(request.headers),
                served_models=self.models,
                max_model_len=self.profile.scheduler.max_model_len,
                rng=self._rng_output,
                output_spec=self.profile.output_length,
            )
        except SluiceError as err:
            respond_error(conn, err)
            return
        prefix = "chatcmpl" if endpoint is Endpoint.CHAT else "cmpl"
        request_id = request.headers.get(REQUEST_ID) or f"{self.name}-{next(self._ids)}"
        response_id = f"{prefix}-{request_id}"
        drop_after = None
        if faults.drop_stream_rate and self._rng_faults.random() < faults.drop_stream_rate:
            drop_after = self._rng_faults.randint(1, max(1, parsed.output_tokens - 1))
        sim = SimRequest(
            request_id,
            parsed.prompt_tokens,
            parsed.prompt_hashes,
            parsed.output_tokens,
            finish_reason=parsed.finish_reason,
        )
        if parsed.stream:
            enc = StreamEncoder(endpoint, response_id, parsed.model, self._created_s)
            coalesce = self.coalesce_s > 0
            sim.listener = StreamResponder(self, conn, parsed, enc, coalesce=coalesce, drop_after=drop_after)
            conn.start_stream(headers=[("x-request-id", request_id)])
        else:
            sim.listener = UnaryResponder(
                self, conn, parsed, response_id, self._created_s, drop_after=drop_after
            )
        conn.on_disconnect = lambda: self._client_gone(sim)
        self.engine.add_request(sim, self._now())
        self._reschedule()

    def _with_ground_truth(self, headers: dict[str, str]) -> Mapping[str, str]:
        """Headers plus the output length looked up by ``x-request-id`` when a router dropped the header."""
        if not self.output_lengths or SIM_OUTPUT_TOKENS in headers:
            return headers
        tokens = self.output_lengths.get(headers.get(REQUEST_ID, ""))
        return headers if tokens is None else {**headers, SIM_OUTPUT_TOKENS: str(tokens)}

    def _client_gone(self, sim: SimRequest) -> None:
        if sim.done:
            return
        self.engine.abort(sim, self._now())
        self.metrics.finished_by_reason["abort"] += 1
        self._reschedule()

    def _admin(self, request: HttpRequest, conn: HttpConnection) -> None:
        if request.path != "/admin/faults":
            respond_error(conn, RouteNotFound(f"Route {request.path} not found"))
            return
        if request.method == "GET":
            conn.respond(200, orjson.dumps(self.faults.model_dump()))
            return
        if request.method != "POST":
            respond_error(conn, MethodNotAllowed(f"Method {request.method} not allowed for {request.path}"))
            return
        patch = read_fault_patch(conn, request)
        if patch is not None:
            apply_fault_patch(conn, self, patch, self._tasks)


def respond_error(conn: HttpConnection, err: SluiceError) -> None:
    """Answer ``conn`` with ``err`` in the OpenAI error format (status, body, headers from the table)."""
    conn.respond(err.status, err.body(), headers=list(err.headers().items()))


def read_fault_patch(conn: HttpConnection, request: HttpRequest) -> FaultPatch | None:
    """The body of a ``POST .../faults`` as a patch, or ``None`` once ``conn`` is answered with a 400.

    Shared by a backend's own admin endpoint and the fleet's, so both reject bad patches alike.
    """
    try:
        return FaultPatch.model_validate(decode_body(request.body))
    except SluiceError as err:
        respond_error(conn, err)
    except ValidationError as exc:
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        conn.respond(400, error_body(message, "invalid_request_error", "invalid_value"))
    return None


def apply_fault_patch(
    conn: HttpConnection, backend: SimBackend, patch: FaultPatch, tasks: set[asyncio.Future[None]]
) -> None:
    """Apply ``patch`` to ``backend`` and answer with the resulting spec.

    ``set_faults`` may wait (it can close connections), so it runs as a task kept in ``tasks``
    until done: the owner cancels what is left when it stops, and nothing is garbage-collected
    while still running.
    """

    async def apply() -> None:
        spec = await backend.set_faults(patch)
        conn.respond(200, orjson.dumps(spec.model_dump()))

    task = asyncio.ensure_future(apply())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
