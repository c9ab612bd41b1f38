"""Run a whole simulated fleet in real time in this process, and tell the world where it listens.

Every backend gets its own listener (``127.0.0.1``, port from the fleet file, 0 = ephemeral) and its
own engine; all share one event loop, which is cheaper than processes on a 2-core machine and keeps
the fleet deterministic for a seed. ``addresses()`` is the machine-readable list of bound URLs and
``sluice_config()`` a Sluice config pointing a proxy at them (``sluice sim --write-config``).

An optional fleet admin listener (``--admin-port``) reaches every backend even when one is crashed or
hung: ``GET /admin/backends`` and ``POST /admin/backends/<name>/faults`` with a fault patch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from core.errors import MethodNotAllowed, RouteNotFound
from loadgen.sim.fleet_config import Fleet, sluice_config
from loadgen.sim.http11 import HttpConnection, HttpRequest
from loadgen.sim.server import SimBackend, apply_fault_patch, read_fault_patch, respond_error


class SimFleet:
    def __init__(self, fleet: Fleet, output_lengths: Mapping[str, int] | None = None) -> None:
        self.fleet = fleet
        self.backends = [SimBackend(spec, fleet.config.host, output_lengths) for spec in fleet.backends]
        self._admin: asyncio.Server | None = None
        self._admin_conns: set[HttpConnection] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        self.admin_port: int | None = None

    def by_name(self, name: str) -> SimBackend | None:
        return next((b for b in self.backends if b.name == name), None)

    async def start(self, admin_port: int | None = None) -> None:
        for backend in self.backends:
            await backend.start()
        if admin_port is not None:
            loop = asyncio.get_running_loop()
            self._admin = await loop.create_server(self._admin_connection, self.fleet.config.host, admin_port)
            self.admin_port = self._admin.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            for conn in list(self._admin_conns):
                conn.abort()
            await self._admin.wait_closed()
        for backend in self.backends:
            await backend.stop()

    def addresses(self) -> list[dict[str, Any]]:
        return [
            {
                "backend": b.name,
                "url": b.url,
                "port": b.port,
                "profile": b.profile.name,
                "gpu": b.profile.gpu,
                "models": list(b.models),
            }
            for b in self.backends
        ]

    def sluice_config(self, proxy_port: int = 8080) -> dict[str, Any]:
        """A minimal Sluice config (``core.config``) routing to every backend of this fleet."""
        return sluice_config(self.fleet, {b.name: b.url for b in self.backends}, proxy_port=proxy_port)

    # --- fleet admin -----------------------------------------------------------------------------

    def _admin_connection(self) -> HttpConnection:
        conn = HttpConnection(self._admin_request, self._admin_conns.discard, max_body_bytes=64 * 1024)
        self._admin_conns.add(conn)
        return conn

    def _admin_request(self, request: HttpRequest, conn: HttpConnection) -> None:
        parts = request.path.strip("/").split("/")
        if request.path == "/admin/backends":
            if request.method != "GET":
                respond_error(conn, MethodNotAllowed("use GET"))
                return
            pairs = zip(self.addresses(), self.backends, strict=True)
            listing = [{**a, "faults": b.faults.model_dump()} for a, b in pairs]
            conn.respond(200, orjson.dumps(listing))
            return
        if len(parts) != 4 or parts[:2] != ["admin", "backends"] or parts[3] != "faults":
            respond_error(conn, RouteNotFound(f"Route {request.path} not found"))
            return
        backend = self.by_name(parts[2])
        if backend is None:
            respond_error(conn, RouteNotFound(f"no backend named {parts[2]!r}"))
            return
        if request.method != "POST":
            respond_error(conn, MethodNotAllowed("use POST"))
            return
        patch = read_fault_patch(conn, request)
        if patch is not None:
            apply_fault_patch(conn, backend, patch, self._tasks)
