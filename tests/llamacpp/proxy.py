"""Sluice in front of the two real llama.cpp servers, on 127.0.0.1 port 0, for one test.

Backends ``a`` and ``b`` (in that order) with ``metrics_format: llamacpp``;
engine metrics are polled every ``POLL_S`` so queueing shows up quickly;
active health checks run once at start-up (the servers stay up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from core.config import load_config_text
from loadgen.llamacpp.harness import LlamaCppServer
from router.app import CONTEXT, ENGINE_METRICS, HEALTH, build_app, start_server
from router.context import ProxyContext
from state.engine_metrics import EngineMetricsCollector
from tests.llamacpp.helpers import MODEL_ALIAS

BACKEND_NAMES = ("a", "b")
POLL_S = 0.1
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class SluiceProxy:
    url: str
    app: web.Application
    runner: web.AppRunner
    servers: dict[str, LlamaCppServer]

    @property
    def ctx(self) -> ProxyContext:
        return self.app[CONTEXT]

    @property
    def collector(self) -> EngineMetricsCollector:
        return self.app[ENGINE_METRICS]

    async def metrics(self, session: aiohttp.ClientSession) -> Samples:
        """Sluice's own /metrics, parsed with prometheus_client: {(name, sorted labels): value}."""
        async with session.get(self.url + "/metrics") as response:
            text = await response.text()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def config_text(servers: Sequence[LlamaCppServer], policy: str) -> str:
    lines = ["backends:"]
    for name, server in zip(BACKEND_NAMES, servers, strict=True):
        lines.append(
            f"  - {{name: {name}, url: '{server.url}', models: [{MODEL_ALIAS}], metrics_format: llamacpp}}"
        )
    lines += [
        "health: {interval_s: 3600, timeout_s: 5, healthy_after: 1, unhealthy_after: 1}",
        f"metrics_poll: {{interval_s: {POLL_S}, timeout_s: 2, stale_after_s: 5}}",
        "routes:",
        f"  - {{name: default, policy: {{name: {policy}}}}}",
    ]
    return "\n".join(lines) + "\n"


async def start_sluice(servers: Sequence[LlamaCppServer], policy: str) -> SluiceProxy:
    app = build_app(load_config_text(config_text(servers, policy)))
    runner, host, port = await start_server(app, "127.0.0.1", 0, shutdown_grace_s=0.5)
    await app[HEALTH].first_round.wait()
    return SluiceProxy(f"http://{host}:{port}", app, runner, dict(zip(BACKEND_NAMES, servers, strict=True)))
