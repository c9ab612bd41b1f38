"""Start a simulated fleet and Sluice in front of it, as separate processes on loopback.

``sluice demo``, ``bench/peers.py`` and ``bench/aiperf_crosscheck.py`` share this. Each part runs
in its own process (``python -m sluice sim`` and ``python -m sluice serve``), as a user would run
them, so the proxy's CPU is its own and a crash in one is visible as such. Both bind 127.0.0.1 on
ephemeral ports: the fleet prints its backends' addresses, the proxy logs its bound address
(``--port 0``). Readiness is a condition, never a sleep: the fleet's ``ready`` line and each
backend's ``/health``; the proxy's ``listening`` log line and its ``/ready`` (every model has a
READY backend).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from core.config import load_config_text
from loadgen.processes import Child, ChildGroup, wait_http
from loadgen.results import SLO
from loadgen.sim.fleet_config import Fleet, sluice_config

ROOT = Path(__file__).resolve().parents[1]
_LISTENING = re.compile(r"Sluice listening on (http://[^\s]+)")
START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class FleetProcess:
    child: Child
    backends: tuple[Mapping[str, Any], ...]  # the lines ``sluice sim`` printed, one per backend

    @property
    def urls(self) -> dict[str, str]:
        return {str(b["backend"]): str(b["url"]) for b in self.backends}


def _python_m(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


async def start_fleet(
    group: ChildGroup, fleet_file: Path, *, name: str = "sim", extra_args: Sequence[str] = ()
) -> FleetProcess:
    """``sluice sim --fleet FILE`` in a child; returns once every backend answers ``/health``."""
    backends: list[Mapping[str, Any]] = []

    def collect(line: str) -> bool:
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(item, dict):
            return False
        if "backend" in item:
            backends.append(item)
        return item.get("event") == "ready"

    child = await group.spawn(
        name, _python_m("sluice", "sim", "--fleet", str(fleet_file), *extra_args), cwd=ROOT
    )
    await child.wait_line(collect, START_TIMEOUT_S, "'ready' line")
    for backend in backends:
        await wait_http(f"{backend['url']}/health", START_TIMEOUT_S, child)
    return FleetProcess(child, tuple(backends))


def proxy_config(
    fleet: Fleet,
    urls: Mapping[str, str],
    *,
    policy: str,
    slo: SLO,
    policy_params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Sluice config for ``fleet``: one route with ``policy`` and the run's SLO, ephemeral port.

    Health checks every second (default 5 s) so ``/ready`` turns green within about a second of
    start; a short shutdown grace because the load client has finished before the proxy stops.
    """
    route: dict[str, Any] = {
        "name": "default",
        "policy": {"name": policy, "params": dict(policy_params or {})},
    }
    bounds = {k: v for k, v in slo.to_json().items() if v is not None}
    if bounds:
        route["slo"] = bounds
    base = {
        "listen": {"host": "127.0.0.1", "port": 0, "shutdown_grace_s": 5.0},
        "routes": [route],
        "health": {"interval_s": 1.0},
    }
    return sluice_config(fleet, urls, base)


def write_proxy_config(path: Path, config: Mapping[str, Any]) -> Path:
    """Write ``config`` as YAML after validating it with the one config schema (``ConfigError`` if bad)."""
    text = yaml.safe_dump(dict(config), sort_keys=False)
    load_config_text(text, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


async def start_sluice(group: ChildGroup, config_path: Path, *, name: str = "sluice") -> tuple[Child, str]:
    """``sluice serve --port 0`` in a child; returns it and its base URL once ``/ready`` is 200."""
    argv = _python_m("sluice", "serve", "--config", str(config_path), "--port", "0", "--log-level", "INFO")
    child = await group.spawn(name, argv, cwd=ROOT)
    line = await child.wait_line(
        lambda text: _LISTENING.search(text) is not None, START_TIMEOUT_S, "listening line"
    )
    match = _LISTENING.search(line)
    assert match is not None
    url = match.group(1)
    await wait_http(f"{url}/ready", START_TIMEOUT_S, child)
    return child, url
