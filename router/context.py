"""Everything a request handler needs, built once per app (no module globals, no singletons).

The ``aiohttp.ClientSession`` is created in the app's ``cleanup_ctx`` (it
needs the running loop) and stored here before the first request.
Upstream URLs are parsed once per (backend, path): building a ``yarl.URL``
from a string costs microseconds per request otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from core.clock import Clock
from core.config import SluiceConfig
from core.protocols import Decider
from router.intake import RequestIds
from router.metrics import SluiceMetrics
from router.retry_budget import RetryBudget
from state.fleet import FleetState


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
    known_models: frozenset[str] = frozenset()
    connect_s: float = 0.0
    first_byte_s: float = 0.0
    idle_s: float = 0.0
    retry_statuses: frozenset[int] = frozenset()
    _urls: dict[tuple[str, str], URL] = field(default_factory=dict)
    _backend_urls: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cfg = self.config
        self.known_models = frozenset(cfg.models)
        self.connect_s = cfg.timeouts.connect_ms / 1e3
        self.first_byte_s = cfg.timeouts.first_byte_ms / 1e3
        self.idle_s = cfg.timeouts.idle_ms / 1e3
        self.retry_statuses = frozenset(cfg.retries.on_status)
        self._backend_urls = {b.name: b.url for b in cfg.backends}

    def upstream_url(self, backend_id: str, path: str) -> URL:
        key = (backend_id, path)
        url = self._urls.get(key)
        if url is None:
            url = self._urls[key] = URL(self._backend_urls[backend_id] + path)
        return url

    def client(self) -> aiohttp.ClientSession:
        if self.session is None:
            raise RuntimeError("the upstream ClientSession is created at app start-up")
        return self.session


def build_context(config: SluiceConfig, fleet: FleetState, decider: Decider, clock: Clock) -> ProxyContext:
    retries = config.retries
    return ProxyContext(
        config=config,
        fleet=fleet,
        decider=decider,
        clock=clock,
        metrics=SluiceMetrics(fleet),
        retry_budget=RetryBudget(
            retries.budget_ratio, retries.budget_window_s, retries.budget_min_retries, clock
        ),
    )
