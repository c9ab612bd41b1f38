"""Launch the routers Sluice is compared with, in front of a running simulated fleet.

Each ``Router`` starts one router process in a ``ChildGroup`` and returns its base URL once it
answers its own readiness probe. Flags follow ``shared/reference/tools.md`` §1-2 (tested there):

* every listener and every Prometheus endpoint on 127.0.0.1 (sglang-router defaults to 0.0.0.0);
* ``--log-level warn``/``warning``: the info level writes two lines per request and costs ~40 %
  more router CPU;
* ``--disable-retries --disable-circuit-breaker`` on both Rust routers: the simulated backends
  inject no failures here, so neither would fire; disabling them keeps the comparison about
  routing and makes a transient error visible instead of being retried differently per router.
  (Sluice keeps its own retry-before-first-byte, which also never fires without failures.)
* vllm-router does not bind until every worker answers ``/health`` and re-checks only every
  ``--worker-startup-check-interval`` (30 s by default; 1 s here): the fleet is started first.
* nginx: round robin over the backends, one worker (so the rotation is exact: each worker
  process keeps its own), keep-alive upstreams, no buffering (streams pass token by token),
  config, pid, logs and temp paths inside a per-run prefix (``nginx -p``), stopped with SIGQUIT
  semantics by PID via the child group (SIGTERM = fast shutdown, fine after the run).

Ports: the Rust routers and nginx need an explicit port, so a free one is picked by binding
127.0.0.1:0 and closing it just before the launch (a small, documented race).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadgen.processes import ChildGroup, wait_http
from loadgen.stack import FleetProcess

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Starter = Callable[[ChildGroup, FleetProcess, Path], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Router:
    name: str  # row label, e.g. "sglang-router cache_aware"
    family: str  # "sglang-router", "vllm-router", "nginx", "sluice"
    policy: str
    start: Starter


def sglang_router(venv: Path, policy: str) -> Router:
    async def start(group: ChildGroup, fleet: FleetProcess, run_dir: Path) -> str:
        workers = list(fleet.urls.values())
        port, metrics_port = free_port(), free_port()
        argv = [
            str(venv / "bin" / "python"), "-m", "sglang_router.launch_router",
            "--host", "127.0.0.1", "--port", str(port),
            "--worker-urls", *workers,
            "--policy", policy,
            "--log-level", "warn",
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
            "--disable-retries", "--disable-circuit-breaker",
        ]  # fmt: skip
        child = await group.spawn("sglang-router", argv)
        url = f"http://127.0.0.1:{port}"
        await wait_http(f"{url}/readiness", START_TIMEOUT_S, child)
        return url

    return Router(f"sglang-router {policy}", "sglang-router", policy, start)


def vllm_router(venv: Path, policy: str) -> Router:
    async def start(group: ChildGroup, fleet: FleetProcess, run_dir: Path) -> str:
        workers = list(fleet.urls.values())
        port, metrics_port = free_port(), free_port()
        argv = [
            str(venv / "bin" / "vllm-router"),
            "--host", "127.0.0.1", "--port", str(port),
            "--worker-urls", *workers,
            "--policy", policy,
            "--log-level", "warning",
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
            "--disable-retries", "--disable-circuit-breaker",
            "--worker-startup-check-interval", "1",
        ]  # fmt: skip
        child = await group.spawn("vllm-router", argv)
        url = f"http://127.0.0.1:{port}"
        await wait_http(f"{url}/readiness", START_TIMEOUT_S, child)
        return url

    return Router(f"vllm-router {policy}", "vllm-router", policy, start)


def nginx_config(prefix: Path, port: int, workers: Sequence[str]) -> str:
    servers = "\n".join(f"    server {w.removeprefix('http://')};" for w in workers)
    temp = "\n".join(
        f"  {kind}_temp_path {prefix}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
{temp}
  upstream sim {{
{servers}
    keepalive 256;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://sim;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
    }}
  }}
}}
"""


def nginx(binary: str = "nginx") -> Router:
    async def start(group: ChildGroup, fleet: FleetProcess, run_dir: Path) -> str:
        workers = list(fleet.urls.values())
        prefix = (run_dir / "nginx").resolve()
        prefix.mkdir(parents=True, exist_ok=True)
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(prefix, port, workers))
        child = await group.spawn("nginx", [binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"])
        url = f"http://127.0.0.1:{port}"
        await wait_http(f"{url}/v1/models", START_TIMEOUT_S, child)  # answered by a backend through nginx
        return url

    return Router("nginx round_robin", "nginx", "round_robin", start)
