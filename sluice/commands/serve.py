"""``sluice serve --config FILE [--host H] [--port P]``: run the proxy until SIGINT/SIGTERM.

The config is validated exactly as ``check-config`` does (exit 2 with file
and line on error). The bound address is logged (useful with ``--port 0``).
On SIGINT/SIGTERM the listener closes, in-flight requests get
``listen.shutdown_grace_s`` to finish, then the process exits 0. Runs on
uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

import uvloop

from core.config import LoadedConfig, load_config
from core.native import STATUS as NATIVE_STATUS
from core.yaml_source import ConfigError
from sluice.heap import settle_after_startup

log = logging.getLogger("sluice.serve")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the proxy")
    parser.add_argument("--config", required=True, help="path to the YAML config")
    parser.add_argument("--host", help="listen address (overrides listen.host)")
    parser.add_argument("--port", type=int, help="listen port, 0 = any free port (overrides listen.port)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Imported here so that other subcommands and `--help` never load the data plane.
    from router.app import build_app

    try:
        loaded = load_config(args.config)
        app = build_app(loaded)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    host = args.host if args.host is not None else loaded.config.listen.host
    port = args.port if args.port is not None else loaded.config.listen.port
    if not 0 <= port <= 65535:
        print(f"--port {port} is not a port number", file=sys.stderr)
        return 2
    uvloop.run(_serve(app, loaded, host, port))
    return 0


async def _serve(app: Any, loaded: LoadedConfig, host: str, port: int) -> None:
    from router.app import start_server

    listen = loaded.config.listen
    runner, bound_host, bound_port = await start_server(
        app, host, port, access_log=listen.access_log, shutdown_grace_s=listen.shutdown_grace_s
    )
    # Start-up objects live for the whole process; request objects die young (sluice/heap.py says why and
    # what it measured).
    settle_after_startup()
    log.info(
        "Sluice listening on http://%s:%d (%d backends, models: %s)",
        bound_host,
        bound_port,
        len(loaded.config.backends),
        ", ".join(loaded.config.models),
    )
    log.info("hot path: %s", NATIVE_STATUS.describe())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: closing the listener, up to %gs for in-flight requests", listen.shutdown_grace_s)
    await runner.cleanup()
    log.info("stopped")
