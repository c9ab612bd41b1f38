"""``sluice sim --fleet FILE``: run a simulated GPU fleet in real time until interrupted.

Prints one JSON line per backend as soon as all listen (``{"backend", "url", "port", "profile",
"gpu", "models"}``), then ``{"event": "ready", ...}``; a script can read the lines to find
ephemeral ports. ``--write-config PATH`` writes a Sluice config pointing a proxy at the fleet.
``--output-lengths FILE`` supplies true output lengths by request id, for requests that reach a
backend without ``x-sim-output-tokens`` (behind a router that drops custom headers).
SIGINT/SIGTERM stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import uvloop
import yaml

from core.yaml_source import ConfigError
from loadgen.sim.fleet_config import Fleet, load_fleet
from loadgen.sim.runner import SimFleet


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("sim", help="run simulated GPU backends (vLLM-like) in real time")
    parser.add_argument("--fleet", required=True, help="fleet file (see configs/fleets/)")
    parser.add_argument("--write-config", metavar="PATH", help="write a Sluice config for this fleet")
    parser.add_argument("--proxy-port", type=int, default=8080, help="listen port in the written config")
    parser.add_argument("--admin-port", type=int, help="also serve the fleet admin API on this port")
    parser.add_argument(
        "--coalesce-ms", type=float, help="override stream_coalesce_ms for every backend (0 = per token)"
    )
    parser.add_argument(
        "--output-lengths",
        metavar="FILE",
        help="JSON object {request id: output tokens}, used when a request lacks x-sim-output-tokens "
        "(routers that drop custom headers forward X-Request-ID)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fleet = load_fleet(args.fleet)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.coalesce_ms is not None:
        if args.coalesce_ms < 0:
            print("--coalesce-ms must be >= 0", file=sys.stderr)
            return 2
        specs = tuple(replace(b, stream_coalesce_ms=args.coalesce_ms) for b in fleet.backends)
        fleet = replace(fleet, backends=specs)
    output_lengths: dict[str, int] | None = None
    if args.output_lengths:
        try:
            output_lengths = load_output_lengths(Path(args.output_lengths))
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 2
    try:
        uvloop.run(_serve(fleet, args, output_lengths))
    except OSError as exc:
        print(f"cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


def load_output_lengths(path: Path) -> dict[str, int]:
    """``{request id: tokens}`` from a JSON file; ``ValueError`` naming the file on any problem."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read output lengths: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{request id: output tokens}}")
    for key, value in data.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{path}: {key!r}: output tokens must be a non-negative integer, got {value!r}")
    return data


async def _serve(fleet: Fleet, args: argparse.Namespace, output_lengths: dict[str, int] | None) -> None:
    sim = SimFleet(fleet, output_lengths)
    await sim.start(admin_port=args.admin_port)
    try:
        for line in sim.addresses():
            print(orjson.dumps(line).decode(), flush=True)
        if args.write_config:
            text = yaml.safe_dump(sim.sluice_config(args.proxy_port), sort_keys=False)
            header = f"# written by sluice sim --fleet {args.fleet}\n"
            await asyncio.to_thread(Path(args.write_config).write_text, header + text)
        ready: dict[str, Any] = {"event": "ready", "backends": len(sim.backends)}
        if sim.admin_port is not None:
            ready["admin_url"] = f"http://{fleet.config.host}:{sim.admin_port}"
        if args.write_config:
            ready["config"] = args.write_config
        print(orjson.dumps(ready).decode(), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await sim.stop()
