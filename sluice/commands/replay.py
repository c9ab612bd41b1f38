"""``sluice replay``: send a workload to an OpenAI-compatible URL in real time and report.

Writes ``results.json`` (schema: docs/results-schema.md), ``requests.jsonl.gz``
and ``report.html`` to ``--out`` and prints a summary table. Exit status:
0 done, 2 bad input (workload, options, trace file), 3 target unreachable,
130 interrupted (partial results written and marked partial).
``--dry-run`` generates the workload without sending and prints its shape.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from loadgen.client import ClientOptions, TargetUnreachable
from loadgen.replay import ReplayResult, replay
from loadgen.report import format_summary, write_run
from loadgen.results import SLO
from loadgen.workloads import Workload, WorkloadError
from sluice import workload_args


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="replay a workload against a URL in real time",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", help="base URL of an OpenAI-compatible server or of Sluice")
    parser.add_argument("--out", type=Path, help="directory for results.json, requests.jsonl.gz, report.html")
    workload_args.add_workload_arguments(parser)
    client = parser.add_argument_group("client")
    client.add_argument("--max-concurrency", type=int, default=None, help="cap on requests in flight")
    client.add_argument("--honour-retry-after", action="store_true", help="retry 429/503 after Retry-After")
    client.add_argument("--max-retries", type=int, default=3)
    client.add_argument("--connect-timeout-s", type=float, default=10.0)
    client.add_argument("--read-timeout-s", type=float, default=600.0, help="longest silence inside a stream")
    client.add_argument(
        "--api-key", default=os.environ.get("OPENAI_API_KEY"), help="default: $OPENAI_API_KEY"
    )
    results = parser.add_argument_group("results")
    results.add_argument("--slo-ttft-ms", type=float, default=None)
    results.add_argument("--slo-tpot-ms", type=float, default=None)
    results.add_argument("--slo-e2e-ms", type=float, default=None)
    results.add_argument(
        "--warmup-s", type=float, default=0.0, help="leave requests scheduled before this out"
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="progress bar on stderr"
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="default when not a tty"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="generate the workload, print its shape, send nothing"
    )
    parser.set_defaults(func=run)


def _error(message: str, code: int) -> int:
    print(f"sluice replay: {message}", file=sys.stderr)
    return code


def _check_args(args: argparse.Namespace) -> str | None:
    if args.dry_run:
        return None
    if not args.url:
        return "--url is required (or use --dry-run)"
    if not args.url.startswith(("http://", "https://")):
        return f"--url {args.url!r} must start with http:// or https://"
    if args.out is None:
        return "--out DIR is required"
    if args.max_concurrency is not None and args.max_concurrency < 1:
        return "--max-concurrency must be >= 1"
    for name in ("slo_ttft_ms", "slo_tpot_ms", "slo_e2e_ms"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            return f"--{name.replace('_', '-')} must be > 0"
    if args.warmup_s < 0:
        return "--warmup-s must be >= 0"
    return None


def run(args: argparse.Namespace) -> int:
    problem = _check_args(args)
    if problem is not None:
        return _error(problem, 2)
    try:
        workload = workload_args.build_from_args(args)
        if args.dry_run:
            print(workload_args.describe_shape(workload))
            return 0
    except WorkloadError as exc:
        return _error(str(exc), 2)
    options = ClientOptions(
        base_url=args.url,
        max_concurrency=args.max_concurrency,
        honour_retry_after=args.honour_retry_after,
        max_retries=args.max_retries,
        connect_timeout_s=args.connect_timeout_s,
        read_timeout_s=args.read_timeout_s,
        api_key=args.api_key,
    )
    slo = SLO(args.slo_ttft_ms, args.slo_tpot_ms, args.slo_e2e_ms)
    try:
        result = _run_loop(workload, options, slo, args)
    except TargetUnreachable as exc:
        return _error(str(exc), 3)
    if result is None:
        return _error("interrupted before the first request; nothing written", 130)
    paths = write_run(args.out, result.document, result.records)
    print(format_summary(result.document))
    print(f"\nresults: {paths['results']}\nreport:  {paths['report']}")
    if result.partial_reason == "interrupted":
        return 130
    if result.partial_reason is not None:
        return _error(f"stopped early, partial results written: {result.partial_reason}", 2)
    return 0


def _run_loop(
    workload: Workload, options: ClientOptions, slo: SLO, args: argparse.Namespace
) -> ReplayResult | None:
    """Run the replay on uvloop; Ctrl-C cancels it (partial results), None if cancelled before it started."""

    async def main() -> ReplayResult | None:
        task = asyncio.create_task(
            replay(
                workload, options, slo=slo, warmup_s=args.warmup_s, command=sys.argv, progress=args.progress
            )
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return None
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    import uvloop

    return uvloop.run(main())
