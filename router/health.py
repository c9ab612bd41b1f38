"""Active health checks: GET each backend's health path every ``health.interval_s``.

A check passes on any 2xx answer within ``health.timeout_s``; anything else
(refused, timeout, 503 while a model loads) fails. Results feed
``FleetState.record_check``, whose ``HealthMachine`` needs
``healthy_after``/``unhealthy_after`` consecutive results to flip a backend.
The path is the backend's ``health_path`` or ``health.path``.

After a passed check the backend's own ``/v1/models`` is read when it has
just become ready or its last answer is older than
``router.backend_models.REFRESH_S`` (``GET /v1/models`` is answered from that,
never by a request to a backend).

The first round starts at once when the app starts; ``first_round`` is set
when it has finished (models included), so a caller (a test, a start-up
script) can wait for the fleet's first verdict instead of sleeping.
Transitions are logged.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from yarl import URL

from core.config import SluiceConfig
from router.backend_models import BackendModels
from state.fleet import FleetState

log = logging.getLogger("sluice.health")


class HealthChecker:
    def __init__(
        self,
        config: SluiceConfig,
        fleet: FleetState,
        session: aiohttp.ClientSession,
        models: BackendModels | None = None,
    ) -> None:
        self._fleet = fleet
        self._session = session
        self._models = models
        self._interval_s = config.health.interval_s
        self._timeout_s = config.health.timeout_s
        self._timeout = aiohttp.ClientTimeout(total=config.health.timeout_s)
        self._targets = [
            (b.name, URL(b.url + (b.health_path or config.health.path))) for b in config.backends
        ]
        self._base_urls = {b.name: b.url for b in config.backends}
        self.first_round = asyncio.Event()

    async def run(self) -> None:
        while True:
            await self.check_all()
            self.first_round.set()
            await asyncio.sleep(self._interval_s)

    async def check_all(self) -> None:
        await asyncio.gather(*(self._check(name, url) for name, url in self._targets))

    async def _check(self, backend_id: str, url: URL) -> None:
        passed = False
        detail = ""
        try:
            async with self._session.get(url, timeout=self._timeout) as resp:
                passed = 200 <= resp.status < 300
                detail = f"HTTP {resp.status}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
        changed = self._fleet.record_check(backend_id, passed)
        if changed:
            state = self._fleet.backend(backend_id).health.checked_state.value
            level = logging.INFO if passed else logging.WARNING
            log.log(level, "backend %s is now %s (health check: %s)", backend_id, state, detail)
        models = self._models
        now_s = asyncio.get_running_loop().time()
        if passed and models is not None and models.due(backend_id, now_s, changed):
            base_url = self._base_urls[backend_id]
            await models.fetch(self._session, backend_id, base_url, self._timeout_s, now_s)
