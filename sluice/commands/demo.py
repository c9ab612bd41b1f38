"""``sluice demo``: start a simulated H100 + A100 + L4 fleet and Sluice, replay a minute of a real trace.

Prints how the load was sized, a summary table (TTFT/TPOT p50/p99, goodput at the SLO, shed,
per-backend share) and the path of the HTML report; stops every process it started, also on
Ctrl-C (partial results are written) and on failure. Exit status: 0 done, 1 a process failed to
start, 2 bad input, 130 interrupted. Everything lands in ``--out`` (default ``runs/demo``):
``results.json``, ``requests.jsonl.gz``, ``report.html``, ``sluice.yaml`` and ``logs/``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from core.yaml_source import ConfigError
from loadgen.demo import DEMO_SLO, DemoOptions, DemoRun, default_policy, run_demo
from loadgen.processes import ChildError
from loadgen.report import format_summary
from loadgen.results import SLO
from loadgen.sim.fleet_config import load_fleet
from loadgen.sizing import Sizing, size_workload
from loadgen.stack import ROOT
from loadgen.workloads import WorkloadError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="simulated GPU fleet + Sluice + a real-trace replay, with a summary",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--policy", help="routing policy (default: sluice_predictive if present, else round_robin)"
    )
    parser.add_argument("--duration-s", type=float, default=60.0, help="seconds of replay (default 60)")
    parser.add_argument(
        "--load-frac", type=float, default=0.5, help="offered load / fleet capacity (default 0.5)"
    )
    parser.add_argument("--fleet", type=Path, default=ROOT / "configs" / "fleets" / "demo.yaml")
    parser.add_argument("--workload", default="azure_conv", help="a fixed trace (default azure_conv)")
    parser.add_argument("--start-s", type=float, default=0.0, help="skip this much of the trace")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", help="trace directory (default: $SLUICE_DATA_DIR or shared/data)")
    parser.add_argument("--slo-ttft-ms", type=float, default=DEMO_SLO.ttft_ms)
    parser.add_argument("--slo-tpot-ms", type=float, default=DEMO_SLO.tpot_ms)
    parser.add_argument(
        "--drain-s", type=float, default=30.0, help="longest wait after the last arrival (default 30)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs") / "demo", help="output directory")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None)
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    parser.set_defaults(func=run)


def _error(message: str, code: int) -> int:
    print(f"sluice demo: {message}", file=sys.stderr)
    return code


def _check(args: argparse.Namespace) -> str | None:
    if args.duration_s <= 0:
        return "--duration-s must be > 0"
    if not 0 < args.load_frac <= 2:
        return "--load-frac must be in (0, 2]"
    if args.drain_s < 0:
        return "--drain-s must be >= 0"
    if args.slo_ttft_ms <= 0 or args.slo_tpot_ms <= 0:
        return "SLO bounds must be > 0"
    return None


def _policy(requested: str | None) -> str:
    import policies  # registers every built-in policy

    names = policies.registered()
    if requested is None:
        return default_policy(names)
    if requested not in names:
        raise ValueError(f"unknown policy {requested!r}; known: {', '.join(sorted(names))}")
    return requested


def _options(args: argparse.Namespace) -> DemoOptions:
    fleet = load_fleet(args.fleet)
    workload_options: dict[str, Any] = {"seed": args.seed, "start_s": args.start_s}
    if args.data_dir is not None:
        workload_options["data_dir"] = args.data_dir
    sizing = size_workload(
        args.workload,
        fleet,
        duration_s=args.duration_s,
        load_frac=args.load_frac,
        knob="time",
        options=workload_options,
    )
    return DemoOptions(
        fleet_file=args.fleet,
        fleet=fleet,
        sizing=sizing,
        policy=_policy(args.policy),
        out_dir=args.out,
        slo=SLO(ttft_ms=args.slo_ttft_ms, tpot_ms=args.slo_tpot_ms),
        drain_s=args.drain_s,
        progress=args.progress,
        command=sys.argv,
    )


def run(args: argparse.Namespace) -> int:
    problem = _check(args)
    if problem is not None:
        return _error(problem, 2)
    try:
        options = _options(args)
    except (ConfigError, WorkloadError, ValueError) as exc:
        return _error(str(exc), 2)
    print("\n".join(options.sizing.lines()), flush=True)
    try:
        demo = _run_loop(options)
    except ChildError as exc:
        return _error(f"{exc}\n(logs in {options.out_dir / 'logs'})", 1)
    if demo is None or demo.result is None:
        return _error("interrupted during start-up; every process started was stopped", 130)
    print()
    print(format_summary(demo.result.document))
    print()
    print(_capacity_share(options.sizing))
    cancelled = demo.result.document["summary"]["cancelled"]
    if cancelled and not demo.result.partial:
        print(
            f"{cancelled} requests still running {options.drain_s:g} s after the last arrival were "
            "cancelled; they count as SLO misses"
        )
    print(
        f"\nresults: {demo.paths['results']}\nreport:  {demo.paths['report']}\nlogs:    {demo.paths['logs']}"
    )
    return 130 if demo.result.partial else 0


def _capacity_share(sizing: Sizing) -> str:
    total = sizing.capacity_rps
    parts = ", ".join(f"{c.name} {c.capacity_rps / total:.0%}" for c in sizing.capacities)
    return f"capacity share (what a speed-aware router should approach): {parts}"


def _run_loop(options: DemoOptions) -> DemoRun | None:
    """Run on uvloop; SIGINT/SIGTERM cancel the run (partial results if the replay had started)."""

    async def main() -> DemoRun | None:
        task = asyncio.create_task(run_demo(options, lambda line: print(line, flush=True)))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return None
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    import uvloop

    return uvloop.run(main())
