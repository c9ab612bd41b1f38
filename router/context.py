"""Everything a request handler needs, built once per app (no module globals, no singletons).

The upstream connection pool (the request path), the attempts' shared timeout
timer and the ``aiohttp.ClientSession`` (health checks and other background
polling) are created in the app's ``cleanup_ctx`` (they need the running loop)
and stored here before the first request. Backend URLs are parsed once into
``Origin``s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from core.clock import Clock
from core.config import SluiceConfig
from core.protocols import AdmissionStats, Decider
from router.backend_models import BackendModels
from router.intake import RequestIds
from router.metrics import SluiceMetrics
from router.retry_budget import RetryBudget
from router.upstream import Origin, UpstreamPool
from router.waiting_room import AsyncWaitingRoom
from router.watchdog import WatchdogTimer
from state.fleet import FleetState


def origin_of(url: str) -> Origin:
    parsed = URL(url)
    if parsed.host is None or parsed.port is None:
        raise ValueError(f"backend URL {url!r} has no host")
    return Origin(parsed.host, parsed.port, parsed.scheme == "https", parsed.path.rstrip("/"))


@dataclass(slots=True)
class ProxyContext:
    config: SluiceConfig
    fleet: FleetState
    decider: Decider
    clock: Clock
    metrics: SluiceMetrics
    retry_budget: RetryBudget
    request_ids: RequestIds = field(default_factory=RequestIds)
    session: aiohttp.ClientSession | None = None
    pool: UpstreamPool | None = None
    watchdogs: WatchdogTimer | None = None  # the attempts' one timeout timer, made with the pool
    known_models: frozenset[str] = frozenset()
    connect_s: float = 0.0
    first_byte_s: float = 0.0
    idle_s: float = 0.0
    retry_statuses: frozenset[int] = frozenset()
    origins: dict[str, Origin] = field(default_factory=dict)
    waiting_room: AsyncWaitingRoom | None = None
    backend_models: BackendModels = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.config
        self.backend_models = BackendModels(cfg)
        self.known_models = frozenset(cfg.models)
        self.connect_s = cfg.timeouts.connect_ms / 1e3
        self.first_byte_s = cfg.timeouts.first_byte_ms / 1e3
        self.idle_s = cfg.timeouts.idle_ms / 1e3
        self.retry_statuses = frozenset(cfg.retries.on_status)
        self.origins = {b.name: origin_of(b.url) for b in cfg.backends}
        self.waiting_room = AsyncWaitingRoom(self.decider, self.fleet.snapshot)
        self.fleet.on_capacity_change(self.waiting_room.schedule_pump)

    def room(self) -> AsyncWaitingRoom:
        if self.waiting_room is None:
            raise RuntimeError("the waiting room is built with the context")
        return self.waiting_room

    def client(self) -> aiohttp.ClientSession:
        if self.session is None:
            raise RuntimeError("the ClientSession is created at app start-up")
        return self.session

    def upstream(self) -> UpstreamPool:
        if self.pool is None:
            raise RuntimeError("the upstream pool is created at app start-up")
        return self.pool


def build_context(config: SluiceConfig, fleet: FleetState, decider: Decider, clock: Clock) -> ProxyContext:
    retries = config.retries
    return ProxyContext(
        config=config,
        fleet=fleet,
        decider=decider,
        clock=clock,
        metrics=SluiceMetrics(fleet, decider if isinstance(decider, AdmissionStats) else None),
        retry_budget=RetryBudget(
            retries.budget_ratio, retries.budget_window_s, retries.budget_min_retries, clock
        ),
    )
