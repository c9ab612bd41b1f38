"""Two real llama.cpp servers (xllamacpp) serving a locally built random-weight model.

Session-scoped: the model is built once (~0.5 s) and both servers start
together (~0.3 s) and are stopped by PID at the end. Tests share them, so each
test salts its prompts (no accidental cache hits) and measures counter deltas.
Server logs go to files under the session's temporary directory; a failing
start quotes their tail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from loadgen.llamacpp.gguf_model import build_model
from loadgen.llamacpp.harness import LlamaCppServer, ServerSpec, start_servers
from tests.llamacpp.helpers import CTX_TOKENS, MODEL_ALIAS, SLOTS, busy_slots, poll_until
from tests.llamacpp.proxy import SluiceProxy, start_sluice


@pytest.fixture(scope="session")
def llamacpp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("llamacpp-model") / "tiny.gguf", "tiny")


@pytest.fixture(scope="session")
def llamacpp_servers(
    llamacpp_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[LlamaCppServer]]:
    logs = tmp_path_factory.mktemp("llamacpp-logs")
    specs = [
        ServerSpec(llamacpp_model, logs / f"server-{name}.log", MODEL_ALIAS, SLOTS, CTX_TOKENS, threads=1)
        for name in ("a", "b")
    ]
    servers = start_servers(specs, timeout_s=60.0)
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(autouse=True)
async def _servers_idle_before_each_test(llamacpp_servers: list[LlamaCppServer]) -> None:
    """Each test starts only once both servers are idle, so one test's load never leaks into the next."""
    async with aiohttp.ClientSession() as client:
        for server in llamacpp_servers:
            await poll_until(lambda s=server: busy_slots(client, s.url), lambda n: n == 0, "idle server")


SluiceFactory = Callable[[str], Awaitable[SluiceProxy]]


@pytest.fixture
async def sluice_with(llamacpp_servers: list[LlamaCppServer]) -> AsyncIterator[SluiceFactory]:
    """``await sluice_with(policy)``: Sluice over both servers, routing with ``policy``; stopped after."""
    started: list[SluiceProxy] = []

    async def start(policy: str) -> SluiceProxy:
        proxy = await start_sluice(llamacpp_servers, policy)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.runner.cleanup()


@pytest.fixture
async def sluice(sluice_with: SluiceFactory) -> SluiceProxy:
    """Sluice routing round robin over both servers (``a``, ``b``, ``a``, ...)."""
    return await sluice_with("round_robin")
